"""sr-train: train an F-EDSR model on a recorded clip and publish it to the spool (offline mode)."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import click
import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from .. import archs, cli, degrade, modelfile, video
from ..errors import InputError, UsageError
from ..spool import Spool
from ..training import PairSet, TrainConfig, train
from ..upscale import network_planes

log = logging.getLogger("srtools.train")
# Chosen from benchmarks/bench_inference.py and bench_quality.py: see the README's benchmark tables.
DEFAULT_CHANNELS = 16
DEFAULT_BLOCKS = 4


def load_pairs(hr_source: str, lr_source: str, scale: int, color: str, max_frames: int,
               hr_section: dict, lr_section: dict) -> tuple[PairSet, float]:
    """Decode the HR and LR clips in lockstep into at most ``max_frames`` evenly spaced pairs.

    Args:
        hr_section / lr_section: ``start`` and ``duration`` (seconds or None) of each clip.

    Returns:
        (pairs, HR frame rate).
    """
    keep: list[tuple[np.ndarray, np.ndarray]] = []
    stride = 1
    with video.open_source(hr_source, vf=degrade.crop_filter(scale), **hr_section) as hr_reader, \
            video.open_source(lr_source, **lr_section) as lr_reader:
        hh, lh = hr_reader.header, lr_reader.header
        if (lh.width * scale, lh.height * scale) != (hh.width, hh.height):
            raise InputError(f"{lr_source}: {lh.width}x{lh.height} is not {hh.width}x{hh.height} / {scale}")
        index = 0
        while True:
            hr, lr = hr_reader.read(), lr_reader.read()
            if hr is None or lr is None:
                if (hr is None) != (lr is None):
                    raise InputError(f"{lr_source}: not frame-aligned with {hr_source} "
                                     f"(frame counts differ after {index} frames)")
                break
            if index % stride == 0:
                keep.append((network_planes(lr, color), network_planes(hr, color)))
                if len(keep) >= 2 * max_frames:  # bounded memory: halve the density, keep even spacing
                    keep, stride = keep[::2], stride * 2
            index += 1
    if not keep:
        raise InputError(f"{hr_source}: no frames in the selected section")
    if len(keep) > max_frames:
        keep = [keep[i] for i in np.linspace(0, len(keep) - 1, max_frames).round().astype(int)]
    return PairSet(np.stack([p[0] for p in keep]), np.stack([p[1] for p in keep])), float(hh.fps)


@cli.command("sr-train", epilog="See also: sr-serve(1), srtools-spool(5).")
@cli.spool_option(required=True)
@click.option("--arch", type=click.Choice(archs.for_task(archs.UPSCALE)), default=archs.for_task(archs.UPSCALE)[0],
              show_default=True, help="Architecture to train (see srtools-spool(5) for what each does).")
@click.option("--hr", "hr_source", required=True, metavar="CLIP",
              help="High-resolution clip (anything ffmpeg reads, or Y4M): the training targets.")
@click.option("--lr", "lr_source", metavar="CLIP",
              help="Frame-aligned low-resolution recording of the same clip (e.g. what the server "
                   "received). Default: made from --hr by area downscale + H.264 (see --crf).")
@cli.scale_option
@click.option("--max-seconds", type=click.FloatRange(1, None), default=180, show_default=True,
              help="Training time budget, decoding not counted (the learning-rate schedule is fitted to it).")
@click.option("--start", type=click.FloatRange(0, None), help="Use the clip from this second.")
@click.option("--duration", type=click.FloatRange(0, None, min_open=True),
              help="Use this many seconds of the clip.")
@click.option("--max-frames", type=click.IntRange(2, None), default=300, show_default=True,
              help="At most this many evenly spaced frame pairs are kept in memory.")
@click.option("--crf", type=click.IntRange(0, 51), default=degrade.DEFAULT_CRF, show_default=True,
              help="x264 CRF of the default degradation.")
@click.option("--channels", type=click.IntRange(1, 256), default=DEFAULT_CHANNELS, show_default=True,
              help="F-EDSR feature channels.")
@click.option("--blocks", type=click.IntRange(0, 64), default=DEFAULT_BLOCKS, show_default=True,
              help="F-EDSR residual blocks.")
@click.option("--color", type=click.Choice(modelfile.COLOR_MODES), default="y", show_default=True,
              help="y: luma through the network, chroma bicubic; yuv: all three planes.")
@click.option("--init", "init_from", metavar="current|FILE",
              help="Start from the spool's current model ('current') or a model file instead of "
                   "from bicubic; its architecture settings are kept.")
@click.option("--patch", type=click.IntRange(8, 256), default=32, show_default=True, help="LR patch size.")
@click.option("--batch", type=click.IntRange(1, 1024), default=16, show_default=True, help="Patches per step.")
@click.option("--learning-rate", type=click.FloatRange(0, 1, min_open=True), default=1e-3, show_default=True,
              help="Peak Adam learning rate (cosine decay over the time budget).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@cli.device_option
def command(spool: str, arch: str, hr_source: str, lr_source: str | None, scale: int, max_seconds: float,
            start: float | None, duration: float | None, max_frames: int, crf: int, channels: int, blocks: int,
            color: str, init_from: str | None, patch: int, batch: int, learning_rate: float, seed: int,
            device: str) -> None:
    """Train F-EDSR on a recorded clip and publish the best model to the spool.

    HR frames are the targets; LR inputs come from --lr or from the default degradation of the
    HR clip (ffmpeg area downscale, then libx264 at --crf), so the model also learns to undo
    compression artefacts. Every tenth frame (at most eight) is held out; the model with the
    best Y-PSNR on them is published atomically as the spool's next version
    (srtools-spool(5)). A JSON summary of the published model goes to stdout; progress to
    stderr.
    """
    device = cli.resolve_device(device)
    spool_dir = Spool(spool, create=True)
    model, hparams = _initial_model(spool_dir, arch, init_from, scale, color, channels, blocks)
    hr_section = lr_section = {"start": start, "duration": duration}
    with tempfile.TemporaryDirectory(prefix="sr-train-") as tmp:
        if lr_source is None:
            lr_source = str(Path(tmp) / "lr.mp4")
            log.info("degrading %s: area x1/%d + libx264 crf %d", hr_source, scale, crf)
            degrade.make_lr(hr_source, lr_source, scale, crf=crf, **hr_section)
            lr_section = {}  # the degraded file holds just the section
        pairs, fps = load_pairs(hr_source, lr_source, scale, color, max_frames, hr_section, lr_section)
    train_pairs, val_pairs = pairs.split()
    log.info("%d training and %d held-out frame pairs, LR %dx%d, model %s %s", len(train_pairs),
             len(val_pairs), pairs.lr.shape[-1], pairs.lr.shape[-2], arch, hparams)
    config = TrainConfig(max_seconds=max_seconds, patch=min(patch, *pairs.lr.shape[-2:]), batch=batch,
                         learning_rate=learning_rate, eval_every=max(5.0, max_seconds / 12), seed=seed)
    with Progress(TextColumn("training"), BarColumn(), TextColumn("{task.fields[status]}"),
                  TimeRemainingColumn(), console=cli.console, transient=True,
                  disable=not cli.console.is_terminal) as bar:
        task = bar.add_task("train", total=1.0, status="")

        def report(fraction: float, step: int, psnr: float, best: float) -> None:
            bar.update(task, completed=fraction, status=f"step {step}  val {psnr:.2f} dB  best {best:.2f} dB")
            log.debug("%.0f%% step %d val %.3f best %.3f", 100 * fraction, step, psnr, best)

        result = train(model, train_pairs, val_pairs, config, device, report)
    info = modelfile.ModelInfo(arch=arch, hparams=hparams, scale=scale, color=color,
                               source=Path(hr_source).name, val_psnr_db=round(result.val_psnr_db, 4),
                               gain_db=round(result.gain_db, 4), train_seconds=round(result.seconds, 1),
                               steps=result.steps)
    pointer = spool_dir.publish(model, info)
    log.info("published v%d: held-out Y-PSNR %.2f dB, %+.2f dB over bicubic, %d steps in %.0f s",
             pointer.version, result.val_psnr_db, result.gain_db, result.steps, result.seconds)
    if result.gain_db <= 0:
        log.warning("the model does not beat bicubic on the held-out frames")
    summary = {"version": pointer.version, "file": str(pointer.path), "val_psnr_db": info.val_psnr_db,
               "bicubic_psnr_db": round(result.bicubic_psnr_db, 4), "gain_db": info.gain_db,
               "steps": result.steps, "train_seconds": info.train_seconds, "frames": len(pairs), "fps": fps}
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")


def _initial_model(spool: Spool, arch: str, init_from: str | None, scale: int, color: str, channels: int,
                   blocks: int) -> tuple[torch.nn.Module, dict]:
    if init_from is None:
        hparams = {"scale": scale, "channels": channels, "blocks": blocks, "in_channels": 1 if color == "y" else 3}
        return archs.build(arch, hparams), hparams
    if init_from == "current":
        pointer = spool.current(arch, scale)
        if pointer is None:
            raise UsageError(f"--init current: the spool has no {arch} x{scale} model yet")
        init_from = str(pointer.path)
    model, info = modelfile.load(init_from, scale=scale, arch=arch)
    if info.color != color:
        raise UsageError(f"--init {init_from}: colour mode {info.color}, but --color {color}")
    return model, info.hparams


main = cli.entry_point(command)
