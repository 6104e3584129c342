"""Live HLS from Y4M: the last stage of the live chain (sr-hls).

Frames are read on a thread and written, as they come, into an ffmpeg whose hls muxer encodes
them (libx264, and AAC from a separate audio source) into MPEG-TS segments and a rolling media
playlist. Timestamps are the frame index over the frame rate: every srtools stage passes the same
frames in the same order, so frame n is ingest time n / fps however long the SR stages took.

One ffmpeg runs per input stream (one Y4M header). A new stream (a re-opened FIFO, or a new header
line in the middle of the input) ends the running ffmpeg and starts another that appends to the
playlist (``hls_flags append_list``): numbering continues and the first new segment carries
EXT-X-DISCONTINUITY, since its timestamps restart at 0 and its size or frame rate may differ. A
restarted sr-hls (``--continue``) joins its output the same way. ffmpeg writes no
EXT-X-DISCONTINUITY-SEQUENCE: once a discontinuity leaves the window, a player that joined before it
and one that joined after count discontinuities differently (hls.js re-aligns them by media
sequence number; the segments and media sequence stay right for every player).

The output directory holds a marker file (:data:`MARKER`: format, stream id) that tells an sr-hls
output from any other directory, and lets a run refuse to mix its stream into an earlier one unless
asked to. Segment names carry the stream id, so a new stream (``--fresh``) never reuses a name a
player or cache may hold (segments are served as immutable).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import logging
import math
import os
import queue
import re
import secrets
import select
import stat
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator

from . import ffmpeg, y4m
from .errors import FFmpegError, InputError, SrError, UsageError
from .fsutil import read_json_document, write_atomic, write_json_atomic
from .httpserve import ReadOnlyHandler
from .procutil import enlarge_pipe

log = logging.getLogger("srtools.hls")

PLAYLIST = "index.m3u8"
MARKER = ".sr-hls.json"
MARKER_FORMAT = "sr-hls/1"
SEGMENT_NAME = re.compile(r"([0-9a-f]{8})-(\d+)\.ts")
# After the video ends, ffmpeg may still be muxing audio up to that point; past this it is told to stop.
FINISH_GRACE_S = 2.0
# The audio waits, buffered, while its video is in the SR stages: ffmpeg's queue for the audio input
# (packets: about 90 s of AAC at 48 kHz) and the pipe buffer of an audio FIFO (about 60 s at 128 kb/s).
AUDIO_QUEUE_PACKETS = 4096
AUDIO_PIPE_BYTES = 1 << 20
# At a stream's first frame, how long a live audio FIFO may stay without a byte before the stream
# counts as one without audio (the audio comes before the frames, which wait in the SR stages).
AUDIO_WAIT_S = 2.0
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclasses.dataclass(frozen=True)
class Encoding:
    """How sr-hls encodes and segments.

    Attributes:
        segment: target segment duration, seconds (a keyframe starts every segment).
        list_size: segments in the playlist (0: all of them, nothing deleted).
        crf: x264 constant rate factor, used when ``bitrate`` is None.
        bitrate: video bitrate for ffmpeg (e.g. "2M"), capped with a one-second buffer.
        preset: x264 preset (tune zerolatency is always on).
        audio: what ffmpeg reads the audio from (file, FIFO, URL), or None for video only.
        audio_delay: seconds added to the audio timestamps (negative: earlier).
        audio_bitrate: AAC bitrate.
        audio_format: ffmpeg's name of the audio's container (None: detected). Naming it spares the
            detection, which reads 2 KB first: seconds of a quiet live source.
    """

    segment: float = 2.0
    list_size: int = 6
    crf: int = 23
    bitrate: str | None = None
    preset: str = "veryfast"
    audio: str | None = None
    audio_delay: float = 0.0
    audio_bitrate: str = "128k"
    audio_format: str | None = None


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


class OutputDir:
    """An sr-hls output directory, locked (flock on the directory) for this process.

    Args:
        path: the directory; created when missing.
        mode: "new" refuses a directory holding an earlier sr-hls output, "continue" appends to it,
            "fresh" deletes its playlist and segments and starts a new stream.

    Raises:
        UsageError: a non-empty directory that sr-hls did not make, or an earlier output with mode "new".
        InputError: a damaged marker file.
        SrError: the directory cannot be created, or another sr-hls is writing it.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "new"):
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise SrError(f"{path}: cannot use as output directory: {exc.strerror}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise SrError(f"{path}: another sr-hls is writing this directory") from None
        self.path = self.path.resolve()
        marker = self.path / MARKER
        if not marker.exists():
            if any(self.path.iterdir()):
                self.close()
                raise UsageError(f"{path}: not empty and not an sr-hls output (no {MARKER}); refusing to write into it")
            self._new_stream()
            return
        try:
            info = read_json_document(marker, MARKER_FORMAT, "sr-hls marker", "sr-hls")
        except InputError:
            self.close()
            raise
        if mode == "new":
            playlist = self.path / PLAYLIST
            written = playlist.stat().st_mtime if playlist.exists() else marker.stat().st_mtime
            self.close()
            raise UsageError(f"{path}: holds an earlier sr-hls stream (last written {_age(time.time() - written)} "
                             f"ago): --continue appends to it, --fresh replaces it")
        if mode == "fresh":
            for name in os.listdir(self.path):
                if name == PLAYLIST or SEGMENT_NAME.fullmatch(name) or name.endswith(".tmp"):
                    (self.path / name).unlink()
            self._new_stream()
        else:
            self.stream = str(info.get("stream", ""))
            if not re.fullmatch(r"[0-9a-f]{8}", self.stream):
                self.close()
                raise InputError(f"{marker}: bad stream id {self.stream!r}")
            log.info("continuing stream %s in %s", self.stream, self.path)

    def _new_stream(self) -> None:
        self.stream = secrets.token_hex(4)
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        write_json_atomic(self.path / MARKER, {"format": MARKER_FORMAT, "stream": self.stream, "created": created})
        log.info("new stream %s in %s", self.stream, self.path)

    def close(self) -> None:
        os.close(self._fd)

    @property
    def playlist(self) -> Path:
        return self.path / PLAYLIST

    def listed(self) -> list[str]:
        """The segment names the playlist lists (none without a playlist)."""
        try:
            text = self.playlist.read_text()
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line and not line.startswith("#")]

    def next_start(self, window_s: float) -> tuple[bool, int]:
        """Before an ffmpeg starts: sweep leftovers, and say whether it appends to earlier segments
        (with a discontinuity) and from which number.

        Leftovers are temporary files (no ffmpeg is running) and segments the playlist no longer
        lists that are older than ``window_s`` (a player may still be fetching a younger one).
        """
        listed = set(self.listed())
        numbers = []
        now = time.time()
        for entry in os.scandir(self.path):
            match = SEGMENT_NAME.fullmatch(entry.name)
            if match:
                numbers.append(int(match.group(2)))
            if entry.name.endswith(".tmp") or (match and entry.name not in listed
                                               and now - entry.stat().st_mtime > window_s):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
        if self.playlist.exists():
            return True, 0  # ffmpeg reads the numbering from the playlist
        return bool(numbers), max(numbers, default=-1) + 1

    def end_playlist(self) -> None:
        """Mark the playlist complete (EXT-X-ENDLIST): players stop at its end."""
        try:
            text = self.playlist.read_text()
        except FileNotFoundError:
            return
        if "#EXT-X-ENDLIST" not in text:
            write_atomic(self.playlist, lambda tmp: Path(tmp).write_text(text.rstrip("\n") + "\n#EXT-X-ENDLIST\n"))


def ffmpeg_args(enc: Encoding, out: OutputDir, fps: Fraction, append: bool, start_number: int,
                audio_fd: int | None = None) -> list[str]:
    """ffmpeg arguments: Y4M on stdin (and ``enc.audio``, read from ``audio_fd`` when given: its FIFO
    held open, :func:`hold_fifo`) to H.264/AAC HLS in ``out``."""
    args = [*ffmpeg.GLOBAL_ARGS, "-f", "yuv4mpegpipe", "-i", "pipe:0"]
    if enc.audio:
        args += ["-thread_queue_size", str(AUDIO_QUEUE_PACKETS)]
        if audio_fd is not None or is_fifo(enc.audio):
            # Probe a live source from its first packets: the default (5 s of it) waits for audio the
            # ingest only sends once its video, blocked behind this very probe, has moved on.
            args += ["-probesize", "32", "-analyzeduration", "0"]
        if enc.audio_format:
            args += ["-f", enc.audio_format]
        if enc.audio_delay:
            args += ["-itsoffset", f"{enc.audio_delay:.6f}"]
        args += ["-i", enc.audio if audio_fd is None else f"pipe:{audio_fd}"]
    gop = max(1, round(enc.segment * fps))
    args += ["-map", "0:v:0", "-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2", "-pix_fmt", "yuv420p",
             "-c:v", "libx264", "-preset", enc.preset, "-tune", "zerolatency", "-g", str(gop),
             "-force_key_frames", f"expr:gte(t,n_forced*{enc.segment:g})"]
    if enc.bitrate:
        args += ["-b:v", enc.bitrate, "-maxrate", enc.bitrate, "-bufsize", enc.bitrate]
    else:
        args += ["-crf", str(enc.crf)]
    if enc.audio:
        # The audio starts at 0 like the video: silence before a positive delay, cut before a negative
        # one; gaps in the source's timestamps are filled with silence.
        args += ["-map", "1:a:0", "-af", "aresample=async=1:first_pts=0,apad", "-shortest", "-ac", "2",
                 "-c:a", "aac", "-b:a", enc.audio_bitrate]
    flags = "delete_segments+independent_segments+temp_file+omit_endlist" + ("+append_list" if append else "")
    args += ["-f", "hls", "-hls_time", f"{enc.segment:g}", "-hls_list_size", str(enc.list_size),
             "-hls_flags", flags, "-start_number", str(start_number),
             "-hls_segment_filename", str(out.path / f"{out.stream}-%06d.ts"), str(out.playlist)]
    return args


class Encoder:
    """One ffmpeg turning one Y4M stream into segments of ``out``.

    Args:
        out: the output directory.
        enc: encoding settings.
        header_line: the stream's Y4M header line, as read.
        header: the same, parsed.
        write_timeout: seconds ffmpeg may take to accept a frame (None: no limit).
        audio_fd: ``enc.audio``'s FIFO held open (:func:`hold_fifo`), which ffmpeg reads.
    """

    def __init__(self, out: OutputDir, enc: Encoding, header_line: bytes, header: y4m.Header,
                 write_timeout: float | None, audio_fd: int | None = None):
        window = enc.segment * (enc.list_size + 1) if enc.list_size else math.inf
        append, start = out.next_start(window)
        self.audio = enc.audio
        self.write_timeout = write_timeout
        audio_fd = audio_fd if enc.audio else None
        self.process = ffmpeg.Process(ffmpeg_args(enc, out, header.fps, append, start, audio_fd),
                                      stdin=subprocess.PIPE, pass_fds=() if audio_fd is None else (audio_fd,))
        assert self.process.stdin is not None  # asked for
        self._fd = self.process.stdin.fileno()
        os.set_blocking(self._fd, False)  # writes wait in select(), with a timeout
        self.write(header_line)

    def write(self, data: bytes) -> None:
        """Write ``data`` to ffmpeg.

        Raises:
            FFmpegError: ffmpeg failed, or accepted nothing for ``write_timeout`` seconds.
        """
        view = memoryview(data)
        while view:
            if not select.select([], [self._fd], [], self.write_timeout)[1]:
                hint = f" (is {self.audio} being written?)" if self.audio else ""
                raise FFmpegError(f"ffmpeg accepted no frame for {self.write_timeout:g} s{hint}")
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                self.process.wait()  # raises with ffmpeg's last words
                raise FFmpegError("ffmpeg stopped reading frames") from None

    def finish(self, check: bool = True) -> None:
        """End the stream: ffmpeg writes its last segment and the playlist, then exits.

        ffmpeg still muxes the audio up to the end of the video; an audio source that goes on
        (a live FIFO whose writer stays) gets it stopped after :data:`FINISH_GRACE_S`.
        """
        try:
            code = self.process.wait(check=False, timeout=FINISH_GRACE_S)
            stopped = False
        except subprocess.TimeoutExpired:
            self.process.interrupt()
            stopped = True
            try:
                code = self.process.wait(check=False, timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = -9
        if check and code != 0 and not (stopped and code == 255):
            raise FFmpegError(f"ffmpeg exited with status {code}: {self.process.last_error}")


def is_fifo(path: str) -> bool:
    try:
        return path != "-" and stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def hold_fifo(path: str) -> int | None:
    """Open the audio FIFO ``path`` for as long as sr-hls runs; its descriptor, or None for anything
    else. sr-hls's ffmpegs read the audio from this descriptor (``pipe:N``), never opening the FIFO.

    A writer's open() then returns at once (an ingest that opens all its outputs before writing
    frames would otherwise wait for the audio reader, which waits for frames: a deadlock); a writer
    never sees a broken pipe between two of our ffmpegs; an ffmpeg never waits in open() for a
    writer (the ingest may have written all its audio and gone by the time the stream's frames come
    out of the SR stages: the audio is still in the pipe); and the pipe buffer is raised to
    :data:`AUDIO_PIPE_BYTES` to hold the audio while the video is in the SR stages.
    """
    if not is_fifo(path):
        return None
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # without a writer yet: no waiting
    os.set_blocking(fd, True)  # ffmpeg's reads wait for the audio
    if not enlarge_pipe(fd, AUDIO_PIPE_BYTES):
        log.warning("%s: cannot raise the pipe buffer to %d bytes (above /proc/sys/fs/pipe-max-size?)", path,
                    AUDIO_PIPE_BYTES)
    return fd


def fifo_has_audio(fd: int, wait: float = AUDIO_WAIT_S) -> bool:
    """Whether the audio FIFO held open as ``fd`` (:func:`hold_fifo`) carries a stream's audio, asked
    at the stream's first frame: yes once a byte is there, no when its writer has gone without
    writing one (sr-live's ingest opens and closes it for a publisher without audio) or when none
    has come within ``wait`` seconds (a live source's audio comes before its frames, which wait in
    the SR stages)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    events = poller.poll(wait * 1000)
    return bool(events) and bool(events[0][1] & select.POLLIN)


@dataclasses.dataclass(frozen=True)
class Stream:
    """The start of one Y4M stream of the input."""

    header_line: bytes  # as read, for ffmpeg
    header: y4m.Header


class StreamReader(threading.Thread):
    """Reads the Y4M streams of ``path`` on a thread, one :class:`y4m.Reader` each, and hands them over
    through a short queue: the thread runs at most ``depth`` items ahead, and the consumer's waits can
    time out (a blocking read cannot).

    The consumer iterates :meth:`streams` and, for each stream, :meth:`frames`. The queue holds, for
    each stream, its :class:`Stream`, its frames (bytearrays: the FRAME line and the planes) and None;
    at the end of an opening of the input, None in place of the next Stream; and an exception, raised
    again by the consumer, where reading fails. A FIFO is opened again after each end when ``reopen``;
    the thread then waits in open() for the next writer.

    Args:
        path: '-' for stdin, a file, or a named FIFO.
        reopen: open the input again after each end.
        stall_timeout: seconds a stream may go without a frame once its header has come (None: no limit).
        max_pixels: the largest frame accepted (a stream of larger ones is an error).
        depth: items the queue holds.
    """

    def __init__(self, path: str, reopen: bool, stall_timeout: float | None, max_pixels: int = y4m.MAX_PIXELS,
                 depth: int = 8):
        super().__init__(name="y4m-reader", daemon=True)
        self.path, self.reopen, self.stall_timeout, self.max_pixels = path, reopen, stall_timeout, max_pixels
        self.input_name = y4m.input_name(path)
        self._items: queue.Queue[Stream | bytearray | Exception | None] = queue.Queue(maxsize=depth)

    def run(self) -> None:
        try:
            while True:
                with y4m.open_file(self.path) as file:
                    for reader in y4m.streams(file, self.input_name, allow_empty=self.reopen):
                        y4m.check_frame_size(reader.header, self.max_pixels, self.input_name)
                        self._items.put(Stream(reader.header_line, reader.header))
                        while (frame := reader.read_raw()) is not None:
                            self._items.put(frame)
                        self._items.put(None)
                self._items.put(None)
                if not self.reopen:
                    return
        except Exception as exc:  # raised again by the consumer
            self._items.put(exc)

    def _get(self, timeout: float | None) -> Stream | bytearray | None:
        item = self._items.get(timeout=timeout)
        if isinstance(item, Exception):
            raise item
        return item

    def streams(self, reopen_wait: float) -> Iterator[Stream]:
        """The input's streams as they start, until it ends: at its end, or for a FIFO opened again
        when no stream comes within ``reopen_wait`` seconds of an end. The first stream may take any
        time to come. Read each stream's frames with :meth:`frames` before asking for the next.

        Raises:
            InputError: not Y4M, or truncated.
        """
        wait: float | None = None
        count = 0
        while True:
            try:
                item = self._get(wait)
            except queue.Empty:
                log.info("no new stream within %g s: the input has ended", reopen_wait)
                return
            if isinstance(item, Stream):
                count += 1
                yield item
                continue
            if not self.reopen:  # None: this opening of the input has ended
                return
            log.info("end of stream %d; waiting up to %g s for the next on %s", count, reopen_wait, self.path)
            wait = reopen_wait

    def frames(self) -> Iterator[bytearray]:
        """The frames of the stream :meth:`streams` yielded last, each its FRAME line and planes.

        Raises:
            InputError: not Y4M, truncated, or no frame for ``stall_timeout`` seconds.
        """
        while True:
            try:
                item = self._get(self.stall_timeout)
            except queue.Empty:
                raise InputError(f"{self.input_name}: no frame for {self.stall_timeout:g} s (input stalled)") from None
            if not isinstance(item, bytearray):  # None: the stream has ended
                return
            yield item


@dataclasses.dataclass
class Summary:
    streams: int = 0
    frames: int = 0
    seconds: float = 0.0  # of video, summed over streams


def publish(source: str, out: OutputDir, enc: Encoding, stall_timeout: float | None, reopen_wait: float,
            endlist: bool = False, max_pixels: int = y4m.MAX_PIXELS, audio_fd: int | None = None) -> Summary:
    """Encode the Y4M streams of ``source`` into ``out`` until the input ends.

    Args:
        source: '-' for stdin, a file, or a named FIFO (re-opened for the next stream when
            ``reopen_wait`` > 0).
        out: the output directory.
        enc: encoding settings.
        stall_timeout: seconds a stream may go without a frame (None: no limit).
        reopen_wait: seconds to wait for a FIFO's next writer before the input counts as ended.
        endlist: at the end, mark the playlist complete (EXT-X-ENDLIST).
        max_pixels: the largest frame accepted.
        audio_fd: ``enc.audio``'s FIFO held open (:func:`hold_fifo`): a stream whose audio writer
            left it without a byte is encoded without audio (:func:`fifo_has_audio`).

    Raises:
        InputError: not Y4M, truncated, stalled, or frames over ``max_pixels``.
        FFmpegError: ffmpeg failed.
    """
    reader = StreamReader(source, reopen=is_fifo(source) and reopen_wait > 0, stall_timeout=stall_timeout,
                          max_pixels=max_pixels)
    reader.start()
    summary = Summary()
    encoder: Encoder | None = None
    try:
        for stream in reader.streams(reopen_wait):
            summary.streams += 1
            log.info("stream %d: %dx%d at %g fps%s", summary.streams, stream.header.width, stream.header.height,
                     float(stream.header.fps), " (a discontinuity in the playlist)" if summary.streams > 1 else "")
            for frame in reader.frames():
                if encoder is None:  # started at the first frame: a stream without frames makes no segment
                    stream_enc = enc
                    if audio_fd is not None and not fifo_has_audio(audio_fd):
                        log.warning("stream %d: no audio on %s: video only", summary.streams, enc.audio)
                        stream_enc = dataclasses.replace(enc, audio=None, audio_delay=0.0)
                    encoder = Encoder(out, stream_enc, stream.header_line, stream.header, stall_timeout, audio_fd)
                encoder.write(frame)
                summary.frames += 1
                summary.seconds += 1 / float(stream.header.fps)
            if encoder is not None:
                encoder.finish()
                encoder = None
    finally:
        if encoder is not None:  # an error or an interrupt: still close the last segment
            encoder.finish(check=False)
    if endlist:
        out.end_playlist()
    return summary


class HlsHandler(ReadOnlyHandler):
    """Serves ``server.root``'s playlist and segments (nothing else in it), and the player page."""

    server_version = "sr-hls"

    def respond(self, head_only: bool) -> None:
        path = self.url_path()
        if self.send_player(path, PLAYLIST, "sr-hls", head_only):
            return
        name = path.lstrip("/")
        if name == PLAYLIST or SEGMENT_NAME.fullmatch(name):
            self.send_file_under(self.server.root, head_only)
        else:
            self.send_bytes(b"not found\n", "text/plain", head_only, status=404)
