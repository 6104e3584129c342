"""sr-serve: upscale a live Y4M stream with the spool's current model, hot-swapping as new ones arrive."""

from __future__ import annotations

import contextlib
import logging

import click

from .. import archs, cli, framefilter, loader, video, y4m
from ..errors import UsageError
from ..framelog import FrameLog, open_log
from ..selective import SelectiveUpscaleStage
from ..upscale import resolve_precision, upscaler_factory

log = logging.getLogger("srtools.serve")


@cli.command("sr-serve", epilog="See also: sr-train(1), srtools-y4m(7), srtools-spool(5).")
@cli.input_argument
@cli.output_option
@cli.spool_option(required=False)
@cli.model_option("Use this model file (no hot-swap unless --spool is also given, which then takes over).")
@cli.scale_option()
@cli.stats_option("with --realtime, selective SR's blocks: block_frames (frames upscaled in blocks rather than whole), "
                  "and of their blocks blocks_computed (through the network), blocks_reused (a remembered "
                  "correction instead), blocks_stale (those of them that had changed), blocks_total and "
                  "block_share ((computed + reused) / total, null before any frame in blocks)")
@cli.frame_log_option
@cli.threads_option
@cli.device_option
@cli.precision_option
@click.option("--realtime", is_flag=True,
              help="Never fall behind the input frame rate: when the whole frame does not fit its deadline, "
                   "the network runs on the blocks where it gains most, as many as fit, bicubic elsewhere "
                   "(selective SR, see DESCRIPTION).")
@click.option("--latency", type=click.IntRange(1, 25), default=2, show_default=True, metavar="FRAMES",
              help="With --realtime, frame intervals a frame may take from the start of its slot (its arrival, "
                   "unless earlier frames ran over) until it is written. With 2 or more the network may take 90% "
                   "of every interval: a frame that overruns its interval is not late yet, and the next frames make "
                   "up for it. 1 keeps 35% of each interval unused.")
@click.option("--block", type=click.IntRange(8, 256), default=32, show_default=True, metavar="PIXELS",
              help="Selective SR block size in input pixels.")
@click.option("--reuse-threshold", type=click.FloatRange(0, 255), default=2.0, show_default=True, metavar="LEVELS",
              help="Selective SR reuses a block's last correction (network minus bicubic) on the current bicubic "
                   "while no input pixel of its window changed by more than this many luma levels; 0 "
                   "recomputes every block and leaves blocks that do not fit bicubic.")
@cli.poll_interval_option()
@cli.max_pixels_option("out")
def command(input: str, output: str, spool: str | None, model_path: str | None, scale: int, device: str,
            precision: str, realtime: bool, latency: int, block: int, reuse_threshold: float, poll_interval: float,
            stats_path: str | None, max_pixels: int, frame_log_path: str | None) -> None:
    """Upscale low-resolution frames by SCALE with the current super-resolution model.

    Reads Y4M (srtools-y4m(7)) from INPUT ('-' for stdin, a file or named FIFO) or decodes any
    INPUT ffmpeg reads (.mp4, rtmp://...), and writes Y4M frames SCALE times larger to OUTPUT:
    the same frames in the same order. Luma goes through the network and chroma is upscaled
    bicubically (models of colour mode yuv take all planes). With no model yet, frames are
    upscaled bicubically.

    The model is the spool's current upscaling model (srtools-spool(5)); the spool may not
    exist yet: sr-serve waits for the first model. When a trainer publishes a newer one,
    sr-serve switches to it between two frames and logs the frame number. A model that fails
    validation is reported and the previous one kept. Statistics go to stderr.

    \b
    REAL TIME (--realtime)
    Each frame has a slot of one frame interval, from its arrival or from the end of the previous
    frame's slot if that is later, and must be written within --latency intervals of the slot's
    start, or it counts as late. Whole frames go through the network while they fit the slot; else
    selective SR: the low-res frame is cut into --block blocks, and the network runs, in a few
    batched calls, on as many as the measured time per block fits, the most detailed first. Each
    block carries a halo of the network's receptive field, so its output equals full-frame SR (no
    seams). Every block remembers its correction (network output minus bicubic): a block whose input
    changed by at most --reuse-threshold levels reuses it without being computed, and one left out
    that changed by at most 16 levels takes it too; other blocks are bicubic. The statistics count
    the frames with network output, whole or in blocks, the frames upscaled in blocks with the share
    of their blocks that has network output (computed or reused), the late frames and the worst lag.

    Frames are bounded: a stream whose output frames would have more than --max-pixels pixels is
    refused (exit status 3) before anything is allocated for it, and the model is warmed up on a
    frame of at most 640x360 pixels, its time scaled to the stream's size: a header costs its
    sender nothing and the stream's first frame pays for its size.
    """
    if spool is None and model_path is None:
        raise UsageError("give --spool DIR, --model FILE, or both")
    device = cli.resolve_device(device)
    precision = resolve_precision(precision, device)
    factory = upscaler_factory(device, precision)
    upscaler = loader.open_engine(factory, archs.UPSCALE, scale, model_path=model_path)
    with contextlib.ExitStack() as stack:
        frame_log = stack.enter_context(open_log(frame_log_path)) if frame_log_path else None
        reader = stack.enter_context(video.open_source(input))
        in_header = reader.header
        y4m.check_frame_size(in_header, max_pixels, reader.name, scale)
        upscaler, watcher = loader.follow_spool(stack, upscaler, factory, archs.UPSCALE, scale, in_header, spool,
                                               poll_interval)
        log.info("model: %s; network on %s in %s", upscaler.label if upscaler else "none yet, bicubic", device,
                 precision)
        out_header = in_header.resized(in_header.width * scale, in_header.height * scale)
        writer = y4m.Writer(stack.enter_context(y4m.open_output(output)), out_header)
        stage = SelectiveUpscaleStage(out_header, block=block, reuse_threshold=reuse_threshold, latency=latency)
        stats = framefilter.Stats(path=stats_path, details=stage.counts)
        run_stage = FrameLog(stage, frame_log) if frame_log else stage
        framefilter.run(reader, float(in_header.fps), writer, run_stage, upscaler, watcher=watcher, realtime=realtime,
                        latency=latency, stats=stats)


main = cli.entry_point(command)
