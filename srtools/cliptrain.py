"""Training on a recorded clip (``sr-train`` without ``--watch``): the starting model, the pairs, the
recipe, the run and the published model.

:class:`ClipTraining` starts from the model :func:`initial_model` picks, decodes the clip into
pairs (the LR side from a recording given, else from the default degradation of the HR clip),
trains F-EDSR on evenly spaced pairs (:class:`srtools.training.UpscaleRecipe`), or TCSR on the first
consecutive frames upscaled by the spool's current upscaling model
(:class:`srtools.training.RefineRecipe`), and publishes the best model on the held-out frames as the
spool's next version. A new model (F-EDSR: exact bicubic; TCSR: the identity) is scored beside any
other start, so the result is never worse than it. The online counterpart, training on the pool of
the push side, is :mod:`srtools.live.watchtrain`.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import archs, degrade, generic, loader, modelfile
from .errors import ModelError, UsageError
from .spool import Spool
from .training import (
    Evaluation,
    PairSet,
    RefineRecipe,
    TrainConfig,
    TrainResult,
    UpscaleRecipe,
    calibrate_strength,
    load_pairs,
    train,
    upscale_planes,
)

log = logging.getLogger("srtools.cliptrain")


@dataclasses.dataclass
class ModelSpec:
    """What is trained (sr-train's --arch, --scale, --color, --channels, --blocks, --neighbours, --init).

    Attributes:
        channels / blocks / neighbours: sizes of a new model; None: the architecture's defaults.
        init: what training starts from: auto, current, generic, scratch or a model file (see
            :func:`initial_model`).
    """

    arch: str
    scale: int = 2
    color: str = "y"
    channels: int | None = None
    blocks: int | None = None
    neighbours: int | None = None
    init: str = "auto"

    @property
    def refines(self) -> bool:
        """A TCSR (task ``refine``), trained on the upscaler's output, rather than an upscaler."""
        return archs.ARCHITECTURES[self.arch].task == archs.REFINE

    def hparams(self) -> dict:
        """Constructor arguments of a new model: the sizes given, else the architecture's defaults."""
        def pick(name: str, value: int | None) -> int:
            return archs.default_hparam(self.arch, name) if value is None else value

        if self.refines:
            return {"k": pick("k", self.neighbours), "channels": pick("channels", self.channels),
                    "flow_channels": pick("flow_channels", self.channels),
                    "flow_blocks": pick("flow_blocks", self.blocks), "in_channels": 1,
                    "grid": archs.default_hparam(self.arch, "grid")}
        return {"scale": self.scale, "channels": pick("channels", self.channels),
                "blocks": pick("blocks", self.blocks), "in_channels": 1 if self.color == "y" else 3}


@dataclasses.dataclass
class ClipSpec:
    """What it is trained on (sr-train's --hr, --lr, --start, --duration, --max-frames, --crf).

    Attributes:
        hr: the high-resolution clip (anything ffmpeg reads, or Y4M): the targets.
        lr: a frame-aligned low-resolution recording of it; None: made from ``hr`` by the default
            degradation (:mod:`srtools.degrade`) at ``crf``.
        start / duration: the section of the clip used, in seconds (None: from the start, to the end).
        max_frames: pairs kept (see :func:`srtools.training.load_pairs`).
    """

    hr: str
    lr: str | None = None
    start: float | None = None
    duration: float | None = None
    max_frames: int = 300
    crf: int = degrade.DEFAULT_CRF

    def load(self, scale: int, color: str, consecutive: bool) -> tuple[PairSet, float]:
        """(pairs, HR frame rate) of the section: evenly spaced, or the first ones when ``consecutive``."""
        section = {"start": self.start, "duration": self.duration}
        if self.lr is not None:
            return load_pairs(self.hr, self.lr, scale, color, self.max_frames, section, section, consecutive)
        with tempfile.TemporaryDirectory(prefix="sr-train-") as tmp:
            lr = str(Path(tmp) / "lr.mp4")
            log.info("degrading %s: area x1/%d + libx264 crf %d", self.hr, scale, self.crf)
            degrade.make_lr(self.hr, lr, scale, crf=self.crf, **section)
            # The degraded file holds just the section.
            return load_pairs(self.hr, lr, scale, color, self.max_frames, section, {}, consecutive)


@dataclasses.dataclass
class ClipJob:
    """One training run on a clip: what is trained, on what, and the budget and optimiser.

    Attributes:
        max_seconds: training compute budget (decoding not counted).
        patch: training patch size in LR pixels (TCSR: the same area at output resolution).
    """

    model: ModelSpec
    clip: ClipSpec
    max_seconds: float = 180.0
    batch: int = 16
    learning_rate: float = 1e-3
    patch: int = 32
    seed: int = 0

    def budget(self) -> TrainConfig:
        """The budget, with the held-out score measured every twelfth of it, at least 5 s apart."""
        return TrainConfig(max_seconds=self.max_seconds, batch=self.batch, learning_rate=self.learning_rate,
                           eval_every=max(5.0, self.max_seconds / 12), seed=self.seed)


class ClipTraining:
    """sr-train on a clip in three steps: prepared here (the starting model, the pairs, the recipe),
    then :meth:`train`, then :meth:`publish`, so that a caller can show progress during training alone.

    Args:
        spool: where the model is published (and the current models are read from).
        job: what to train, on what, for how long.
        device: torch device (resolved: cpu or cuda).

    Raises:
        UsageError: ``job.model.init`` names a start that does not exist (see :func:`initial_model`).
    """

    def __init__(self, spool: Spool, job: ClipJob, device: str):
        self.spool, self.job, self.device = spool, job, device
        spec = job.model
        self.model, self.hparams, self.started_from = initial_model(spool, spec)
        self.pairs, self.fps = job.clip.load(spec.scale, spec.color, consecutive=spec.refines)
        rng = np.random.default_rng(job.seed)
        torch_device = torch.device(device)
        pairs = self.pairs
        if spec.refines:
            upscaler = loader.load_current(spool, archs.UPSCALE, spec.scale)
            if upscaler is None:
                log.warning("the spool has no x%d upscaling model yet: TCSR learns to refine bicubic output",
                            spec.scale)
            self.baseline = f"{upscaler[1].arch} v{upscaler[2]}" if upscaler else "bicubic"
            upscaled = upscale_planes(upscaler[0] if upscaler else None, pairs.lr, spec.scale, torch_device)
            self.recipe = RefineRecipe([(upscaled, pairs.hr)], self.hparams["k"], job.patch * spec.scale,
                                       torch_device, rng)
            log.info("%d consecutive frames (%d held out), %dx%d, refining %s output, model %s %s", len(pairs),
                     len(self.recipe.val_idx), pairs.hr.shape[-1], pairs.hr.shape[-2], self.baseline, spec.arch,
                     self.hparams)
        else:
            self.baseline = "bicubic"
            train_pairs, val_pairs = pairs.split()
            self.recipe = UpscaleRecipe(train_pairs, val_pairs, min(job.patch, *pairs.lr.shape[-2:]), torch_device,
                                        rng)
            log.info("%d training and %d held-out frame pairs, LR %dx%d, model %s %s", len(train_pairs),
                     len(val_pairs), pairs.lr.shape[-1], pairs.lr.shape[-2], spec.arch, self.hparams)

    def train(self, progress: Callable[[Evaluation], None] | None = None) -> TrainResult:
        """Train for the job's budget, a new model scored beside any other start (the result is never
        worse than it); ``progress`` receives each held-out evaluation."""
        spec = self.job.model
        fallback = None
        if self.started_from != "scratch":
            if spec.refines:  # strength 0, a new TCSR, is among the strengths scored
                strength, score = next(iter(calibrate_strength(self.model, self.recipe).items()))
                log.info("starting at %g of the %s TCSR's correction: held-out %+.3f dB over %s", strength,
                         self.started_from, score - self.recipe.baseline_psnr, self.baseline)
            else:
                fallback = archs.build(spec.arch, self.hparams)
        return train(self.model, self.recipe, self.job.budget(), self.device, progress, fallback)

    def publish(self, result: TrainResult) -> dict:
        """Publish the trained model as the spool's next version and return sr-train's summary: version,
        file, arch, val_psnr_db, baseline (what the model improves on: bicubic, or the upscaler whose
        output TCSR refines), baseline_psnr_db, gain_db, steps, train_seconds, frames, fps (of the HR
        clip) and start (what training started from)."""
        spec = self.job.model
        info = modelfile.ModelInfo(arch=spec.arch, hparams=self.hparams, scale=spec.scale, color=spec.color,
                                   source=Path(self.job.clip.hr).name, val_psnr_db=round(result.val_psnr_db, 4),
                                   gain_db=round(result.gain_db, 4), train_seconds=round(result.seconds, 1),
                                   steps=result.steps)
        pointer = self.spool.publish(self.model, info)
        log.info("published v%d: held-out Y-PSNR %.2f dB, %+.2f dB over %s, %d steps in %.0f s from %s",
                 pointer.version, result.val_psnr_db, result.gain_db, self.baseline, result.steps, result.seconds,
                 self.started_from)
        if result.gain_db <= 0:
            log.warning("the model does not beat %s on the held-out frames", self.baseline)
        return {"version": pointer.version, "file": str(pointer.path), "arch": spec.arch,
                "val_psnr_db": info.val_psnr_db, "baseline": self.baseline,
                "baseline_psnr_db": round(result.baseline_psnr_db, 4), "gain_db": info.gain_db,
                "steps": result.steps, "train_seconds": info.train_seconds, "frames": len(self.pairs),
                "fps": self.fps, "start": self.started_from}


def initial_model(spool: Spool, spec: ModelSpec) -> tuple[torch.nn.Module, dict, str]:
    """(model, hparams, what it is) that training starts from, by ``spec.init``: ``current``, the
    spool's current model of the architecture; ``generic``, the one shipped for this configuration
    (:mod:`srtools.generic`); ``scratch``, a new model; or a model file, whose sizes are kept.
    ``auto``: current when it has the configuration asked for, else generic when one ships, else scratch.

    Raises:
        UsageError: no such current or generic model, or a model file of another colour mode.
    """
    arch, scale, color, hparams = spec.arch, spec.scale, spec.color, spec.hparams()
    init = _auto_start(spool, spec, hparams) if spec.init == "auto" else spec.init
    if init == "scratch":
        return archs.build(arch, hparams), hparams, "scratch"
    if init == "generic":
        path = generic.find(arch, hparams, scale, color)
        if path is None:
            name = generic.file_name(arch, hparams, scale, color)
            raise UsageError(f"--init generic: no generic model ships for this configuration ({name})")
        return modelfile.load(path, scale=scale, arch=arch)[0], hparams, "generic"
    start = init
    if init == "current":
        pointer = spool.current(arch, scale)
        if pointer is None:
            raise UsageError(f"--init current: the spool has no {arch} x{scale} model yet")
        init, start = str(pointer.path), f"current v{pointer.version}"
    model, info = modelfile.load(init, scale=scale, arch=arch)
    if info.color != color:
        raise UsageError(f"--init {init}: colour mode {info.color}, but --color {color}")
    return model, info.hparams, start


def _auto_start(spool: Spool, spec: ModelSpec, hparams: dict) -> str:
    """current if the spool's current model is the configuration asked for, else generic, else scratch."""
    pointer = spool.current(spec.arch, spec.scale)
    if pointer is not None:
        try:
            info = modelfile.read_info(pointer.path)
        except ModelError as exc:
            log.warning("not starting from the current model: %s", exc)
        else:
            if info.color == spec.color and info.hparams == hparams:
                return "current"
    return "generic" if generic.find(spec.arch, hparams, spec.scale, spec.color) else "scratch"
