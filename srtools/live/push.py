"""The broadcaster's push side (sr-push): one decode of the input feeds the low-res encoder and the
sampler of training pairs.

One ffmpeg process decodes INPUT once, crops it to a multiple of twice the scale and splits it::

    INPUT -> crop -+-> [hr] Y4M on a pipe --------------------------------------------------> HR reader -+
                   +-> [lr] area downscale, libx264 (+ AAC) -> tee -> destination                      +-> pairs
                                                                   -> NUT on a pipe -> relay -> ffmpeg -> LR reader -+

The LR frames the sampler sees are the encoded stream decoded again by a second ffmpeg: exactly the
pictures a server gets. On its way to that decoder the stream passes through a relay thread that
counts its bytes: the video's bit rate as sent (ffmpeg's tee reports no size). Frame timing passes
through both branches unchanged and the encoder makes no B-frames, so HR frame i and decoded LR
frame i are the same picture. A few pairs per second go, through a bounded queue and a writer
thread, into the spool's pool (:mod:`srtools.live.pool`): in a paced or live run the readers never
wait for the disk, so the video never stalls, and a pair that finds the queue full is dropped and
counted; an unpaced (batch) run waits for the disk instead. A pair whose write fails is dropped and
counted.

A network destination that refuses or drops the connection is retried with exponential backoff;
a file input resumes where the delivered stream stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import queue
import re
import subprocess
import threading
import time
import urllib.parse
from typing import BinaryIO, Callable

from .. import degrade, ffmpeg, y4m
from ..errors import FFmpegError, InputError
from ..procutil import enlarge_pipe, signals_ignored
from .pool import Pool

log = logging.getLogger("srtools.push")

DEFAULT_PAIR_RATE = 4.0  # pairs per second: a new scene has pairs in the pool within a quarter second
DEFAULT_RUN_RATE = 0.5  # runs of consecutive frames per second (TCSR's training material)
DEFAULT_RUN_FRAMES = 5  # frames per run: three whole windows of a TCSR that looks one frame each way
DEFAULT_RETRIES = 5  # waits of 1, 2, 4, 8 and 16 s: 31 s in all
DEFAULT_BITRATE = degrade.LIVE_BITRATE
DEFAULT_SEGMENT = degrade.LIVE_SEGMENT
AUDIO_BITRATE = "128k"
QUEUE_PAIRS = 8  # pairs waiting for the disk before new ones are dropped
PENDING_FRAMES = 64  # sampled HR frames waiting for their decoded LR frame
RETRY_RESET_S = 30.0  # a connection that lasted this long starts the retry count over
STOP_TIMEOUT_S = 5.0  # how long ffmpeg gets to close its outputs after SIGTERM
_PIPE_BYTES = 1 << 20  # room for a frame or so in each pipe: jitter in the readers never stalls ffmpeg

# Demuxers of capture devices: their frames come in real time already, never paced with -re.
CAPTURE_FORMATS = frozenset({"v4l2", "video4linux2", "alsa", "pulse", "jack", "x11grab", "kmsgrab", "fbdev",
                             "decklink", "avfoundation", "dshow", "gdigrab", "openal"})
# Containers for network destinations, by URL scheme.
SCHEME_FORMATS = {"rtmp": "flv", "rtmps": "flv", "srt": "mpegts", "udp": "mpegts"}
# The errors of a lost or refused connection, as ffmpeg words them.
_NETWORK_ERROR = re.compile(r"Connection refused|Connection reset by peer|Broken pipe|Connection timed out|"
                            r"Network is unreachable|No route to host|Input/output error|End of file")
# The tee's first slave is the destination: this line means the destination failed.
_DESTINATION_FAILED = "Slave muxer #0 failed"


@dataclasses.dataclass(frozen=True)
class PushSettings:
    """What to push where, and how (see sr-push(1) for each field)."""

    source: str
    destination: str
    scale: int
    input_format: str | None = None
    output_format: str | None = None
    pace: bool = True
    fps: float | None = None
    bitrate: str = DEFAULT_BITRATE
    crf: int = degrade.DEFAULT_CRF
    preset: str = degrade.LIVE_PRESET
    segment: float = DEFAULT_SEGMENT
    pair_rate: float = DEFAULT_PAIR_RATE
    run_rate: float = DEFAULT_RUN_RATE
    run_frames: int = DEFAULT_RUN_FRAMES
    retries: int = DEFAULT_RETRIES

    @property
    def listens(self) -> bool:
        """An rtmp:// INPUT is a server address to listen on (OBS publishes to it)."""
        return self.input_format is None and self.source.startswith("rtmp://")

    @property
    def live(self) -> bool:
        return self.listens or self.input_format in CAPTURE_FORMATS

    @property
    def seekable(self) -> bool:
        """A local file: a retry can resume where the delivered stream stopped."""
        return self.input_format is None and os.path.isfile(self.source)

    @property
    def network(self) -> bool:
        return is_url(self.destination)

    @property
    def container(self) -> str | None:
        """The destination's ffmpeg format; None lets ffmpeg tell it from the file name."""
        if self.output_format:
            return self.output_format
        if self.network:
            return SCHEME_FORMATS.get(urllib.parse.urlsplit(self.destination).scheme)
        return None


def is_url(target: str) -> bool:
    return "://" in target and not target.startswith("file:")


def redact(url: str) -> str:
    """``url`` fit for logs: no credentials, no query, and the last path segment (the stream key of
    RTMP services) masked."""
    if not is_url(url):
        return url
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    segments = parts.path.split("/")
    if len([s for s in segments if s]) >= 2:
        segments[-1] = "***"
    return f"{parts.scheme}://{netloc}{'/'.join(segments)}"


def sampled(index: int, fps: float, rate: float) -> bool:
    """Whether frame ``index`` is sampled: the first frame of every 1/``rate`` s of stream time."""
    return index == 0 or math.floor(index * rate / fps) > math.floor((index - 1) * rate / fps)


def input_args(settings: PushSettings, start: float = 0.0) -> list[str]:
    """ffmpeg input options and -i: paced with -re unless asked not to or live already."""
    args = []
    if settings.pace and not settings.live:
        args.append("-re")
    if start:
        args += ["-ss", f"{start:.6f}"]
    if settings.listens:
        args += ["-listen", "1"]
    if settings.input_format:
        args += ["-f", settings.input_format]
    return [*args, "-i", settings.source]


def filter_graph(scale: int, fps: float | None = None) -> str:
    """The one decode split into [hr] (cropped, 4:2:0) and [lr] (area-downscaled), as srtools.degrade does."""
    rate = f"fps={fps}," if fps else ""
    return (f"[0:v]{rate}{degrade.crop_filter(scale)},format=yuv420p,split[hr][v];"
            f"[v]{degrade.shrink_filter(scale)}[lr]")


def encoder_args(settings: PushSettings) -> list[str]:
    """The live x264 settings (:func:`srtools.degrade.live_x264_args`) and AAC audio."""
    return [*degrade.live_x264_args(settings.crf, settings.bitrate, settings.preset, settings.segment),
            # Parameter sets in the stream headers, where FLV, Matroska and MP4 want them.
            "-flags", "+global_header",
            "-c:a", "aac", "-b:a", AUDIO_BITRATE]


def _tee_escape(text: str) -> str:
    return re.sub(r"([\\'|])", r"\\\1", text)


def tee_slaves(settings: PushSettings, lr_fd: int) -> str:
    """The tee muxer's outputs: the destination (its failure stops ffmpeg) and the LR pipe, video only
    (its failure only stops the sampling)."""
    container = settings.container
    destination = "onfail=abort" + (f":f={container}" if container else "")
    return f"[{destination}]{_tee_escape(settings.destination)}|[f=nut:select=v:onfail=ignore]pipe:{lr_fd}"


def push_args(settings: PushSettings, hr_fd: int, lr_fd: int, start: float = 0.0) -> list[str]:
    """The ffmpeg command line (after the binary) that decodes once, writes HR Y4M to ``pipe:hr_fd`` and
    the encoded stream to the destination and to ``pipe:lr_fd``."""
    return [*ffmpeg.GLOBAL_ARGS, "-y", *input_args(settings, start),
            "-filter_complex", filter_graph(settings.scale, settings.fps),
            "-map", "[hr]", "-fps_mode", "passthrough", "-f", "yuv4mpegpipe", f"pipe:{hr_fd}",
            "-map", "[lr]", "-map", "0:a:0?", "-fps_mode", "passthrough", *encoder_args(settings),
            "-f", "tee", tee_slaves(settings, lr_fd)]


def decoder_args() -> list[str]:
    """ffmpeg decoding the NUT stream on stdin to Y4M on stdout, every frame in order. The stream's
    header says all there is to know, so no probing: decoded frames follow the encoder by about
    two frames, not the second of video a default probe buffers."""
    return [*ffmpeg.GLOBAL_ARGS, "-probesize", "32", "-analyzeduration", "0",
            "-f", "nut", "-i", "pipe:0", "-map", "0:v:0", "-fps_mode", "passthrough", "-pix_fmt", "yuv420p",
            "-f", "yuv4mpegpipe", "pipe:1"]


class PairWriter:
    """Adds pairs (and runs of consecutive frames) to the pool on its own thread.

    Args:
        pool: where pairs go.
        wait: whether :meth:`offer` waits for room in the queue (batch runs) rather than drop the pair
            (live runs, where the readers must never stall the video).
        capacity: pairs the queue holds.
    """

    def __init__(self, pool: Pool, wait: bool = False, capacity: int = QUEUE_PAIRS):
        self.pool = pool
        self.wait = wait
        self.offered = self.written = self.dropped = 0
        self.runs_written = self.runs_dropped = 0
        self._queue: queue.Queue = queue.Queue(capacity)
        self._lock = threading.Lock()
        self._last_warning = -math.inf
        self._thread = threading.Thread(target=self._run, name="pool-writer", daemon=True)
        self._thread.start()

    def offer(self, t: float, hr: y4m.Frame, lr: y4m.Frame) -> None:
        with self._lock:
            self.offered += 1
        try:
            self._queue.put((self.pool.add, (t, hr, lr)), block=self.wait)
        except queue.Full:
            self._drop("the pool writer is behind")

    def offer_run(self, t: float, hr: list[y4m.Frame], lr: list[y4m.Frame]) -> None:
        try:
            self._queue.put((self.pool.add_run, (t, hr, lr)), block=self.wait)
        except queue.Full:
            with self._lock:
                self.runs_dropped += 1

    def lose(self, reason: str) -> None:
        """Count a sampled pair that could not be offered."""
        with self._lock:
            self.offered += 1
        self._drop(reason)

    def _drop(self, reason: str) -> None:
        """Count a dropped pair; warn at most every 10 s."""
        with self._lock:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_warning >= 10:
                self._last_warning = now
                log.warning("pair dropped: %s (%d dropped so far)", reason, self.dropped)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            add, args = item
            run = add == self.pool.add_run
            try:
                add(*args)
            except Exception as exc:  # disk full, spool removed...: the stream goes on without pairs; and this
                # thread must live on, or a waiting reader would block for ever
                reason = exc.strerror or exc if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
                if run:
                    with self._lock:
                        self.runs_dropped += 1
                else:
                    self._drop(f"cannot write to {self.pool.dir}: {reason}")
            else:
                with self._lock:
                    if run:
                        self.runs_written += 1
                    else:
                        self.written += 1

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()


class Sampler:
    """Matches HR frame i with decoded LR frame i (each fed in order by its own reader thread) for the
    sampled indices, and offers the pairs, and the runs of consecutive frames, to the writer.

    Args:
        writer: where pairs go.
        rate: pairs per second of stream time.
        offset: the stream index of this attempt's first frame (frames delivered by earlier attempts).
        on_hr_header: also given the HR stream's header when it comes (the pusher logs and keeps it).
        run_rate / run_frames: runs of ``run_frames`` consecutive frames per second of stream time (0: none).
        time_base: stream time of index 0 (a push continues the pool's time, see :meth:`Pool.resume_time`).
    """

    def __init__(self, writer: PairWriter, rate: float, offset: int,
                 on_hr_header: Callable[[y4m.Header], None] | None = None, run_rate: float = 0.0,
                 run_frames: int = DEFAULT_RUN_FRAMES, time_base: float = 0.0):
        self.writer = writer
        self.rate, self.run_rate, self.run_frames = rate, run_rate, run_frames
        self.offset = offset
        self.time_base = time_base
        self.on_hr_header = on_hr_header
        self.fps: float | None = None  # from the HR stream's header, read before its first frame
        self.hr_frames = self.lr_frames = 0
        self._hr: dict[int, y4m.Frame] = {}  # wanted HR frames waiting for their LR frame
        self._lr: dict[int, y4m.Frame] = {}  # LR frames read before their HR frame (a reader was slow)
        self._runs: dict[int, list[tuple[y4m.Frame, y4m.Frame]]] = {}  # run start -> its pairs so far
        self._lock = threading.Lock()

    def hr_header(self, header: y4m.Header) -> None:
        """The HR stream's header, read before its first frame: its frame rate times the pairs."""
        self.fps = float(header.fps)
        if self.on_hr_header is not None:
            self.on_hr_header(header)

    def add_hr(self, frame: y4m.Frame) -> None:
        with self._lock:
            i = self.hr_frames
            self.hr_frames += 1
            lr = self._lr.pop(i, None)
            if not self._wanted(i):
                return
            if lr is not None:
                self._emit(i, frame, lr)
                return
            self._hr[i] = frame
            while len(self._hr) > PENDING_FRAMES:
                oldest = next(iter(self._hr))  # dicts keep insertion order
                del self._hr[oldest]
                if self._pair(oldest):
                    self.writer.lose("the decoded LR frames lag too far behind")

    def add_lr(self, frame: y4m.Frame) -> None:
        with self._lock:
            i = self.lr_frames
            self.lr_frames += 1
            hr = self._hr.pop(i, None)
            if hr is not None:
                self._emit(i, hr, frame)
            elif i >= self.hr_frames and len(self._lr) < PENDING_FRAMES:
                self._lr[i] = frame

    def _pair(self, i: int) -> bool:
        return sampled(self.offset + i, self.fps, self.rate)

    def _run_start(self, i: int) -> int | None:
        """The index of the run frame ``i`` belongs to, or None."""
        if not self.run_rate:
            return None
        for start in range(i, max(i - self.run_frames, -1), -1):
            if sampled(self.offset + start, self.fps, self.run_rate):
                return start
        return None

    def _wanted(self, i: int) -> bool:
        return self._pair(i) or self._run_start(i) is not None

    def _time(self, i: int) -> float:
        return self.time_base + (self.offset + i) / self.fps

    def _emit(self, i: int, hr: y4m.Frame, lr: y4m.Frame) -> None:
        if self._pair(i):
            self.writer.offer(self._time(i), hr, lr)
        for stale in [s for s in self._runs if s + self.run_frames <= i]:  # frames of it never came
            del self._runs[stale]
        start = self._run_start(i)
        if start is None:
            return
        run = self._runs.setdefault(start, [])
        if len(run) != i - start:  # a frame of it went missing (dropped by the pending bound): not consecutive
            self._runs.pop(start)
            return
        run.append((hr, lr))
        if len(run) == self.run_frames:
            self._runs.pop(start)
            self.writer.offer_run(self._time(start), [h for h, _ in run], [low for _, low in run])


def _read_frames(stream: BinaryIO, name: str, on_header: Callable[[y4m.Header], None],
                 on_frame: Callable[[y4m.Frame], None], errors: list[Exception]) -> None:
    """Reader thread: Y4M from ``stream`` to the end; after an error it drains the stream, so that
    ffmpeg never blocks on it."""
    try:
        reader = y4m.Reader(stream, name)
        on_header(reader.header)
        for frame in reader:
            on_frame(frame)
    except (InputError, OSError, ValueError) as exc:
        errors.append(exc)
        with contextlib.suppress(OSError, ValueError):
            while stream.read(1 << 16):
                pass


def _relay(source: BinaryIO, sink: BinaryIO, counted: Callable[[int], None]) -> None:
    """Relay thread: the encoded LR stream from ``source`` to the decoder's stdin ``sink``, to the end,
    each chunk counted; once the decoder is gone, the rest is still read and counted (the pushing
    ffmpeg must never block on it). Closes ``sink``."""
    decoding = True
    with contextlib.suppress(OSError, ValueError):
        while chunk := source.read(1 << 16):
            counted(len(chunk))
            if decoding:
                try:
                    sink.write(chunk)
                    sink.flush()
                except OSError:  # the decoder failed: the pairs stop, the count goes on
                    decoding = False
    with contextlib.suppress(OSError):
        sink.close()


def _ffmpeg_message(lines: list[str]) -> str:
    """ffmpeg's most telling line: the last one that is not a generic epilogue."""
    for line in reversed(lines):
        if not line.startswith(("Error initializing output stream", "Conversion failed")):
            return line
    return "(no message)"


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why a push attempt failed, and whether a retry may help (a lost or refused destination)."""

    message: str
    retryable: bool


def classify_failure(code: int, stderr_tail: list[str], network: bool) -> Failure | None:
    """What the pushing ffmpeg's exit means: None for success; retryable when a network destination
    failed (the tee says so), its reason the network error in ffmpeg's words; else fatal, with
    ffmpeg's most telling line.

    Args:
        code: ffmpeg's exit status.
        stderr_tail: its last stderr lines, oldest first.
        network: whether the destination is a URL (a file destination that fails is never retried).
    """
    if code == 0:
        return None
    if network and any(_DESTINATION_FAILED in line for line in stderr_tail):
        reason = next((m.group(0) for line in stderr_tail if (m := _NETWORK_ERROR.search(line))), "connection failed")
        return Failure(reason, retryable=True)
    return Failure(f"ffmpeg exited with status {code}: {_ffmpeg_message(stderr_tail)}", retryable=False)


class Pusher:
    """Runs the push, retrying a lost connection; see the module docstring.

    Args:
        settings: what to push where.
        pool: where the pairs go.
    """

    def __init__(self, settings: PushSettings, pool: Pool):
        self.settings = settings
        self.writer = PairWriter(pool, wait=not (settings.pace or settings.live))
        self.time_base = pool.resume_time()  # stream time goes on from the pool's newest pair
        self.frames = 0  # frames delivered: the stream index the next attempt starts at
        self.hr_header: y4m.Header | None = None
        self.lr_header: y4m.Header | None = None
        self.attempts = 0
        self.video_bytes = 0  # of the encoded LR stream sent, every attempt
        self.sampler: Sampler | None = None  # this attempt's
        self._started = time.monotonic()
        self._cpu_started = self._cpu()

    def run(self) -> None:
        """Push until the input ends.

        Raises:
            FFmpegError: ffmpeg failed, or the destination still failed after the retries.
            Interrupted, KeyboardInterrupt: a signal; ffmpeg was stopped cleanly.
        """
        retry = 0
        destination = redact(self.settings.destination)
        while True:
            self.attempts += 1
            began = time.monotonic()
            failure = self._run_once()
            if failure is None:
                return
            if not failure.retryable:
                raise FFmpegError(failure.message)
            if time.monotonic() - began >= RETRY_RESET_S:
                retry = 0
            if retry >= self.settings.retries:
                raise FFmpegError(f"{destination}: {failure.message} (gave up after {retry} retries)")
            delay = 2 ** retry
            retry += 1
            log.warning("%s: %s; retry %d of %d in %d s", destination, failure.message, retry,
                        self.settings.retries, delay)
            time.sleep(delay)

    def close(self) -> None:
        """Write the pairs still queued."""
        self.writer.close()

    def summary(self, interrupted: bool = False) -> dict:
        """The figures of the push (after :meth:`close`)."""
        fps = float(self.hr_header.fps) if self.hr_header else None
        return {"frames": self.frames, "seconds": round(self.frames / fps, 3) if fps else 0.0, "fps": fps,
                "hr": [self.hr_header.width, self.hr_header.height] if self.hr_header else None,
                "lr": [self.lr_header.width, self.lr_header.height] if self.lr_header else None,
                "pairs_sampled": self.writer.offered, "pairs_written": self.writer.written,
                "pairs_dropped": self.writer.dropped, "runs_written": self.writer.runs_written,
                "runs_dropped": self.writer.runs_dropped, "time_base": round(self.time_base, 3),
                "attempts": self.attempts, "video_bytes": self.video_bytes,
                "video_kbit_s": round(8 * self.video_bytes / (self.frames / fps) / 1e3, 1) if fps and self.frames
                else None,
                "wall_s": round(time.monotonic() - self._started, 3),
                "cpu_s": round(self._cpu() - self._cpu_started, 3),  # readers, sampler, pool writes
                "destination": redact(self.settings.destination), "interrupted": interrupted}

    @staticmethod
    def _cpu() -> float:
        times = os.times()
        return times.user + times.system

    def _start(self) -> tuple[ffmpeg.Process, ffmpeg.Process, int, int]:
        """Start the decoder of the LR stream, then the pushing ffmpeg; returns them and the read ends of
        the HR and LR pipes (the caller's to close; the LR stream goes on to the decoder's stdin through
        :func:`_relay`). If either fails to start, nothing is left open or running."""
        settings = self.settings
        fps = float(self.hr_header.fps) if self.hr_header else None
        start = self.frames / fps if settings.seekable and fps else 0.0
        with contextlib.ExitStack() as on_failure:
            with contextlib.ExitStack() as handed_over:  # the children hold these: their ends close when they exit
                hr_read, hr_write = os.pipe()
                on_failure.callback(os.close, hr_read)
                handed_over.callback(os.close, hr_write)
                lr_read, lr_write = os.pipe()
                on_failure.callback(os.close, lr_read)
                handed_over.callback(os.close, lr_write)
                for fd in (hr_write, lr_write):
                    enlarge_pipe(fd, _PIPE_BYTES)
                decoder = ffmpeg.Process(decoder_args(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                on_failure.callback(decoder.kill)
                enlarge_pipe(decoder.stdout.fileno(), _PIPE_BYTES)
                pusher = ffmpeg.Process(push_args(settings, hr_write, lr_write, start), pass_fds=(hr_write, lr_write))
                on_failure.callback(pusher.kill)
            on_failure.pop_all()  # started: the pipes' read ends and the decoder are the caller's
        if start:
            log.info("resuming the input at %.3f s", start)
        return pusher, decoder, hr_read, lr_read

    def _sent(self, count: int) -> None:
        self.video_bytes += count  # one writer: the relay thread

    def _run_once(self) -> Failure | None:
        pusher, decoder, hr_read, lr_read = self._start()
        sampler = self.sampler = Sampler(
            self.writer, self.settings.pair_rate, self.frames, on_hr_header=self._hr_header,
            run_rate=self.settings.run_rate, run_frames=self.settings.run_frames, time_base=self.time_base)
        errors: dict[str, list[Exception]] = {"HR": [], "LR": []}
        with open(hr_read, "rb", buffering=0) as hr_stream, open(lr_read, "rb", buffering=0) as lr_stream:
            threads = [
                threading.Thread(target=_relay, name="lr-relay", daemon=True,
                                 args=(lr_stream, decoder.stdin, self._sent)),
                threading.Thread(target=_read_frames, name="hr-reader", daemon=True,
                                 args=(hr_stream, "HR pipe", sampler.hr_header, sampler.add_hr, errors["HR"])),
                threading.Thread(target=_read_frames, name="lr-reader", daemon=True,
                                 args=(decoder.stdout, "LR pipe", self._lr_header, sampler.add_lr, errors["LR"]))]
            try:
                for thread in threads:
                    thread.start()
                code = pusher.wait(check=False)
                for thread in threads:
                    thread.join()
                decoder_code = decoder.wait(check=False)
            except BaseException:  # interrupted: ffmpeg closes its outputs, the readers drain to the end
                with signals_ignored():
                    pusher.terminate(STOP_TIMEOUT_S)
                    started = [thread for thread in threads if thread.ident is not None]
                    for thread in started:
                        thread.join(STOP_TIMEOUT_S)
                    decoder.terminate(STOP_TIMEOUT_S)
                    for thread in started:
                        thread.join()
                    self.frames += sampler.hr_frames
                raise
        # After a failure, the frames known to have reached the destination are those decoded back.
        self.frames += sampler.hr_frames if code == 0 else sampler.lr_frames
        failure = classify_failure(code, pusher.stderr_tail, self.settings.network)
        if failure is not None:
            return failure
        if errors["HR"]:
            raise FFmpegError(f"ffmpeg's HR frames: {errors['HR'][0]}")
        if decoder_code != 0 or errors["LR"]:
            log.warning("decoding the LR stream failed (%s): pairs stopped after %d of %d frames",
                        errors["LR"][0] if errors["LR"] else decoder.last_error, sampler.lr_frames,
                        sampler.hr_frames)
        return None

    def _hr_header(self, header: y4m.Header) -> None:
        if self.hr_header is None:
            s = self.settings
            log.info("pushing %dx%d at %.3g fps as %dx%d to %s; %.3g pairs/s into %s", header.width, header.height,
                     float(header.fps), header.width // s.scale, header.height // s.scale, redact(s.destination),
                     s.pair_rate, self.writer.pool.dir)
        self.hr_header = header

    def _lr_header(self, header: y4m.Header) -> None:
        self.lr_header = header
