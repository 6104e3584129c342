"""srtools-y4m - the YUV4MPEG2 frame protocol spoken by every srtools filter

DESCRIPTION
srtools commands pass raw video between each other, and to and from ffmpeg, as YUV4MPEG2 (Y4M),
exactly as `ffmpeg -f yuv4mpegpipe` writes it. A filter reads Y4M from standard input (or a file or
named FIFO given as a path) and writes Y4M to standard output (or -o PATH). Commands refuse to write
frames to a terminal.

STREAM LAYOUT
A stream is one header line followed by frames. The header is the ASCII magic YUV4MPEG2 and
space-separated parameters, ended by a newline:

    YUV4MPEG2 W640 H360 F30000:1001 Ip A1:1 C420jpeg XYSCSS=420JPEG

- W, H: frame width and height in pixels (required).
- F: frame rate as a fraction, both terms positive (default 25:1 when absent).
- I: interlacing (p, t, b or m); passed through untouched.
- A: pixel aspect ratio; passed through untouched.
- C: colour space and chroma subsampling (default 420jpeg). Read and written: 420jpeg, 420mpeg2,
  420paldv, 420 (4:2:0), 422 (4:2:2), 444 (4:4:4) and mono, all 8-bit. High bit depth (for
  example 420p10) is rejected as an unsupported pixel format.
- X: extension parameters (such as XYSCSS or XCOLORRANGE); passed through untouched.

Each frame is the line FRAME (optionally followed by frame parameters, passed through) and then
the planes Y, U, V at full resolution for Y and ceil(W/sx) x ceil(H/sy) for U and V, each row
tightly packed, 8 bits per sample. A stream ends at end of file between two frames; end of file
inside a frame is a truncated stream and an error.

LIMITS
W and H are at most 16384. The stages that process frames (sr-serve, sr-tcsr, sr-hls) also refuse,
with exit status 3 and before allocating anything for it, a stream whose frames (in, or out of
sr-serve) have more than 8294400 pixels (3840x2160) unless their --max-pixels raises the limit:
memory grows with the frame, to about 0.9 GB for sr-serve's network at 1920x1080 and 2.7 GB at
3840x2160, and a header alone costs its sender nothing.

CONVENTIONS
Samples are studio (limited) range BT.601 unless the X parameters say otherwise; srtools never
changes range or matrix, it only resamples planes. A filter that changes the frame size (sr-serve)
rewrites W and H and keeps every other header parameter. Metrics (PSNR, SSIM) are measured on the
Y plane unless stated; see the conventions in srtools.metrics.

EXAMPLES
Upscale a recording with the current model and encode it:

    ffmpeg -i clip.mp4 -f yuv4mpegpipe - | sr-serve --spool S | ffmpeg -f yuv4mpegpipe -i - out.mp4
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
import sys
from fractions import Fraction
from typing import BinaryIO, Iterator

import numpy as np

from .errors import InputError, UsageError

MAGIC = b"YUV4MPEG2"
FRAME_TAG = b"FRAME"
_MAX_LINE = 4096
# The largest frame, in pixels, the processing stages accept unless told otherwise (--max-pixels).
MAX_PIXELS = 3840 * 2160
# Chroma subsampling (horizontal, vertical) per C tag; None = no chroma planes.
SUBSAMPLING: dict[str, tuple[int, int] | None] = {
    "420jpeg": (2, 2),
    "420mpeg2": (2, 2),
    "420paldv": (2, 2),
    "420": (2, 2),
    "422": (2, 1),
    "444": (1, 1),
    "mono": None,
}


@dataclasses.dataclass(frozen=True)
class Header:
    """A parsed Y4M stream header."""

    width: int
    height: int
    fps: Fraction = Fraction(25)
    colorspace: str = "420jpeg"
    interlace: str = "p"
    aspect: str | None = None
    extensions: tuple[str, ...] = ()

    @property
    def plane_shapes(self) -> list[tuple[int, int]]:
        """(height, width) of each plane: Y, then U and V unless mono."""
        shapes = [(self.height, self.width)]
        sub = SUBSAMPLING[self.colorspace]
        if sub is not None:
            sx, sy = sub
            chroma = (-(-self.height // sy), -(-self.width // sx))
            shapes += [chroma, chroma]
        return shapes

    @property
    def frame_bytes(self) -> int:
        return sum(h * w for h, w in self.plane_shapes)

    def resized(self, width: int, height: int) -> Header:
        return dataclasses.replace(self, width=width, height=height)

    def to_bytes(self) -> bytes:
        fields = [f"W{self.width}", f"H{self.height}", f"F{self.fps.numerator}:{self.fps.denominator}",
                  f"I{self.interlace}"]
        if self.aspect is not None:
            fields.append(f"A{self.aspect}")
        fields.append(f"C{self.colorspace}")
        fields += [f"X{x}" for x in self.extensions]
        return MAGIC + b" " + " ".join(fields).encode("ascii") + b"\n"

    @classmethod
    def parse(cls, line: bytes, name: str = "-") -> Header:
        """Parse a header line (with or without its newline).

        Raises:
            InputError: not Y4M, missing W/H, or an unsupported colour space.
        """
        if not line.startswith(MAGIC):
            raise InputError(f"{name}: not a YUV4MPEG2 stream (no {MAGIC.decode()} header)")
        try:
            tokens = line[len(MAGIC):].decode("ascii").split()
        except UnicodeDecodeError:
            raise InputError(f"{name}: YUV4MPEG2 header is not ASCII") from None
        values: dict[str, object] = {}
        extensions = []
        try:
            for token in tokens:
                key, value = token[0], token[1:]
                if key == "W":
                    values["width"] = int(value)
                elif key == "H":
                    values["height"] = int(value)
                elif key == "F":
                    num, den = value.split(":")
                    if int(num) <= 0 or int(den) <= 0:
                        raise InputError(f"{name}: frame rate F{value} is not a positive fraction")
                    values["fps"] = Fraction(int(num), int(den))
                elif key == "C":
                    values["colorspace"] = value
                elif key == "I":
                    values["interlace"] = value
                elif key == "A":
                    values["aspect"] = value
                elif key == "X":
                    extensions.append(value)
        except (ValueError, ZeroDivisionError):
            raise InputError(f"{name}: malformed YUV4MPEG2 header parameter {token!r}") from None
        if "width" not in values or "height" not in values:
            raise InputError(f"{name}: YUV4MPEG2 header lacks W or H")
        if not (0 < values["width"] <= 16384 and 0 < values["height"] <= 16384):  # type: ignore[operator]
            raise InputError(f"{name}: implausible frame size {values['width']}x{values['height']}")
        colorspace = values.get("colorspace", "420jpeg")
        if colorspace not in SUBSAMPLING:
            raise InputError(f"{name}: unsupported pixel format C{colorspace} (8-bit 420/422/444/mono only)")
        return cls(extensions=tuple(extensions), **values)  # type: ignore[arg-type]


def check_frame_size(header: Header, max_pixels: int, name: str, scale: int = 1) -> None:
    """Refuse a stream whose frames, times ``scale`` in each direction (what a stage that upscales
    writes), have more than ``max_pixels`` pixels: before a stage allocates anything for them.

    Raises:
        InputError: frames over the limit.
    """
    width, height = header.width * scale, header.height * scale
    if width * height > max_pixels:
        made = f" (x{scale}: {width}x{height})" if scale != 1 else ""
        raise InputError(f"{name}: {header.width}x{header.height} frames{made} are over the limit of {max_pixels} "
                         "pixels a frame (--max-pixels raises it)")


@dataclasses.dataclass
class Frame:
    """One picture: 8-bit planes Y[, U, V] of shapes :attr:`Header.plane_shapes`."""

    planes: list[np.ndarray]
    params: bytes = b""  # frame parameters after FRAME, passed through

    @property
    def y(self) -> np.ndarray:
        return self.planes[0]


class Reader:
    """Reads frames from a binary stream holding Y4M.

    Args:
        stream: a binary file object positioned at the header, buffered or raw.
        name: how errors refer to the stream.
        header_line: the header line, when the caller has read it from ``stream`` already.
        concatenated: a header line where a FRAME line is expected ends this stream and starts the
            next (``cat a.y4m b.y4m``; see :func:`streams`); otherwise it is an error.

    Attributes:
        header_line: the header line as read, newline included.
        next_header_line: the header line that ended this stream (``concatenated`` only), else None.
    """

    def __init__(self, stream: BinaryIO, name: str = "-", *, header_line: bytes | None = None,
                 concatenated: bool = False):
        self.stream = stream
        self.name = name
        self.concatenated = concatenated
        line = stream.readline(_MAX_LINE) if header_line is None else header_line
        if not line:
            raise InputError(f"{name}: empty input (expected a YUV4MPEG2 stream)")
        if not line.endswith(b"\n"):
            raise InputError(f"{name}: not a YUV4MPEG2 stream (header line missing or too long)")
        self.header = Header.parse(line, name)
        self.header_line = line
        self.next_header_line: bytes | None = None
        self.frames_read = 0
        self.at_end = False  # true once read() has seen the end of the file

    def read(self) -> Frame | None:
        """Return the next frame, or None at the end of the stream.

        Raises:
            InputError: a malformed FRAME line or a truncated frame.
        """
        data = self.read_raw()
        if data is None:
            return None
        planes_start = len(data) - self.header.frame_bytes
        return Frame(_split_planes(data, planes_start, self.header),
                     params=bytes(data[len(FRAME_TAG):planes_start - 1]))

    def read_raw(self) -> bytearray | None:
        """Return the next frame as it stands in the stream: its FRAME line (parameters and newline
        included) and then its planes, for a caller that passes frames on unparsed; None at the end
        of the stream, and on every call after it (nothing more is read).

        Raises:
            InputError: a malformed FRAME line or a truncated frame.
        """
        if self.at_end or self.next_header_line is not None:
            return None
        line = self.stream.readline(_MAX_LINE)
        if not line:
            self.at_end = True
            return None
        if self.concatenated and line.startswith(MAGIC):
            self.next_header_line = line
            return None
        if not line.startswith(FRAME_TAG) or not line.endswith(b"\n"):
            raise InputError(f"{self.name}: frame {self.frames_read}: expected FRAME marker, got {line[:16]!r}")
        data = bytearray(len(line) + self.header.frame_bytes)
        data[:len(line)] = line
        got = _read_fully(self.stream, memoryview(data)[len(line):])
        if got != self.header.frame_bytes:
            raise InputError(f"{self.name}: truncated frame {self.frames_read} ({got} of {self.header.frame_bytes} "
                             f"bytes)")
        self.frames_read += 1
        return data

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame


def streams(stream: BinaryIO, name: str = "-", allow_empty: bool = False) -> Iterator[Reader]:
    """A reader for each Y4M stream in ``stream``, one after another: a header line where a FRAME line
    is expected ends a stream and starts the next. Frames a caller leaves unread are skipped when it
    asks for the next stream.

    Args:
        stream: a binary file object positioned at the first header.
        name: how errors refer to the stream.
        allow_empty: an empty ``stream`` holds no stream rather than being an error.

    Raises:
        InputError: as :class:`Reader` does.
    """
    line = stream.readline(_MAX_LINE)
    if not line and allow_empty:
        return
    while True:
        reader = Reader(stream, name, header_line=line, concatenated=True)
        yield reader
        while reader.read_raw() is not None:
            pass
        if reader.next_header_line is None:
            return
        line = reader.next_header_line


class Writer:
    """Writes a Y4M header and frames to a binary stream."""

    def __init__(self, stream: BinaryIO, header: Header):
        self.stream = stream
        self.header = header
        stream.write(header.to_bytes())

    def write(self, frame: Frame) -> None:
        shapes = self.header.plane_shapes
        if [p.shape for p in frame.planes] != shapes:
            raise ValueError(f"frame planes {[p.shape for p in frame.planes]} do not match header {shapes}")
        self.stream.write(FRAME_TAG + frame.params + b"\n")
        for plane in frame.planes:
            self.stream.write(np.ascontiguousarray(plane, dtype=np.uint8).data)

    def flush(self) -> None:
        self.stream.flush()


def _read_fully(stream: BinaryIO, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _split_planes(buffer: bytearray, start: int, header: Header) -> list[np.ndarray]:
    """Views of the planes that start at ``buffer[start]``."""
    flat = np.frombuffer(buffer, dtype=np.uint8, offset=start)
    planes, offset = [], 0
    for h, w in header.plane_shapes:
        planes.append(flat[offset:offset + h * w].reshape(h, w))
        offset += h * w
    return planes


@contextlib.contextmanager
def open_input(path: str) -> Iterator[Reader]:
    """A reader over '-' (stdin), a file or a named FIFO holding Y4M; closes what it opened."""
    with open_file(path) as stream:
        yield Reader(stream, input_name(path))


def open_file(path: str) -> BinaryIO:
    """Open '-' (stdin, left open when the file object is closed), a file or a named FIFO to read Y4M from.

    Unbuffered: a reader thread blocked in read() then holds no buffer lock, which closing the stream,
    or interpreter shutdown on sys.stdin, would wait for forever.

    Raises:
        InputError: the path cannot be opened.
    """
    try:
        return open(sys.stdin.fileno() if path == "-" else path, "rb", buffering=0, closefd=path != "-")
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {exc.strerror}") from None


def input_name(path: str) -> str:
    """How errors refer to the input ``path`` ('-': <stdin>)."""
    return "<stdin>" if path == "-" else path


@contextlib.contextmanager
def open_output(path: str) -> Iterator[BinaryIO]:
    """A binary sink: '-' for stdout (refused when it is a terminal), else a file or named FIFO."""
    if path == "-":
        if sys.stdout.isatty():
            raise UsageError("refusing to write binary frames to a terminal; redirect stdout or use -o FILE")
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    try:
        stream = open(path, "wb")
    except OSError as exc:
        raise UsageError(f"{path}: cannot open for writing: {exc.strerror}") from None
    with stream:
        yield stream


def is_y4m_path(path: str) -> bool:
    """True when PATH should be read as Y4M directly: stdin, a FIFO, or a file starting with the magic."""
    if path == "-":
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False
