"""sr-train: train a model (F-EDSR, or TCSR on F-EDSR's output) on a recorded clip and publish it to the spool."""

from __future__ import annotations

import logging

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from .. import archs, cli, degrade, modelfile
from ..cliptrain import ClipJob, ClipSpec, ClipTraining, ModelSpec
from ..errors import UsageError
from ..fsutil import emit_json
from ..live.stoprule import StopRule
from ..live.watchtrain import MODES, REFINE_SECONDS, Event, WatchConfig, session_budget, watch_spool
from ..spool import Spool
from ..training import Evaluation

log = logging.getLogger("srtools.train")
UPSCALERS, REFINERS = archs.for_task(archs.UPSCALE), archs.for_task(archs.REFINE)


@cli.command("sr-train", epilog="See also: sr-serve(1), sr-tcsr(1), srtools-spool(5).")
@cli.spool_option(required=True)
@click.option("--arch", type=click.Choice(UPSCALERS + REFINERS), default=UPSCALERS[0], show_default=True,
              help=f"What to train: {', '.join(UPSCALERS)} upscales LR frames (sr-serve); {', '.join(REFINERS)} "
                   "refines the upscaler's output with neighbouring frames (sr-tcsr).")
@click.option("--hr", "hr_source", metavar="CLIP",
              help="High-resolution clip (anything ffmpeg reads, or Y4M): the training targets. "
                   "Required unless --watch.")
@click.option("--lr", "lr_source", metavar="CLIP",
              help="Frame-aligned low-resolution recording of the same clip (e.g. what the server "
                   "received). Default: made from --hr by area downscale + H.264 (see --crf).")
@cli.scale_option()
@click.option("--max-seconds", type=click.FloatRange(1, None), default=180, show_default=True,
              help="Training time budget, decoding not counted (the learning-rate schedule is fitted to it).")
@click.option("--start", type=click.FloatRange(0, None), help="Use the clip from this second.")
@click.option("--duration", type=click.FloatRange(0, None, min_open=True),
              help="Use this many seconds of the clip.")
@click.option("--max-frames", type=click.IntRange(2, None), default=300, show_default=True,
              help="At most this many frame pairs are kept in memory: evenly spaced for F-EDSR, the first "
                   "ones for TCSR (which needs consecutive frames).")
@click.option("--crf", type=click.IntRange(0, 51), default=degrade.DEFAULT_CRF, show_default=True,
              help="x264 CRF of the default degradation.")
@click.option("--channels", type=click.IntRange(1, 256), metavar="N",
              help="Feature channels (default: the architecture's; F-EDSR 16, TCSR 16).")
@click.option("--blocks", type=click.IntRange(0, 64), metavar="N",
              help=f"Residual blocks: F-EDSR's body (default {archs.default_hparam('fedsr', 'blocks')}), TCSR's per "
                   f"flow stage (default {archs.default_hparam('tcsr', 'flow_blocks')}).")
@click.option("--neighbours", type=click.IntRange(1, 8), metavar="K",
              help="TCSR only: frames on each side of the refined one (default 1: 3-frame windows).")
@click.option("--color", type=click.Choice(modelfile.COLOR_MODES), default="y", show_default=True,
              help="y: luma through the network, chroma bicubic; yuv: all three planes (F-EDSR only).")
@click.option("--init", "init_from", metavar="auto|current|generic|scratch|FILE", default="auto", show_default=True,
              help="What training starts from: the spool's current model of --arch, the generic model shipped "
                   "for this configuration (srtools.generic), a new model (bicubic), or a model file (its "
                   "architecture settings are kept). auto: current when it has the configuration asked for, "
                   "else generic when one ships, else scratch. The result is never worse than a new model.")
@click.option("--patch", type=click.IntRange(8, 256), default=32, show_default=True,
              help="Training patch size in LR pixels (TCSR: the same area at output resolution).")
@click.option("--batch", type=click.IntRange(1, 1024), default=16, show_default=True, help="Patches per step.")
@click.option("--learning-rate", type=click.FloatRange(0, 1, min_open=True), default=1e-3, show_default=True,
              help="Peak Adam learning rate (cosine decay over the time budget).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--keep-models", type=click.IntRange(0, None), default=10, show_default=True, metavar="N",
              help="Keep the newest N versions of the model in the spool, removing older ones (0: keep all).")
@click.option("--watch", is_flag=True,
              help="Online: train on the spool's pool of pairs from the push side when --mode says so, "
                   "until SIGTERM (see ONLINE TRAINING). --max-seconds is then the budget of one session.")
@click.option("--mode", type=click.Choice(MODES), default="adaptive", show_default=True,
              help="With --watch: adaptive trains on sr-monitor's requests and stops by the stopping rule; "
                   "continuous trains without pause; once trains one session and idles.")
@click.option("--stop-db", type=click.FloatRange(0, None, min_open=True), default=StopRule.fixed_db,
              show_default=True, metavar="DB", help="With --watch: THs, the fixed held-out gain that is enough.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=StopRule.alpha,
              show_default=True, help="With --watch: the share of the predicted gain THp that is enough.")
@click.option("--horizon", type=click.FloatRange(1, None), default=StopRule.horizon_s, show_default=True,
              metavar="SECONDS", help="With --watch: compute seconds at which THp is read off the fitted curve.")
@click.option("--pool-pairs", type=click.IntRange(2, 10000), default=WatchConfig.max_pairs, show_default=True,
              metavar="N", help="With --watch: pool pairs a session trains on (recent ones weighted).")
@click.option("--half-life", type=click.FloatRange(0, None, min_open=True), default=WatchConfig.half_life_s,
              show_default=True, metavar="SECONDS",
              help="With --watch: stream seconds over which a pool pair's weight halves.")
@click.option("--refine/--no-refine", default=WatchConfig.refine, show_default=True,
              help="With --watch: fine-tune TCSR on the pool's runs in the time F-EDSR sessions leave.")
@click.option("--refine-seconds", type=click.FloatRange(1, None),
              default=REFINE_SECONDS,
              show_default=True, metavar="SECONDS", help="With --watch: the budget of one TCSR session.")
@cli.poll_interval_option(1.0, "an idle trainer checks for requests and pairs (with --watch)")
@cli.threads_option
@cli.device_option
def command(spool: str, arch: str, hr_source: str | None, lr_source: str | None, scale: int, max_seconds: float,
            start: float | None, duration: float | None, max_frames: int, crf: int, channels: int | None,
            blocks: int | None, neighbours: int | None, color: str, init_from: str, patch: int, batch: int,
            learning_rate: float, seed: int, keep_models: int, watch: bool, mode: str, stop_db: float, alpha: float,
            horizon: float, pool_pairs: int, half_life: float, refine: bool, refine_seconds: float,
            poll_interval: float, device: str) -> None:
    """Train a model on a recorded clip and publish the best one to the spool.

    HR frames are the targets; LR inputs come from --lr or from the default degradation of the
    HR clip (ffmpeg area downscale, then libx264 at --crf), so the model also learns to undo
    compression artefacts. Every tenth frame (at most eight) is held out; the model with the
    best Y-PSNR on them is published atomically as the spool's next version
    (srtools-spool(5)). A JSON summary of the published model goes to stdout; progress to
    stderr.

    Training starts (--init auto) from the spool's current model when it has the configuration
    asked for, else from the generic model that ships for the default x2 luma F-EDSR (trained by
    the project on photographs, see srtools.generic: it reaches in 3 minutes what a start from
    bicubic reaches in 10), else from a new model, which is exact bicubic. A new model is scored
    beside any other start, so the result is never worse than bicubic on the held-out frames.

    With --arch tcsr the inputs are windows of consecutive frames upscaled by the spool's
    current upscaling model (as sr-serve outputs them; bicubic when the spool has none yet),
    and the gain is measured over that upscaled output: an untrained TCSR passes frames
    through, so training only improves on F-EDSR. A trained start (the generic TCSR, the
    current one) first has its correction scaled to the strength that scores best on the
    held-out frames (1, 0.75, 0.5, 0.25 or 0: a TCSR trained on other content may correct this
    one too hard).

    \b
    ONLINE TRAINING (--watch)
    A daemon for the push side: it trains F-EDSR on the pairs sr-push samples into SPOOL/pool
    and publishes each held-out improvement of 0.05 dB or more, warm-starting every session from
    the spool's current model (the first one from the generic model when --channels and --blocks
    are the defaults), with the same recipe and compute clock as above. One trainer per
    spool (SPOOL/trainer.lock; a second one exits with status 6). --mode adaptive starts a
    session on a request from sr-monitor (SPOOL/requests/) or when there is no model yet, and
    stops it by the design's rule: a shallow network (1 -> 3 x 20 sigmoid units -> 1, MSE with
    L2) fitted to the session's (compute seconds, held-out gain over bicubic) points predicts the
    gain THp at --horizon; the session stops once the gain reaches TH = min(--stop-db, --alpha *
    THp), or at once when THp is no higher than the gain reached (the rule is consulted after 100
    steps, so that a starved trainer's flat start is no plateau), and at --max-seconds in any case;
    requests that arrive meanwhile are dropped. A session
    trains on up to --pool-pairs pairs of the newest pair's frame size (a camera that changed
    resolution starts a new scene) drawn with weights halving every --half-life stream seconds
    back from the newest, and waits until the pool holds 8 pairs.

    \b
    TCSR
    In the time F-EDSR sessions leave (adaptive and once modes: between requests), the trainer
    fine-tunes TCSR on the runs of consecutive frames sr-push samples into the pool, upscaled by
    the current F-EDSR as the server upscales them (--refine; --no-refine leaves TCSR alone). It
    starts from the spool's current TCSR, else the generic one that ships (srtools.generic), else
    the identity, its correction first scaled to the strength (1, 0.75, 0.5, 0.25 or 0) that
    scores best on the held-out runs, published at once when that beats what the server runs
    (the current TCSR at full strength, else nothing) by 0.05 dB; trains for
    --refine-seconds; publishes each held-out improvement of 0.05 dB as a tcsr model (sr-upload
    sends it, sr-tcsr on the server hot-swaps it); and again when a new F-EDSR model or new runs
    came. A training request ends it at once: F-EDSR answers a scene
    change first.

    One JSON object per event goes to stdout, each naming its arch (fedsr or tcsr): session
    (reason, pairs or runs, start model), published (version, gain_db) and stopped (reason:
    threshold, plateau, budget, or preempted for TCSR). SIGTERM ends it cleanly (status 130);
    killed at any moment, it leaves the last good model current. A pool that cannot be trained
    on is reported in one line and waited out.
    """
    if watch:
        if hr_source or lr_source or init_from != "auto" or arch != UPSCALERS[0] or color != "y":
            raise UsageError(f"--watch trains {UPSCALERS[0]} (luma) on the spool's pool: "
                             "drop --hr, --lr, --init, --arch and --color")
        config = WatchConfig(mode=mode, session=session_budget(max_seconds, batch, learning_rate, seed),
                             stop=StopRule(fixed_db=stop_db, alpha=alpha, horizon_s=horizon), max_pairs=pool_pairs,
                             half_life_s=half_life, patch=patch, channels=channels, blocks=blocks, refine=refine,
                             refine_session=session_budget(refine_seconds, batch, learning_rate, seed))
        spool_dir = Spool(spool, create=True, keep=keep_models or None)
        watch_spool(spool_dir, scale, config, cli.resolve_device(device), _emit, poll_interval, seed)
        return
    if hr_source is None:
        raise UsageError("--hr is required (or --watch to train on the spool's pool)")
    device = cli.resolve_device(device)
    spec = ModelSpec(arch=arch, scale=scale, color=color, channels=channels, blocks=blocks, neighbours=neighbours,
                     init=init_from)
    if spec.refines and color != "y":
        raise UsageError(f"--arch {arch} refines luma only: use --color y")
    if not spec.refines and neighbours is not None:
        raise UsageError(f"--neighbours is for {', '.join(REFINERS)}, not {arch}")
    clip = ClipSpec(hr=hr_source, lr=lr_source, start=start, duration=duration, max_frames=max_frames, crf=crf)
    job = ClipJob(model=spec, clip=clip, max_seconds=max_seconds, batch=batch, learning_rate=learning_rate,
                  patch=patch, seed=seed)
    run = ClipTraining(Spool(spool, create=True, keep=keep_models or None), job, device)
    with Progress(TextColumn("training"), BarColumn(), TextColumn("{task.fields[status]}"),
                  TimeRemainingColumn(), console=cli.console, transient=True,
                  disable=not cli.console.is_terminal) as bar:
        task = bar.add_task("train", total=1.0, status="")

        def report(e: Evaluation) -> None:
            status = f"step {e.step}  val {e.psnr:.2f} dB  best {e.best_psnr:.2f} dB"
            bar.update(task, completed=e.fraction, status=status)
            log.debug("%.0f%% step %d val %.3f best %.3f", 100 * e.fraction, e.step, e.psnr, e.best_psnr)

        result = run.train(report)
    emit_json(run.publish(result))


def _emit(event: Event) -> None:
    emit_json(event.as_dict())
    log.info("%s: %s", event.event, ", ".join(f"{k} {v}" for k, v in event.fields.items()))


main = cli.entry_point(command)
