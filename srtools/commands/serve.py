"""sr-serve: upscale a live Y4M stream with the spool's current model, hot-swapping as new ones arrive."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from pathlib import Path

import click

from .. import cli, modelfile, video, y4m
from ..errors import ModelError, SrError, UsageError
from ..spool import Spool
from ..upscale import ModelUpscaler, bicubic, resolve_precision

log = logging.getLogger("srtools.serve")
ARCH = "fedsr"


class ModelWatcher(threading.Thread):
    """Polls the spool pointer and loads each new model off the frame loop.

    The frame loop takes :attr:`latest` between two frames, so a swap never drops or repeats a
    frame. A model that fails validation is logged once and the previous one stays in use.
    """

    def __init__(self, spool: Spool, scale: int, interval: float, **upscaler_options):
        super().__init__(name="model-watcher", daemon=True)
        self.spool, self.scale, self.interval = spool, scale, interval
        self.upscaler_options = upscaler_options  # device, precision
        self.latest: ModelUpscaler | None = None
        self.header: y4m.Header | None = None  # the input's, once known: new models are warmed up on it
        self._seen: tuple[int, int] | None = None  # (version, pointer mtime) already handled
        self._stopping = threading.Event()

    def poll(self) -> None:
        try:
            pointer = self.spool.current(ARCH, self.scale)
            mtime = self.spool.pointer_path(ARCH, self.scale).stat().st_mtime_ns if pointer else 0
        except (SrError, OSError) as exc:
            log.warning("spool: %s", exc)
            return
        if pointer is None or (pointer.version, mtime) == self._seen:
            return
        self._seen = (pointer.version, mtime)
        try:
            model, info = modelfile.load(pointer.path, scale=self.scale, arch=ARCH)
        except ModelError as exc:
            log.warning("rejected model v%d, keeping the previous one: %s", pointer.version, exc)
            return
        upscaler = ModelUpscaler(model, info, version=pointer.version, **self.upscaler_options)
        if self.header is not None:
            upscaler.warm_up(self.header)
        self.latest = upscaler

    def run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self._stopping.set()


class Prefetcher(threading.Thread):
    """Reads frames ahead on a thread, so decoding and pipe reads overlap with the network."""

    _END = object()

    def __init__(self, reader: y4m.Reader, depth: int = 4):
        super().__init__(name="prefetch", daemon=True)
        self.reader = reader
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for frame in self.reader:
                self.queue.put(frame)
        except BaseException as exc:  # re-raised in the frame loop
            self.error = exc
        self.queue.put(self._END)

    def __iter__(self):
        while (item := self.queue.get()) is not self._END:
            yield item
        if self.error is not None:
            raise self.error


class Stats:
    """Counters reported on stderr."""

    def __init__(self) -> None:
        self.frames = self.fallbacks = self.swaps = 0
        self.start = time.monotonic()

    def line(self, model: ModelUpscaler | None) -> str:
        elapsed = time.monotonic() - self.start
        fps = self.frames / elapsed if elapsed > 0 else 0.0
        return (f"{self.frames} frames in {elapsed:.1f} s ({fps:.1f} fps), model "
                f"{model.label if model else 'none (bicubic)'}, {self.swaps} swaps, "
                f"{self.fallbacks} bicubic fallbacks")


@cli.command("sr-serve", epilog="See also: sr-train(1), srtools-y4m(7), srtools-spool(5).")
@cli.input_argument
@cli.output_option
@cli.spool_option(required=False)
@click.option("--model", "model_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Use this model file (no hot-swap unless --spool is also given, which then takes over).")
@cli.scale_option
@cli.device_option
@click.option("--precision", type=click.Choice(("auto", *ModelUpscaler.PRECISIONS)), default="auto",
              show_default=True,
              help="bf16 runs the network's convolutions in bfloat16 (output and bicubic skip stay fp32): "
                   "1.7x faster here for 0.01 dB; auto picks it where the CPU (AVX512-BF16, AMX) or GPU "
                   "supports it natively.")
@click.option("--realtime", is_flag=True,
              help="Never fall behind the input frame rate: a frame whose SR would miss its deadline is "
                   "upscaled bicubically instead (counted in the stats).")
@click.option("--poll-interval", type=click.FloatRange(0.05, 60), default=0.5, show_default=True,
              metavar="SECONDS", help="How often the spool is checked for a new model.")
def command(input: str, output: str, spool: str | None, model_path: str | None, scale: int, device: str,
            precision: str, realtime: bool, poll_interval: float) -> None:
    """Upscale low-resolution frames by SCALE with the current F-EDSR model.

    Reads Y4M (srtools-y4m(7)) from INPUT ('-' for stdin, a file or named FIFO) or decodes any
    INPUT ffmpeg reads (.mp4, rtmp://...), and writes Y4M frames SCALE times larger to OUTPUT:
    the same frames in the same order. Luma goes through the network and chroma is upscaled
    bicubically (models of colour mode yuv take all planes). With no model yet, frames are
    upscaled bicubically.

    The model is the spool's current one (srtools-spool(5)); when a trainer publishes a newer
    one, sr-serve switches to it between two frames and logs the frame number. A model that
    fails validation is reported and the previous one kept. Statistics go to stderr.
    """
    if spool is None and model_path is None:
        raise UsageError("give --spool DIR, --model FILE, or both")
    device = cli.resolve_device(device)
    upscaler_options = {"device": device, "precision": resolve_precision(precision, device)}
    upscaler = None
    if model_path is not None:
        model, info = modelfile.load(model_path, scale=scale, arch=ARCH)
        upscaler = ModelUpscaler(model, info, **upscaler_options)
    with contextlib.ExitStack() as stack:
        watcher = None
        if spool is not None:
            if not Path(spool).is_dir():
                raise UsageError(f"--spool {spool}: no such directory")
            watcher = ModelWatcher(Spool(spool), scale, poll_interval, **upscaler_options)
            watcher.poll()
            upscaler = watcher.latest or upscaler
            watcher.start()
            stack.callback(watcher.join)  # a model load cut off by interpreter exit aborts the process
            stack.callback(watcher.stop)
        log.info("model: %s; network on %s in %s", upscaler.label if upscaler else "none yet, bicubic", device,
                 upscaler_options["precision"])
        reader = stack.enter_context(video.open_source(input))
        in_header = reader.header
        out_header = in_header.resized(in_header.width * scale, in_header.height * scale)
        writer = y4m.Writer(stack.enter_context(y4m.open_output(output)), out_header)
        if watcher is not None:
            watcher.header = in_header
        if upscaler is not None:
            upscaler.warm_up(in_header)
        prefetcher = Prefetcher(reader)
        prefetcher.start()
        stats = Stats()
        stack.callback(lambda: log.info("%s", stats.line(upscaler)))
        interval = 1.0 / float(in_header.fps)
        schedule = time.monotonic()  # when the current frame is due to start, in --realtime
        next_report = stats.start + 10
        for frame in prefetcher:
            if watcher is not None and watcher.latest not in (None, upscaler):
                upscaler = watcher.latest
                stats.swaps += 1
                log.info("frame %d: switched to model %s", stats.frames, upscaler.label)
            now = time.monotonic()
            schedule = max(schedule, now)  # a late input is not our lateness
            deadline = schedule + interval
            if upscaler is None or (realtime and now + upscaler.seconds_per_frame > deadline):
                out = bicubic(frame, out_header)
                stats.fallbacks += upscaler is not None
            else:
                out = upscaler.upscale(frame, out_header)
            writer.write(out)
            stats.frames += 1
            writer.flush()
            schedule = deadline
            if now >= next_report:
                log.info("%s", stats.line(upscaler))
                next_report = now + 10


main = cli.entry_point(command)
