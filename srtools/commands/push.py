"""sr-push: push a low-res stream to a server and sample training pairs into the spool's pool."""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import IO, Iterator

import click

from .. import cli, degrade, ffmpeg
from ..errors import Interrupted, UsageError
from ..fsutil import emit_json
from ..live import push
from ..live.pool import DEFAULT_MAX_PAIRS, DEFAULT_MAX_RUNS, Pool
from ..live.pushstatus import PushStatus
from ..live.streamtoken import read_token

log = logging.getLogger("srtools.push")

_RATE = re.compile(r"\d+(\.\d+)?[kKMG]?")
_FORMAT = re.compile(r"[A-Za-z0-9_]+")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def _rate(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not _RATE.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not a bit rate such as 800k or 2M")
    return value


def _format_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _FORMAT.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not an ffmpeg format name")
    return value


@cli.command("sr-push", epilog="See also: sr-monitor(1), sr-train(1), sr-serve(1), srtools-spool(5).")
@click.argument("source", metavar="INPUT")
@click.option("--to", "destination", required=True, metavar="URL|PATH",
              help="Where the low-res stream goes: an rtmp:// URL (FLV), srt:// or udp:// (MPEG-TS), or a file or "
                   "named FIFO whose extension names the container (.flv, .mkv, .ts, .mp4). A file is overwritten.")
@cli.spool_option(required=True)
@cli.scale_option()
@click.option("--input-format", metavar="FMT", callback=_format_name,
              help="ffmpeg input format of INPUT (ffmpeg -f): lavfi for a filter graph source, v4l2 for a camera.")
@click.option("--output-format", metavar="FMT", callback=_format_name,
              help="Container of --to (ffmpeg -f), when its scheme or extension does not say.")
@click.option("--no-pace", "no_pace", is_flag=True,
              help="Read a file or lavfi INPUT as fast as possible (batch runs) instead of at its frame rate.")
@click.option("--fps", type=click.FloatRange(0, 240, min_open=True), metavar="F",
              help="Convert to F frames per second before the split (default: the input's rate).")
@click.option("--bitrate", default=push.DEFAULT_BITRATE, show_default=True, metavar="RATE", callback=_rate,
              help="Video bit rate cap (x264 -maxrate, and -bufsize: one second of it).")
@click.option("--crf", type=click.IntRange(0, 51), default=degrade.DEFAULT_CRF, show_default=True,
              help="x264 constant rate factor under the cap (the default degradation's).")
@click.option("--preset", type=click.Choice(X264_PRESETS), default="veryfast", show_default=True,
              help="x264 preset.")
@click.option("--segment", type=click.FloatRange(0.1, 60), default=push.DEFAULT_SEGMENT, show_default=True,
              metavar="SECONDS", help="HLS segment length: a keyframe every SECONDS of stream time, and only there.")
@click.option("--pair-rate", type=click.FloatRange(0, 240, min_open=True), default=push.DEFAULT_PAIR_RATE,
              show_default=True, metavar="R", help="Training pairs sampled per second of stream time.")
@click.option("--max-pairs", type=click.IntRange(1), default=DEFAULT_MAX_PAIRS, show_default=True, metavar="N",
              help="Bound of the pool: the oldest pairs are removed beyond it.")
@click.option("--run-rate", type=click.FloatRange(0, 25), default=push.DEFAULT_RUN_RATE, show_default=True,
              metavar="R", help="Runs of consecutive frames (TCSR's training material) sampled per second of stream "
                                "time; 0: none.")
@click.option("--run-frames", type=click.IntRange(3, 17), default=push.DEFAULT_RUN_FRAMES, show_default=True,
              metavar="N", help="Consecutive frames per run (2k+1 or more for a TCSR that looks k frames each way).")
@click.option("--max-runs", type=click.IntRange(1), default=DEFAULT_MAX_RUNS, show_default=True, metavar="N",
              help="Bound of the runs in the pool: the oldest are removed beyond it.")
@click.option("--retries", type=click.IntRange(0, 30), default=push.DEFAULT_RETRIES, show_default=True,
              metavar="N", help="Reconnections to a network destination that refused or dropped the stream, "
                                "after waits of 1, 2, 4, ... s.")
@click.option("--token-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Add the stream's token from FILE to an rtmp:// --to URL (?token=TOKEN), as nginx-rtmp (through "
                   "sr-receive) and sr-live's listener check it; never put it on the command line.")
@click.option("--status-every", type=click.FloatRange(0, 3600), default=10.0, show_default=True, metavar="SECONDS",
              help="When stderr is not a terminal, log the status line this often (0: never); on a terminal it is "
                   "one line kept current every second.")
def command(source: str, destination: str, spool: str, scale: int, input_format: str | None,
            output_format: str | None, no_pace: bool, fps: float | None, bitrate: str, crf: int, preset: str,
            segment: float, pair_rate: float, max_pairs: int, run_rate: float, run_frames: int, max_runs: int,
            retries: int, status_every: float, token_file: str | None) -> None:
    """Push a low-res H.264 stream to a server and sample training pairs on the way.

    INPUT is anything ffmpeg reads: a file, a URL, a lavfi filter graph (--input-format lavfi,
    e.g. "testsrc2=size=1280x720:rate=30[out0];sine[out1]"), a camera (--input-format v4l2
    /dev/video0). An rtmp:// INPUT is an address sr-push listens on (ffmpeg -listen 1), so that
    OBS can publish to it locally (in OBS: a custom service, server rtmp://127.0.0.1:1935/live,
    stream key obs; then sr-push rtmp://127.0.0.1:1935/live/obs --to ...); the push ends when
    OBS stops streaming. Files and lavfi sources are read at their frame rate (ffmpeg -re), as a
    camera delivers frames, unless --no-pace; cameras and rtmp:// inputs are live already.

    ffmpeg decodes INPUT once. Frames are cropped to a multiple of twice the scale in both
    dimensions (the top-left part is kept), as the default degradation does (srtools.degrade),
    then split: one branch is area-downscaled by --scale and encoded with libx264 for low
    latency (tune zerolatency, no B-frames, CRF --crf capped at --bitrate, a keyframe at every
    --segment boundary), with the first audio track as AAC in sync, and sent to --to; the other
    carries the high-res frames to the pair sampler. The encoded stream is also decoded again by
    a second ffmpeg, so that the low-res half of each pair is exactly what a server receives.

    --pair-rate times per second of stream time, the high-res frame, the decoded low-res frame
    of the same index and the stream time t = index / fps are added to the pool in SPOOL/pool
    (srtools-spool(5)), which keeps the --max-pairs newest; --run-rate times per second, the
    luma of --run-frames consecutive frames (high-res and decoded low-res) goes in as a run,
    the --max-runs newest kept (TCSR's training material, for sr-train --watch). Stream time
    continues after the newest pair or run already in the pool (plus 1 s), so that a restarted
    push never makes its earlier pairs look newer than its new ones. Pairs are written by a separate
    thread behind a short queue: when the disk is slow or full, pairs are dropped (counted, with
    a warning), never the video. With --no-pace on a file or lavfi INPUT nothing is real time:
    the sampler waits for the disk instead of dropping pairs. The summary's pairs_sampled are
    pairs_written plus pairs_dropped.

    A network destination that refuses or drops the connection is retried --retries times with
    waits of 1, 2, 4, ... s (the count starts over after a connection that lasted 30 s); a file
    INPUT resumes where the delivered stream stopped, a live one goes on from now. Then sr-push
    gives up with exit status 5. A destination that does not respond at all waits for the
    system's connection timeout.

    \b
    STATUS
    While it pushes, sr-push keeps one status line current on stderr when stderr is a terminal
    (log lines clear it; it comes back within a second), and logs it every --status-every seconds
    otherwise: the stream time, the video's bit rate as sent (measured on the encoded stream),
    the pairs sampled (and dropped), and from the push spool what the other commands of the push
    side wrote there, where its service appends their JSON lines (conf/systemd/sr-push@.service,
    srtools-spool(5)): the current model's gain over bicubic on the newest pair
    (SPOOL/monitor.jsonl), the training state (SPOOL/train.jsonl: a session and its reason, the
    last version published, idle) with the requests pending, and the last upload
    (SPOOL/upload.jsonl). A file that is not there leaves its field out.

    At the end of the input (or on SIGINT or SIGTERM, after ffmpeg has closed its outputs, exit
    status 130) one JSON line goes to stdout: frames (delivered), seconds (of stream), fps, hr
    and lr ([width, height]), pairs_sampled, pairs_written, pairs_dropped, runs_written,
    runs_dropped, time_base (the stream time of this push's first frame), attempts
    (connections), video_bytes and video_kbit_s (the encoded video sent, every attempt, and its
    mean bit rate over the stream), wall_s, cpu_s (this process alone: frame readers, sampler and
    pool writes, not ffmpeg), destination (stream key masked) and interrupted.

    A server that checks publishers (nginx-rtmp with sr-receive, sr-live's listener) wants the
    stream's token in the URL: --token-file adds it, so it is neither on sr-push's command line
    nor in its messages (its ffmpeg's command line holds the URL: on a shared push machine, other
    local users can read it there).
    """
    if destination == "-":
        raise UsageError("--to -: stdout carries the summary; name a file or a named FIFO")
    if token_file is not None:
        if not destination.startswith("rtmp://"):
            raise UsageError("--token-file: the token goes into an rtmp:// --to URL")
        parts = urllib.parse.urlsplit(destination)
        query = urllib.parse.urlencode({"token": read_token(token_file)})
        destination = parts._replace(query=f"{parts.query}&{query}" if parts.query else query).geturl()
    settings = push.PushSettings(
        source=source, destination=destination, scale=scale, input_format=input_format,
        output_format=output_format, pace=not no_pace, fps=fps, bitrate=bitrate, crf=crf, preset=preset,
        segment=segment, pair_rate=pair_rate, run_rate=run_rate, run_frames=run_frames, retries=retries)
    if settings.container is None and (settings.network or not Path(destination).suffix):
        raise UsageError(f"{push.redact(destination)}: cannot tell the container; add --output-format")
    if input_format is None and not settings.listens and source != "-":
        ffmpeg.require_input(source)
    pusher = push.Pusher(settings, Pool(spool, max_pairs, create=True, max_runs=max_runs))
    try:
        try:
            with reporting(PushStatus(pusher, spool), status_every):
                pusher.run()
        finally:
            pusher.close()  # the pairs already queued are worth keeping, whatever happened
    except (KeyboardInterrupt, Interrupted):
        _print(pusher.summary(interrupted=True))
        raise
    _print(pusher.summary())


def _print(summary: dict) -> None:
    emit_json(summary)


class _TerminalLine(logging.Filter):
    """One line at the bottom of a terminal, redrawn in place; as a filter of the log handlers it clears
    itself before each log record, so that records never run into it."""

    def __init__(self, stream: IO[str]):
        super().__init__()
        self.stream = stream
        self.shown = False
        self._lock = threading.Lock()

    def show(self, text: str) -> None:
        width = shutil.get_terminal_size().columns
        with self._lock:
            self.stream.write("\r" + text[:max(1, width - 1)] + "\x1b[K")
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        with self._lock:
            if self.shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self.shown = False

    def filter(self, record: logging.LogRecord) -> bool:
        self.clear()
        return True


@contextlib.contextmanager
def reporting(status: PushStatus, log_every: float) -> Iterator[None]:
    """Report ``status`` for the time of the with-block: a line kept current on a terminal, else a log
    line every ``log_every`` seconds (0: none); nothing when logging is quieter than INFO (-q)."""
    terminal = sys.stderr.isatty()
    if not logging.getLogger().isEnabledFor(logging.INFO) or not (terminal or log_every):
        yield
        return
    line = _TerminalLine(sys.stderr) if terminal else None
    handlers = logging.getLogger().handlers
    for handler in handlers if line else ():
        handler.addFilter(line)
    stop = threading.Event()

    def run() -> None:
        next_log = time.monotonic() + log_every
        while not stop.wait(1.0):
            text = status.line()
            if line is not None:
                line.show(text)
            elif time.monotonic() >= next_log:
                log.info("status: %s", text)
                next_log = time.monotonic() + log_every

    thread = threading.Thread(target=run, name="status", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if line is not None:
            line.clear()
            for handler in handlers:
                handler.removeFilter(line)


main = cli.entry_point(command)
