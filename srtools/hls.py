"""Live HLS from Y4M: the last stage of the live chain (sr-hls), an ABR ladder of two renditions.

Frames are read on a thread and written, as they come, into an ffmpeg whose hls muxer encodes
them (libx264) into MPEG-TS segments and a rolling media playlist, the *SR rendition*
(``sr.m3u8``); the same ffmpeg encodes the audio, from a separate source, into a rendition of its
own (``audio.m3u8``). Timestamps are the frame index over the frame rate: every srtools stage
passes the same frames in the same order, so frame n is ingest time n / fps however long the SR
stages took. A second ffmpeg copies the stream as the server received it, the low-res video, into
the *LR rendition* (``lr.m3u8``), without re-encoding: a keyframe of the push side at every
segment boundary (sr-push puts one there) cuts it into segments that start with the SR
rendition's, so that the two are aligned segment by segment and a player can switch between them.
Both start at 0 with the first frame. The master playlist (``index.m3u8``, :mod:`srtools.ladder`)
lists the two video renditions, each with the one audio rendition, with their measured bandwidth,
resolution and codecs: a standard ABR ladder whose small step is free, and which a comparison
player reads. One-variant master playlists (``index-sr.m3u8``, ``index-lr.m3u8``) let a player
that cannot pin a variant (native HLS) play one of them with the audio.

One ffmpeg runs per input stream (one Y4M header). A new stream (a re-opened FIFO, or a new header
line in the middle of the input) ends the running ffmpeg and starts another that appends to the
playlists (``hls_flags append_list``): numbering continues and the first new segment carries
EXT-X-DISCONTINUITY, since its timestamps restart at 0 and its size or frame rate may differ. The
low-res copy runs likewise once per stream of its own source (a FIFO opened again by each new
writer). A restarted sr-hls (``--continue``) joins its output the same way. ffmpeg writes no
EXT-X-DISCONTINUITY-SEQUENCE: once a discontinuity leaves the window, a player that joined before it
and one that joined after count discontinuities differently (hls.js re-aligns them by media
sequence number; the segments and media sequence stay right for every player).

The output directory holds a marker file (:data:`MARKER`: format, stream id) that tells an sr-hls
output from any other directory, and lets a run refuse to mix its stream into an earlier one unless
asked to. Segment names carry the stream id and the rendition, so a new stream (``--fresh``) never
reuses a name a player or cache may hold (segments are served as immutable).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import fcntl
import json
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
from typing import Callable, Iterator

from . import degrade, ffmpeg, modelfile, prometheus, y4m
from .errors import FFmpegError, InputError, ModelError, SrError, UsageError
from .fsutil import read_json_document, write_atomic, write_json_atomic
from .httpserve import IMMUTABLE, ReadOnlyHandler
from .ladder import AUDIO, LR, MASTER, SR, VARIANT_MASTERS, Ladder, media_playlist
from .procutil import enlarge_pipe
from .spool import Spool

log = logging.getLogger("srtools.hls")

PLAYLIST = MASTER
RENDITIONS = (SR, LR, AUDIO)
PLAYLISTS = (MASTER, *VARIANT_MASTERS.values(), *map(media_playlist, RENDITIONS))
MARKER = ".sr-hls.json"
MARKER_FORMAT = "sr-hls/1"
SEGMENT_NAME = re.compile(r"([0-9a-f]{8})-(sr|lr|audio)-(\d+)\.ts")
# After the video ends, ffmpeg may still be muxing audio up to that point; past this it is told to stop.
FINISH_GRACE_S = 2.0
# The audio waits, buffered, while its video is in the SR stages: ffmpeg's queue for the audio input
# (packets: about 90 s of AAC at 48 kHz) and the pipe buffer of an audio FIFO (about 60 s at 128 kb/s).
AUDIO_QUEUE_PACKETS = 4096
AUDIO_PIPE_BYTES = 1 << 20
# At a stream's first frame, how long a live audio FIFO may stay without a byte before the stream
# counts as one without audio (the audio comes before the frames, which wait in the SR stages).
AUDIO_WAIT_S = 2.0
# The model the player runs in the viewer's browser (srtools/web/websr.js): described at /model.json,
# its file served from the spool at /models/NAME, where NAME is the spool's own versioned file name.
PLAYER_MODEL_DOC = "model.json"
PLAYER_MODEL_FORMAT = "sr-hls-model/1"
PLAYER_ARCH = "fedsr"
PLAYER_MODEL_NAME = re.compile(r"models/(fedsr-x\d+-\d{6}\.safetensors)")
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
        lr: what ffmpeg reads the low-res video from (file, FIFO, URL), or None for no LR rendition.
        lr_format: ffmpeg's name of its container (None: detected; naming it lets a FIFO start at
            its first packet).
        lr_encode: encode the low-res video (keyframes at the segment boundaries, ``crf``) instead
            of copying it, for a source whose keyframes are elsewhere.
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
    lr: str | None = None
    lr_format: str | None = None
    lr_encode: bool = False

    @property
    def window_s(self) -> float:
        """How long a segment stays listed: a player may fetch it that long after it is written."""
        return self.segment * (self.list_size + 1) if self.list_size else math.inf


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
            playlist = self.media_playlist(SR)
            written = playlist.stat().st_mtime if playlist.exists() else marker.stat().st_mtime
            self.close()
            raise UsageError(f"{path}: holds an earlier sr-hls stream (last written {_age(time.time() - written)} "
                             f"ago): --continue appends to it, --fresh replaces it")
        if mode == "fresh":
            for name in os.listdir(self.path):
                if name in PLAYLISTS or SEGMENT_NAME.fullmatch(name) or name.endswith(".tmp"):
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
        """The master playlist."""
        return self.path / PLAYLIST

    def media_playlist(self, rendition: str) -> Path:
        return self.path / media_playlist(rendition)

    def listed(self, rendition: str = SR) -> list[str]:
        """The segment names the rendition's playlist lists (none without a playlist)."""
        try:
            text = self.media_playlist(rendition).read_text()
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line and not line.startswith("#")]

    def next_start(self, rendition: str, window_s: float) -> tuple[bool, int]:
        """Before the rendition's ffmpeg starts: sweep its leftovers, and say whether it appends to
        earlier segments (with a discontinuity) and from which number.

        Leftovers are its temporary files (none of its ffmpegs is running; the other renditions'
        may be) and its segments the playlist no longer lists that are older than ``window_s`` (a
        player may still be fetching a younger one).
        """
        listed = set(self.listed(rendition))
        playlist = self.media_playlist(rendition)
        numbers = []
        now = time.time()
        for entry in os.scandir(self.path):
            name = entry.name.removesuffix(".tmp")
            match = SEGMENT_NAME.fullmatch(name)
            if not (name == playlist.name or (match and match.group(2) == rendition)):
                continue
            if match and name == entry.name:
                numbers.append(int(match.group(3)))
            if entry.name.endswith(".tmp") or (match and entry.name not in listed
                                               and now - entry.stat().st_mtime > window_s):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
        if playlist.exists():
            return True, 0  # ffmpeg reads the numbering from the playlist
        return bool(numbers), max(numbers, default=-1) + 1

    def end_playlists(self) -> None:
        """Mark the media playlists complete (EXT-X-ENDLIST): players stop at their end."""
        for rendition in RENDITIONS:
            playlist = self.media_playlist(rendition)
            try:
                text = playlist.read_text()
            except FileNotFoundError:
                continue
            if "#EXT-X-ENDLIST" not in text:
                ended = text.rstrip("\n") + "\n#EXT-X-ENDLIST\n"
                write_atomic(playlist, lambda tmp, ended=ended: Path(tmp).write_text(ended))


def hls_muxer_args(out: OutputDir, rendition: str, enc: Encoding, append: bool, start_number: int) -> list[str]:
    """ffmpeg's hls muxer writing ``rendition``'s segments and media playlist into ``out``."""
    flags = "delete_segments+independent_segments+temp_file+omit_endlist" + ("+append_list" if append else "")
    # Timestamps as they come, 0 at the first frame in every rendition: by default ffmpeg shifts an output
    # by its earliest timestamp (the AAC encoder's priming, a B-frame delay), each output its own way.
    return ["-f", "hls", "-avoid_negative_ts", "disabled", "-hls_ts_options", "avoid_negative_ts=disabled",
            "-hls_time", f"{enc.segment:g}", "-hls_list_size", str(enc.list_size),
            "-hls_flags", flags, "-start_number", str(start_number),
            "-hls_segment_filename", str(out.path / f"{out.stream}-{rendition}-%06d.ts"),
            str(out.media_playlist(rendition))]


def ffmpeg_args(enc: Encoding, out: OutputDir, fps: Fraction, starts: dict[str, tuple[bool, int]],
                audio_fd: int | None = None) -> list[str]:
    """ffmpeg arguments: Y4M on stdin to the H.264 SR rendition in ``out``, and ``enc.audio`` (read from
    ``audio_fd`` when given: its FIFO held open, :func:`hold_fifo`) to the AAC audio rendition; ``starts``
    has (append, start number) of each (see :meth:`OutputDir.next_start`)."""
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
    args += hls_muxer_args(out, SR, enc, *starts[SR])
    if enc.audio:
        # The audio starts at 0 like the video: silence before a positive delay, cut before a negative
        # one; gaps in the source's timestamps are filled with silence. It ends where its source ends.
        # (One hls muxer for both, with -var_stream_map, would end the audio with the video, but ffmpeg
        # 5.1 writes the audio's last segment without its tables there.)
        args += ["-map", "1:a:0", "-af", "aresample=async=1:first_pts=0", "-ac", "2", "-c:a", "aac",
                 "-b:a", enc.audio_bitrate, *hls_muxer_args(out, AUDIO, enc, *starts[AUDIO])]
    return args


def lr_args(enc: Encoding, out: OutputDir, append: bool, start_number: int) -> list[str]:
    """ffmpeg arguments: the low-res video of ``enc.lr`` to the LR rendition in ``out``, copied (or, with
    ``enc.lr_encode``, encoded with a keyframe at every segment boundary)."""
    args = list(ffmpeg.GLOBAL_ARGS)
    if enc.lr_format:
        args += ["-probesize", "32", "-analyzeduration", "0", "-f", enc.lr_format]  # the header says it all
    args += ["-i", enc.lr, "-map", "0:v:0"]
    if enc.lr_encode:
        args += ["-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2", "-pix_fmt", "yuv420p",
                 *degrade.live_x264_args(enc.crf, enc.bitrate or "100M", enc.preset, enc.segment)]
    else:
        args += ["-c:v", "copy"]
    return [*args, *hls_muxer_args(out, LR, enc, append, start_number)]


class Encoder:
    """One ffmpeg turning one Y4M stream into segments of ``out`` (and the audio into its rendition).

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
        starts = {rendition: out.next_start(rendition, enc.window_s) for rendition in (SR, AUDIO)}
        self.audio = enc.audio
        self.write_timeout = write_timeout
        audio_fd = audio_fd if enc.audio else None
        self.process = ffmpeg.Process(ffmpeg_args(enc, out, header.fps, starts, audio_fd),
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

        ffmpeg still muxes the audio up to the end of its source; one that goes on (a live FIFO
        whose writer stays) gets it stopped after :data:`FINISH_GRACE_S`.
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
    """Open the FIFO ``path`` (the audio, or the low-res video) without reading it, for as long as
    sr-hls runs; its descriptor, or None for anything else. sr-hls's ffmpegs read the audio from
    this descriptor (``pipe:N``), never opening the FIFO.

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
class LowResCopier(threading.Thread):
    """Publishes the LR rendition on a thread: one ffmpeg (:func:`lr_args`) per stream of ``enc.lr``,
    until its end, or for a FIFO, for each new writer, until :meth:`stop`.

    The low-res video runs ahead of the SR rendition (it skips the SR stages), so it has its own
    ffmpeg: it never waits for the frames, and an LR source that fails costs the LR rendition alone
    (logged), never the SR one. For a FIFO, the next ffmpeg starts once the next writer has written
    (an ffmpeg waiting in open() for a writer would not stop when told to).
    """

    def __init__(self, out: OutputDir, enc: Encoding):
        super().__init__(name="lr-copier", daemon=True)
        self.out, self.enc = out, enc
        self.reopen = is_fifo(enc.lr)
        self.streams = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: ffmpeg.Process | None = None  # while one runs

    def run(self) -> None:
        watch = os.open(self.enc.lr, os.O_RDONLY | os.O_NONBLOCK) if self.reopen else None  # never read
        try:
            while not self._stopping.is_set():
                if watch is not None and not self._wait_for_data(watch):
                    return
                append, start = self.out.next_start(LR, self.enc.window_s)
                with self._lock:
                    if self._stopping.is_set():
                        return
                    process = self._process = ffmpeg.Process(lr_args(self.enc, self.out, append, start),
                                                             stdin=subprocess.DEVNULL)
                code = process.wait(check=False)  # for a FIFO: until its writer leaves
                with self._lock:
                    self._process = None
                if code == 0:
                    self.streams += 1
                elif not self._stopping.is_set():
                    log.warning("low-res rendition: ffmpeg exited with status %d: %s", code, process.last_error)
                    self._stopping.wait(1)  # a broken stream: try again on what comes next
                if watch is None:
                    return
        finally:
            if watch is not None:
                os.close(watch)

    def _wait_for_data(self, fd: int) -> bool:
        """Wait until the FIFO holds data (a writer came); False when told to stop first."""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not self._stopping.is_set():
            events = poller.poll(200)
            if any(mask & select.POLLIN for _, mask in events):
                return True
            if events:  # POLLHUP: the last writer left and no new one has come
                self._stopping.wait(0.2)
        return False

    def stop(self, grace: float = FINISH_GRACE_S) -> None:
        """End the rendition: the stream under way gets ``grace`` seconds to end on its own (its
        writer gone), then ffmpeg is told to finish it."""
        with self._lock:
            running = self._process is not None
        if running:
            self.join(grace)
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None:
            process.terminate(5)  # writes its last segment and the playlist
        self.join()


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
    """What sr-hls has encoded so far (read by its server while it runs)."""

    streams: int = 0
    frames: int = 0
    seconds: float = 0.0  # of video, summed over streams
    recent: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=512))

    def frame_written(self, fps: float) -> None:
        self.frames += 1
        self.seconds += 1 / fps
        self.recent.append(time.monotonic())

    def fps(self, window_s: float = 5.0) -> float | None:
        """Frames encoded per second over the last ``window_s`` seconds (None before two frames)."""
        now = time.monotonic()
        times = [t for t in list(self.recent) if now - t <= window_s]
        if len(times) < 2:
            return None
        return (len(times) - 1) / max(times[-1] - times[0], now - times[0], 1e-6)


def publish(source: str, out: OutputDir, enc: Encoding, stall_timeout: float | None, reopen_wait: float,
            endlist: bool = False, max_pixels: int = y4m.MAX_PIXELS, audio_fd: int | None = None,
            summary: Summary | None = None, ladder: Ladder | None = None) -> Summary:
    """Encode the Y4M streams of ``source`` into ``out`` until the input ends; meanwhile copy the low-res
    video (``enc.lr``) into its rendition and keep the master playlist current.

    Args:
        source: '-' for stdin, a file, or a named FIFO (re-opened for the next stream when
            ``reopen_wait`` > 0).
        out: the output directory.
        enc: encoding settings.
        stall_timeout: seconds a stream may go without a frame (None: no limit).
        reopen_wait: seconds to wait for a FIFO's next writer before the input counts as ended.
        endlist: at the end, mark the playlists complete (EXT-X-ENDLIST).
        max_pixels: the largest frame accepted.
        audio_fd: ``enc.audio``'s FIFO held open (:func:`hold_fifo`): a stream whose audio writer
            left it without a byte is encoded without audio (:func:`fifo_has_audio`).
        summary: counters to fill as frames are encoded (a server reads them meanwhile).
        ladder: the master playlist's measurements (a server reads them meanwhile).

    Raises:
        InputError: not Y4M, truncated, stalled, or frames over ``max_pixels``.
        FFmpegError: ffmpeg failed.
    """
    summary = summary if summary is not None else Summary()
    ladder = ladder if ladder is not None else Ladder(out.path)
    reader = StreamReader(source, reopen=is_fifo(source) and reopen_wait > 0, stall_timeout=stall_timeout,
                          max_pixels=max_pixels)
    reader.start()
    copier = LowResCopier(out, enc) if enc.lr else None
    if copier is not None:
        copier.start()
    updates = ladder.keep_current()
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
                    ladder.expect(SR, *(name for name, source in ((LR, enc.lr), (AUDIO, stream_enc.audio)) if source))
                    encoder = Encoder(out, stream_enc, stream.header_line, stream.header, stall_timeout, audio_fd)
                encoder.write(frame)
                summary.frame_written(float(stream.header.fps))
            if encoder is not None:
                encoder.finish()
                encoder = None
    finally:
        if encoder is not None:  # an error or an interrupt: still close the last segment
            encoder.finish(check=False)
        if copier is not None:
            copier.stop()
        updates.stop()  # with a last update: the master lists what the renditions hold now
    if endlist:
        out.end_playlists()
    if copier is not None:
        log.info("low-res rendition: %d stream(s) copied", copier.streams)
    return summary


class PlayerModel:
    """The model the player page runs in the viewer's browser: the spool's current F-EDSR model at the
    stream's scale (the SR rendition's height over the LR rendition's), as /model.json describes it.

    The file is never opened beyond its metadata (safetensors' header, parsed, not executed): the page
    validates the weights itself, so that a file damaged on its way to the viewer is refused there too.

    Args:
        spool: the server's model spool, or None.
        renditions: the ladder's figures (:meth:`srtools.ladder.Ladder.as_dict`), for the scale.
    """

    def __init__(self, spool: str | os.PathLike | None, renditions: Callable[[], dict]):
        self.spool = Spool(spool) if spool else None
        self.renditions = renditions
        self._hparams: dict[Path, dict | None] = {}  # by model file: its metadata's hparams, None if unreadable

    def scale(self) -> int | None:
        """The SR rendition's size over the LR rendition's, an integer (the SR rendition is cropped to
        even sizes: a pixel off is allowed); None while either is unknown or for any other ratio."""
        renditions = self.renditions()
        sizes = [(renditions.get(name) or {}).get("resolution") for name in (SR, LR)]
        if not all(sizes):
            return None
        (sr_w, sr_h), (lr_w, lr_h) = sizes
        scale = round(sr_h / lr_h) if lr_h else 0
        if scale < 2 or abs(sr_h - scale * lr_h) > 1 or abs(sr_w - scale * lr_w) > 1:
            return None
        return scale

    def document(self) -> dict:
        """/model.json: format, arch, scale (null while unknown) and model: null, or the current model's
        version, url (relative to the page), bytes, published and gain_db (as the spool's pointer says)
        and hparams (null where the file's metadata cannot be read); with reason when model is null."""
        scale = self.scale()
        doc: dict = {"format": PLAYER_MODEL_FORMAT, "arch": PLAYER_ARCH, "scale": scale, "model": None}
        if self.spool is None:
            return {**doc, "reason": "no --spool"}
        if scale is None:
            return {**doc, "reason": "the stream's scale is not known yet (it needs the SR and LR renditions)"}
        try:
            pointer = self.spool.current(PLAYER_ARCH, scale)
        except SrError as exc:
            return {**doc, "reason": str(exc)}
        if pointer is None or not PLAYER_MODEL_NAME.fullmatch(f"models/{pointer.path.name}"):
            return {**doc, "reason": f"no {PLAYER_ARCH} model at x{scale} in the spool yet"}
        try:
            size = pointer.path.stat().st_size
        except OSError:
            return {**doc, "reason": f"{pointer.path.name} has gone from the spool"}
        if pointer.path not in self._hparams:
            try:
                self._hparams[pointer.path] = modelfile.read_info(pointer.path).hparams
            except ModelError:
                self._hparams[pointer.path] = None
        model = {"version": pointer.version, "url": f"models/{pointer.path.name}", "bytes": size,
                 "hparams": self._hparams[pointer.path], "published": pointer.raw.get("published"),
                 "gain_db": pointer.raw.get("gain_db")}
        return {**doc, "model": model}

    def file(self, name: str) -> Path | None:
        """The spool's file for the URL path ``name`` (models/fedsr-xS-VVVVVV.safetensors), or None."""
        match = PLAYER_MODEL_NAME.fullmatch(name)
        return self.spool.models_dir / match[1] if match and self.spool is not None else None


class HlsHandler(ReadOnlyHandler):
    """Serves ``server.root``'s playlists and segments (nothing else in it), the player page, the
    live statistics of ``server.live`` (:class:`srtools.livestats.LiveStats`) at /stats.json and
    /metrics, and the model of ``server.player_model`` (:class:`PlayerModel`) at /model.json and
    /models/NAME (immutable: a version's file never changes)."""

    server_version = "sr-hls"

    def respond(self, head_only: bool) -> None:
        path = self.url_path()
        if self.send_web(path, head_only):
            return
        name = path.lstrip("/")
        if name in PLAYLISTS or SEGMENT_NAME.fullmatch(name):
            self.send_file_under(self.server.root, head_only)
        elif name == "stats.json":
            self.send_bytes(json.dumps(self.server.live.document()).encode(), "application/json", head_only)
        elif name == "metrics":
            self.send_bytes(self.server.live.metrics().encode(), prometheus.CONTENT_TYPE, head_only)
        elif name == PLAYER_MODEL_DOC:
            self.send_bytes(json.dumps(self.server.player_model.document()).encode(), "application/json", head_only)
        elif (model := self.server.player_model.file(name)) is not None:
            self.send_file(model, head_only, cache=IMMUTABLE)
        else:
            self.send_bytes(b"not found\n", "text/plain", head_only, status=404)
