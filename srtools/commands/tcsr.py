"""sr-tcsr: refine upscaled frames with TCSR using their neighbours, as many as time allows."""

from __future__ import annotations

import contextlib
import logging

import click

from .. import archs, cli, framefilter, generic, loader, video, y4m
from ..errors import UsageError
from ..framelog import FrameLog, open_log
from ..tcsr import Budget, EveryNth, TcsrStage, refiner_factory
from ..upscale import resolve_precision

log = logging.getLogger("srtools.tcsr")


@cli.command("sr-tcsr", epilog="See also: sr-serve(1), sr-train(1), srtools-y4m(7), srtools-spool(5).")
@cli.input_argument
@cli.output_option
@cli.spool_option(required=False)
@cli.model_option("Use this TCSR model file (no hot-swap unless --spool is also given, which then takes over).")
@cli.scale_option("Scale of the upscaler whose output this is: picks the spool's TCSR model trained on it.")
@click.option("--every", type=click.IntRange(1, None), metavar="N",
              help="Refine frames 0, N, 2N, ... and pass the others through (batch use; default 1: all).")
@click.option("--budget-ms", type=click.FloatRange(0, None, min_open=True), metavar="MS",
              help="Live use: spend at most MS ms per frame on average, never miss a frame's deadline at the "
                   "input frame rate, and prefer the frames that move most.")
@click.option("--generic/--no-generic", "use_generic", default=False, show_default=True,
              help="While the spool has no TCSR model for --scale (and without --model), refine with the generic "
                   "TCSR shipped with srtools for --scale (srtools.generic), at its full strength: unmeasured on "
                   "this content, it may lose (see REFINED FRAMES). Off: frames pass through until the push side "
                   "publishes a TCSR measured on the stream.")
@cli.stats_option("predicted_to_lose (frames passed through because refining them would lose: see REFINED "
                  "FRAMES)")
@cli.frame_log_option
@cli.threads_option
@cli.device_option
@cli.precision_option
@cli.poll_interval_option()
@cli.max_pixels_option("in")
def command(input: str, output: str, spool: str | None, model_path: str | None, scale: int, every: int | None,
            budget_ms: float | None, use_generic: bool, device: str, precision: str, poll_interval: float,
            stats_path: str | None, max_pixels: int, frame_log_path: str | None) -> None:
    """Refine upscaled frames with the temporal network TCSR.

    Reads Y4M (srtools-y4m(7)) from INPUT ('-' for stdin, a file or named FIFO; typically
    sr-serve's output) or decodes any INPUT ffmpeg reads, and writes the same frames, in the
    same order and at the same size, to OUTPUT. Frame t is refined from frames t-k .. t+k (the
    model's k; the first and last frames are repeated at the ends), so output runs k frames
    behind the input. Luma goes through the network; chroma passes through.

    Which frames: --every N (all of them by default), or --budget-ms for live streams: frames
    are refined while the average time per frame stays within the budget and the refinement
    ends before the frame is due at the input frame rate; the others pass through unchanged.
    After a run of frames without the model it is tried once more (8 to 256 frames apart), so
    refinement comes back when the machine has time; such a probe may delay one frame by the
    model's time. Statistics (frames refined, passed through, probes, late frames) go to stderr.

    \b
    REFINED FRAMES
    A refined frame must not be worse than its input; a frame passes through unchanged when a
    measurement says it would be: a model whose recorded held-out gain (gain_db, measured by its
    trainer, e.g. the online trainer on the stream's own frames) is not positive is not run at
    all, and a frame whose neighbours, aligned by the model's flows, still differ from it by more
    than 12 levels on average (a cut, a flash, motion beyond the flows' reach) keeps its input.

    The model is the spool's current TCSR model for --scale (srtools-spool(5)); the spool may
    not exist yet. Until it has one, frames pass through, or with --generic the generic TCSR
    shipped with srtools for the scale refines them. The push side's trainer starts from that
    generic TCSR too, first scaling its correction to the strength that scores best on the
    stream's own frames (0 when none gains) and publishing it at once when it gains: on four
    real clips the generic TCSR at full strength gained up to 0.06 dB and lost up to 0.1 dB over
    their own F-EDSR, scaled this way none lost more than 0.003 dB (docs/benchmarks.md). New
    models are hot-swapped between frames.

    Frames are bounded: a stream of frames with more than --max-pixels pixels is refused (exit
    status 3) before anything is allocated for it, and the model is warmed up on frames of at
    most 640x360 pixels, its time scaled to the stream's size: a header costs its sender nothing
    and the stream's first frame pays for its size.
    """
    if spool is None and model_path is None:
        raise UsageError("give --spool DIR, --model FILE, or both")
    if every is not None and budget_ms is not None:
        raise UsageError("give --every or --budget-ms, not both")
    device = cli.resolve_device(device)
    precision = resolve_precision(precision, device)
    factory = refiner_factory(device, precision)
    refiner = loader.open_engine(factory, archs.REFINE, scale, model_path=model_path)
    shipped = generic.find("tcsr", archs.default_hparams("tcsr"), scale, "y") if use_generic else None
    if refiner is None and shipped is not None:  # the spool's first model takes over from it
        refiner = factory(*loader.load(shipped, archs.REFINE, scale), None)
    selector = Budget(budget_ms / 1e3) if budget_ms is not None else EveryNth(every or 1)
    with contextlib.ExitStack() as stack:
        frame_log = stack.enter_context(open_log(frame_log_path)) if frame_log_path else None
        reader = stack.enter_context(video.open_source(input))
        header = reader.header
        y4m.check_frame_size(header, max_pixels, reader.name)
        refiner, watcher = loader.follow_spool(stack, refiner, factory, archs.REFINE, scale, header, spool,
                                              poll_interval)
        log.info("model: %s; %s; network on %s in %s",
                 f"{refiner.label} (k={refiner.k}, {1e3 * refiner.cost:.0f} ms per frame)" if refiner
                 else "none yet, frames pass through",
                 f"budget {budget_ms:g} ms per frame" if budget_ms is not None else f"every {every or 1} frame(s)",
                 device, precision)
        writer = y4m.Writer(stack.enter_context(y4m.open_output(output)), header)
        stage = TcsrStage(selector)
        stats = framefilter.Stats(fallback_name="passed through at their deadline", engine_name="refined",
                                  path=stats_path, details=stage)
        run_stage = FrameLog(stage, frame_log) if frame_log else stage
        framefilter.run(reader, float(header.fps), writer, run_stage, refiner, watcher=watcher,
                        realtime=budget_ms is not None, stats=stats)


main = cli.entry_point(command)
