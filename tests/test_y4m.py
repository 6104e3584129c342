"""The Y4M frame protocol: what ffmpeg writes is read exactly, what we write ffmpeg reads."""

import io
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from srtools import y4m
from srtools.errors import InputError

from conftest import make_y4m


@pytest.mark.parametrize("pix_fmt,colorspace", [("yuv420p", "420jpeg"), ("yuv422p", "422"),
                                                 ("yuv444p", "444"), ("gray", "mono")])
def test_reads_what_ffmpeg_writes(tmp_path, pix_fmt, colorspace):
    raw = tmp_path / "ref.raw"
    cmd = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=66x38:rate=30000/1001", "-frames:v", "3",
           "-pix_fmt", pix_fmt]
    subprocess.run(cmd + ["-f", "rawvideo", str(raw)], check=True)
    stream = subprocess.run(cmd + ["-strict", "-1", "-f", "yuv4mpegpipe", "-"], check=True, capture_output=True).stdout
    reader = y4m.Reader(io.BytesIO(stream))
    assert (reader.header.width, reader.header.height) == (66, 38)
    assert reader.header.fps == Fraction(30000, 1001)
    assert reader.header.colorspace == colorspace
    frames = list(reader)
    assert len(frames) == 3
    flat = np.concatenate([p.reshape(-1) for f in frames for p in f.planes])
    assert flat.tobytes() == raw.read_bytes()


def test_round_trip_is_byte_exact(tmp_path):
    source = make_y4m(tmp_path / "in.y4m", size="64x36", seconds=0.2).read_bytes()
    reader = y4m.Reader(io.BytesIO(source))
    out = io.BytesIO()
    writer = y4m.Writer(out, reader.header)
    for frame in reader:
        writer.write(frame)
    # ffmpeg's header carries extension parameters; they pass through untouched.
    assert out.getvalue() == source


def test_ffmpeg_reads_what_we_write(tmp_path):
    header = y4m.Header(48, 32, Fraction(25), "444")
    path = tmp_path / "ours.y4m"
    with open(path, "wb") as f:
        writer = y4m.Writer(f, header)
        for value in (10, 200):
            writer.write(y4m.Frame([np.full(s, value, np.uint8) for s in header.plane_shapes]))
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                            "stream=width,height,pix_fmt,nb_read_frames", "-of", "csv=p=0", str(path)],
                           check=True, capture_output=True, text=True).stdout.strip()
    assert probe == "48,32,yuv444p,2"


def test_odd_sizes_round_chroma_up():
    assert y4m.Header(5, 3).plane_shapes == [(3, 5), (2, 3), (2, 3)]
    assert y4m.Header(5, 3, colorspace="422").plane_shapes == [(3, 5), (3, 3), (3, 3)]


@pytest.mark.parametrize("data,message", [
    (b"", "empty input"),
    (b"hello world\n", "not a YUV4MPEG2 stream"),
    (b"YUV4MPEG2 W10\n", "lacks W or H"),
    (b"YUV4MPEG2 W10 H10 Fx\n", "malformed"),
    (b"YUV4MPEG2 W10 H10 F0:1\n", "frame rate F0:1 is not a positive fraction"),
    (b"YUV4MPEG2 W10 H10 F-25:1\n", "frame rate F-25:1 is not a positive fraction"),
    (b"YUV4MPEG2 W10 H10 F25:0\n", "frame rate F25:0 is not a positive fraction"),
    (b"YUV4MPEG2 W16 H16 C420p10\n", "unsupported pixel format"),
    (b"YUV4MPEG2 W4 H4 C444\nFRAME\n" + bytes(20), "truncated frame 0"),
    (b"YUV4MPEG2 W4 H4 C444\nFRAME\n" + bytes(48) + b"FRAMX\n", "expected FRAME"),
])
def test_bad_streams_raise_input_error(data, message):
    with pytest.raises(InputError, match=message):
        list(y4m.Reader(io.BytesIO(data)))


def test_frame_parameters_pass_through():
    data = b"YUV4MPEG2 W2 H2 Cmono\nFRAME Ixyz\n" + bytes(4)
    frame = y4m.Reader(io.BytesIO(data)).read()
    out = io.BytesIO()
    y4m.Writer(out, y4m.Header(2, 2, colorspace="mono")).write(frame)
    assert out.getvalue().endswith(b"FRAME Ixyz\n" + bytes(4))


def test_concatenated_streams_are_read_one_after_another(tmp_path):
    first = make_y4m(tmp_path / "a.y4m", size="64x36", seconds=0.12).read_bytes()
    second = make_y4m(tmp_path / "b.y4m", size="32x18", rate=30, seconds=0.1).read_bytes()
    readers, raw = [], []
    for reader in y4m.streams(io.BytesIO(first + second)):
        readers.append(reader)
        raw.append(reader.header_line + b"".join(iter(reader.read_raw, None)))
    assert [(r.header.width, r.frames_read) for r in readers] == [(64, 3), (32, 3)]
    assert raw == [first, second]  # frames as they stand: FRAME lines and planes, nothing lost or added
    assert list(y4m.streams(io.BytesIO(b""), allow_empty=True)) == []
    # Frames left unread are skipped; a plain reader still refuses a second header.
    assert [r.header.width for r in y4m.streams(io.BytesIO(first + second))] == [64, 32]
    with pytest.raises(InputError, match="frame 3: expected FRAME marker"):
        list(y4m.Reader(io.BytesIO(first + second)))


def test_frame_size_limit_counts_what_a_stage_writes():
    header = y4m.Header(1920, 1080)
    y4m.check_frame_size(header, y4m.MAX_PIXELS, "in")  # 1080p in
    y4m.check_frame_size(header, y4m.MAX_PIXELS, "in", scale=2)  # 4K out: the default limit exactly
    with pytest.raises(InputError, match=r"in: 1920x1080 frames \(x3: 5760x3240\) are over the limit of 8294400"):
        y4m.check_frame_size(header, y4m.MAX_PIXELS, "in", scale=3)
    with pytest.raises(InputError, match="--max-pixels raises it"):
        y4m.check_frame_size(y4m.Header(100, 100), 9999, "in")
