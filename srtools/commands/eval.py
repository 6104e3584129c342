"""sr-eval: evaluate super-resolution on a recording: its low-res stream as sr-push sends it, upscaled, scored."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .. import archs, cli, degrade, loader, plot
from ..cliptrain import ClipJob, ClipSpec, ClipTraining, ModelSpec
from ..errors import InputError, ModelError, UsageError
from ..evaluate import Evaluation, evaluate, frame_count
from ..fsutil import emit_json
from ..spool import Spool
from ..upscale import resolve_precision, upscaler_factory

log = logging.getLogger("srtools.eval")
MAX_TABLE_ROWS = 40


@cli.command("sr-eval", epilog="See also: sr-train(1), sr-serve(1), sr-compare(1), sr-push(1).")
@click.argument("clip", metavar="CLIP")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Where the outputs go (created when missing; files of an earlier run are replaced).")
@cli.scale_option()
@click.option("--spool", type=click.Path(file_okay=False), metavar="DIR",
              help="Evaluate the current model of this spool (srtools-spool(5)) instead of training one.")
@cli.model_option("Evaluate this model file instead of training one.")
@click.option("--max-seconds", type=click.FloatRange(1, None), default=180, show_default=True,
              help="Training budget, decoding not counted (sr-train --max-seconds).")
@click.option("--train-duration", type=click.FloatRange(0, None, min_open=True), metavar="SECONDS",
              help="Train on the first SECONDS of CLIP only (default: all of it, as the live system trains on the "
                   "stream itself); the evaluation covers the whole clip.")
@click.option("--crf", type=click.IntRange(0, 51), default=degrade.DEFAULT_CRF, show_default=True,
              help="x264 CRF of the low-res stream (sr-push --crf), capped at sr-push's default bit rate.")
@click.option("--no-videos", is_flag=True, help="Score only: do not write the SR, bicubic and wipe videos.")
@cli.threads_option
@cli.device_option
@cli.precision_option
def command(clip: str, out_dir: str, scale: int, spool: str | None, model_path: str | None, max_seconds: float,
            train_duration: float | None, crf: int, no_videos: bool, device: str, precision: str) -> None:
    """Evaluate super-resolution on a high-res recording, as the live system would serve it.

    Makes the low-res stream of CLIP as sr-push sends it (DIR/lr.mp4: crop to a multiple of twice
    the scale, area downscale, x264 with sr-push's live settings at --crf), trains F-EDSR on CLIP
    and that stream (sr-train's recipe, --max-seconds, published into DIR/spool; the first
    --train-duration seconds only if given) unless --spool or --model names the model to use,
    then upscales every low-res frame, whole, with the model and bicubically, and scores both
    against CLIP, frame by frame (Y-PSNR and Y-SSIM, srtools.metrics: the whole frame, the mean
    of per-frame PSNR, identical planes counted as 99 dB).

    Writes DIR/sr.mp4 and DIR/bicubic.mp4 (H.264, CRF 12), DIR/wipe.mp4 (bicubic left, SR right
    of a labelled divider that sweeps across the picture and back every 8 s), unless --no-videos,
    and DIR/quality.png (Y-PSNR per second of both). One JSON object goes to stdout: clip, scale,
    fps, frames, hr and lr ([width, height]), model ({"file", "version", "trained", and with
    training "gain_db" and "train_seconds"}), sr and bicubic ({"y_psnr_db", "y_ssim"}: the
    means), gain_db and ssim_gain (SR minus bicubic), scene_cuts (stream times where the picture
    changed by over 20 levels of 16x9 thumbnails, also on the plot), outputs (the files written)
    and per_frame ([{"frame", "sr_psnr", "bicubic_psnr", "sr_ssim", "bicubic_ssim", "change"},
    ...]); a table of the means per second (per longer spans on a long clip) goes to stderr.

    Recordings can be evaluated in batches, e.g. nightly from cron: each recording of a directory
    not evaluated yet, each with a model of its own (3 minutes of training; CLIP.json, CLIP.eval/):

    \b
        30 2 * * *  cd /srv/rec && for f in *.mp4; do [ -s $f.json ] || sr-eval -q $f --out $f.eval >$f.json; done

    Failures are one line on stderr: a bad option with 2, an unreadable CLIP or one too small for
    the scale with 3, a bad model or a spool without one with 4, ffmpeg failing with 5.
    """
    if spool and model_path:
        raise UsageError("give --spool or --model, not both")
    if not os.path.isfile(clip) and "://" not in clip:
        raise InputError(f"{clip}: no such file")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = cli.resolve_device(device)
    lr_path = out / "lr.mp4"
    log.info("the low-res stream as sr-push sends it: %s", lr_path)
    degrade.make_lr(clip, str(lr_path), scale, crf=crf, live=True)
    factory = upscaler_factory(device, resolve_precision(precision, device))
    model = {"file": model_path, "version": None, "trained": False}
    if model_path:
        upscaler = loader.open_engine(factory, archs.UPSCALE, scale, model_path=model_path)
    elif spool:
        current = loader.load_current(Spool(spool), archs.UPSCALE, scale)
        if current is None:
            raise ModelError(f"{spool}: no x{scale} upscaling model in the spool")
        network, info, version = current
        upscaler = factory(network, info, version)
        model.update(file=str(loader.current_pointer(Spool(spool), archs.UPSCALE, scale).path), version=version)
    else:
        upscaler, model = _train(clip, str(lr_path), out / "spool", scale, max_seconds, train_duration, device, factory)
    outputs = {} if no_videos else {kind: out / f"{kind}.mp4" for kind in ("sr", "bicubic", "wipe")}
    total = frame_count(str(lr_path))
    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=cli.console, transient=True, disable=not cli.console.is_terminal) as bar:
        task = bar.add_task("score", total=total)
        result = evaluate(clip, str(lr_path), scale, upscaler=upscaler, outputs=outputs,
                          progress=lambda done: bar.update(task, completed=done))
    plot_path = out / "quality.png"
    spans = result.per_second(max(1, -(-len(result.scores) // (round(result.fps) * MAX_TABLE_ROWS))))
    seconds = result.per_second()
    plot.quality_chart(plot_path, [t for t, _ in seconds],
                       {f"super-resolved ({upscaler.label})": [m["sr_psnr"] for _, m in seconds],
                        "bicubic": [m["bicubic_psnr"] for _, m in seconds]},
                       title=f"{Path(clip).name}: Y-PSNR against the recording, x{scale}",
                       events=[plot.Event(t, "scene cut") for t in result.cuts()])
    _table(result, spans)
    summary = {"clip": clip, "scale": scale, "fps": result.fps, "frames": len(result.scores), "hr": result.hr,
               "lr": result.lr, "model": model,
               "sr": {"y_psnr_db": round(result.mean("sr_psnr"), 4), "y_ssim": round(result.mean("sr_ssim"), 6)},
               "bicubic": {"y_psnr_db": round(result.mean("bicubic_psnr"), 4),
                           "y_ssim": round(result.mean("bicubic_ssim"), 6)},
               "gain_db": round(result.mean("sr_psnr") - result.mean("bicubic_psnr"), 4),
               "ssim_gain": round(result.mean("sr_ssim") - result.mean("bicubic_ssim"), 6),
               "scene_cuts": [round(t, 3) for t in result.cuts()],
               "outputs": {"lr": str(lr_path), **{k: str(v) for k, v in outputs.items()}, "plot": str(plot_path)},
               "per_frame": [vars(score) for score in result.scores]}
    emit_json(summary)
    log.info("%d frames: SR %+.2f dB over bicubic (%.2f against %.2f dB); plot %s", len(result.scores),
             summary["gain_db"], summary["sr"]["y_psnr_db"], summary["bicubic"]["y_psnr_db"], plot_path)


def _train(clip: str, lr: str, spool_dir: Path, scale: int, max_seconds: float, duration: float | None,
           device: str, factory) -> tuple:
    """Train F-EDSR on the clip and its low-res stream into ``spool_dir``: (upscaler, model summary)."""
    job = ClipJob(model=ModelSpec(arch=archs.for_task(archs.UPSCALE)[0], scale=scale),
                  clip=ClipSpec(hr=clip, lr=lr, duration=duration), max_seconds=max_seconds)
    run = ClipTraining(Spool(spool_dir, create=True), job, device)
    with Progress(TextColumn("training"), BarColumn(), TimeRemainingColumn(), console=cli.console, transient=True,
                  disable=not cli.console.is_terminal) as bar:
        task = bar.add_task("train", total=1.0)
        result = run.train(lambda e: bar.update(task, completed=e.fraction))
    published = run.publish(result)
    network, info, version = loader.load_current(run.spool, archs.UPSCALE, scale)
    upscaler = factory(network, info, version)
    return upscaler, {"file": published["file"], "version": published["version"], "trained": True,
                      "gain_db": published["gain_db"], "train_seconds": published["train_seconds"]}


def _table(result: Evaluation, spans: list[tuple[int, dict[str, float]]]) -> None:
    span = spans[1][0] - spans[0][0] if len(spans) > 1 else 1
    table = Table("stream time", "SR Y-PSNR", "bicubic", "gain", "SR Y-SSIM", "bicubic", title="sr-eval")
    for start, m in spans:
        table.add_row(f"{start}-{start + span} s", f"{m['sr_psnr']:.2f}", f"{m['bicubic_psnr']:.2f}",
                      f"{m['sr_psnr'] - m['bicubic_psnr']:+.2f}", f"{m['sr_ssim']:.4f}", f"{m['bicubic_ssim']:.4f}")
    sr, plain = result.mean("sr_psnr"), result.mean("bicubic_psnr")
    table.add_row("all", f"{sr:.2f}", f"{plain:.2f}", f"{sr - plain:+.2f}", f"{result.mean('sr_ssim'):.4f}",
                  f"{result.mean('bicubic_ssim'):.4f}", style="bold")
    cli.console.print(table)


main = cli.entry_point(command)
