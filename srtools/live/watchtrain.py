"""Online training on the pool (``sr-train --watch``): when to train, on what, and when to stop.

The trainer owns a spool (one per spool: ``SPOOL/trainer.lock``, an exclusive ``flock`` the kernel
releases if it dies). What starts a training *session* depends on the mode:

- ``adaptive`` (the design): a training request from sr-monitor (``SPOOL/requests/``), or no model
  yet. The session stops by the design's rule (:class:`~.stoprule.StopRule`: TH = min(THs,
  alpha * THp)) or at its budget; requests that arrived meanwhile are then dropped (the monitor
  asks again if the new model still departs from the trend).
- ``continuous``: sessions back to back, each to its budget, on the pool as it is at its start.
- ``once``: one session, as soon as the pool has enough pairs, then idle.

A session trains on the pool's recent pairs: up to ``max_pairs`` drawn without replacement with
weights halving every ``half_life_s`` seconds of stream time back from the newest pair, so a new
scene dominates within seconds while older content is not forgotten at once. Only pairs of the
newest pair's size take part: a camera that changes resolution starts a new scene, and the pairs
of the old size leave the pool as it turns over. Every tenth of them is held out
(:meth:`srtools.training.PairSet.split`) for the gain that the stopping rule and the published
files report. It warm-starts from the spool's current upscaling model (a new F-EDSR, which starts
as bicubic, when there is none) with the recipe and the compute clock of offline ``sr-train``
(:class:`srtools.training.Trainer`). Each held-out improvement of at least ``publish_min_db`` is
published atomically (:meth:`srtools.spool.Spool.publish`), so a trainer killed at any moment
leaves the last good model current.

TCSR (the server's second stage) trains in the compute the F-EDSR sessions leave: when no F-EDSR
session is due (in adaptive and once modes: after a session has stopped by the rule, between
requests), a *refine session* fine-tunes TCSR on the pool's runs of consecutive frames (up to
``max_runs``, the newest, of the newest run's size), upscaled by the current F-EDSR as the server
upscales them, against their HR frames (:class:`srtools.training.RefineRecipe`). It starts from
the spool's current TCSR model, else a generic TCSR shipped for the current F-EDSR's scale
(:mod:`srtools.generic`, where one ships), else a new one (the identity), its correction first
scaled to the strength that scores best on the session's held-out runs (a generic TCSR may
correct this content too hard: :func:`srtools.training.calibrate_strength`), and is never worse
than the identity on its held-out runs. A training request ends it at once (publishing what it
gained): F-EDSR's answer to a scene change is never delayed by more than one slice of
:meth:`OnlineTrainer.tick`. A refine session runs again when its material changed: a new F-EDSR
model, or ``min_runs`` new runs.

A pool that cannot be trained on (damaged files, too few pairs of one size) is reported and
waited out: the daemon stays up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .. import archs, generic, loader, modelfile
from ..errors import BusyError, ModelError, SrError
from ..modelfile import ModelInfo
from ..spool import Spool
from ..training import (
    Evaluation,
    PairSet,
    RefineRecipe,
    TrainConfig,
    Trainer,
    UpscaleRecipe,
    calibrate_strength,
    upscale_planes,
)
from ..upscale import network_planes
from .monitor import REQUESTS_DIR
from .pool import RUN, Pair, Pool, Run
from .stoprule import StopRule

log = logging.getLogger("srtools.watchtrain")
MODES = ("adaptive", "continuous", "once")
REFINE_SECONDS = 180.0  # compute seconds of one TCSR session
LOCK_NAME = "trainer.lock"


@contextlib.contextmanager
def spool_lock(spool: Spool) -> Iterator[None]:
    """Hold ``SPOOL/trainer.lock`` exclusively, or raise :class:`BusyError` at once."""
    path = spool.root / LOCK_NAME
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise BusyError(f"{spool.root}: another online trainer (pid {holder}) holds {LOCK_NAME}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


@dataclasses.dataclass
class WatchConfig:
    """What the online trainer does; see the module docstring.

    Attributes:
        mode: adaptive, continuous or once.
        session: budget and optimiser of one session (its schedule runs over the session budget).
        stop: the stopping rule (adaptive mode).
        min_pairs: pairs the pool needs before a session starts.
        max_pairs: pairs a session trains on at most.
        half_life_s: stream seconds over which a pair's weight halves.
        patch: LR training patch size.
        publish_min_db: held-out improvement over the last published model worth a new version.
        min_steps: steps a session runs before the stopping rule is consulted: a starved trainer's
            first evaluations (a flat curve at 0 dB) would otherwise predict a plateau at once.
        refit_s: compute seconds between two fits of the rule's MLP (a fit costs about a second of
            CPU; the threshold is checked against the last prediction at every evaluation).
        channels / blocks: F-EDSR's size when there is no current model (None: the defaults).
        refine: train TCSR in the compute the F-EDSR sessions leave (see the module docstring).
        refine_session: budget of one refine session.
        min_runs / max_runs: runs a refine session needs / trains on at most.
        refine_patch: TCSR's training patch size, at output resolution.
    """

    mode: str = "adaptive"
    session: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(max_seconds=120, eval_every=5))
    stop: StopRule = dataclasses.field(default_factory=StopRule)
    min_pairs: int = 8
    max_pairs: int = 64
    half_life_s: float = 20.0
    patch: int = 32
    publish_min_db: float = 0.05
    min_steps: int = 100
    refit_s: float = 10.0
    channels: int | None = None
    blocks: int | None = None
    refine: bool = True
    refine_session: TrainConfig = dataclasses.field(default_factory=lambda: session_budget(REFINE_SECONDS))
    min_runs: int = 4
    max_runs: int = 24
    refine_patch: int = 96

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


def session_budget(max_seconds: float, batch: int = 16, learning_rate: float = 1e-3, seed: int = 0) -> TrainConfig:
    """One session's budget, with the held-out score measured every 24th of it, from 2 to 10 s apart:
    the stopping rule fits its curve to those points."""
    return TrainConfig(max_seconds=max_seconds, batch=batch, learning_rate=learning_rate,
                       eval_every=max(2.0, min(10.0, max_seconds / 24)), seed=seed)


def recent_pairs(pool: Pool, max_pairs: int, half_life_s: float, rng: np.random.Generator) -> list[Pair]:
    """Up to ``max_pairs`` pool pairs of the newest pair's size, recent ones weighted (see the module
    docstring), in stream order."""
    pairs = _of_newest_size([pair for pair in map(_read_or_none(pool.read), pool.sequence()) if pair is not None],
                            lambda pair: pair.hr.y.shape)
    if len(pairs) > max_pairs:
        age = pairs[-1].t - np.array([pair.t for pair in pairs])
        weights = 0.5 ** (age / half_life_s)
        chosen = rng.choice(len(pairs), max_pairs, replace=False, p=weights / weights.sum())
        pairs = [pairs[i] for i in sorted(chosen)]
    return pairs


def recent_runs(pool: Pool, max_runs: int) -> list[Run]:
    """The newest ``max_runs`` runs of the newest run's frame size, in stream order."""
    runs = [run for run in map(_read_or_none(pool.read_run), pool.sequence(RUN)) if run is not None]
    return _of_newest_size(runs, lambda run: run.hr.shape[1:])[-max_runs:]


def _of_newest_size(items: list, size: Callable) -> list:
    """The items of the newest item's frame size (a camera that changed resolution started a new scene)."""
    if items and any(size(item) != size(items[-1]) for item in items):
        newest = size(items[-1])
        left = [item for item in items if size(item) == newest]
        log.info("training on the %d of %d items of the newest size %dx%d", len(left), len(items), newest[1],
                 newest[0])
        return left
    return items


def _read_or_none(read: Callable[[int], Any]) -> Callable[[int], Any]:
    def read_or_none(seq: int) -> Any:
        try:
            return read(seq)  # None: evicted meanwhile
        except SrError as exc:
            log.warning("skipped: %s", exc)
            return None
    return read_or_none


@dataclasses.dataclass
class Event:
    """One JSON line of sr-train --watch: a session starting or ending, or a model published."""

    event: str
    fields: dict

    def as_dict(self) -> dict:
        return {"event": self.event, **self.fields}


class TrainingSession:
    """What every session does: train by slices, publish each held-out improvement of at least
    ``publish_min_db`` over what the server has, and say how it ended.

    Subclasses set up :attr:`trainer`, :attr:`arch`, :attr:`hparams` and :attr:`published_psnr` (the
    held-out score of what the server already has), then call :meth:`_started`.
    """

    source = "pool"  # the published files' source

    def __init__(self, spool: Spool, scale: int, config: WatchConfig, emit: Callable[[Event], None]):
        self.spool, self.scale, self.config, self.emit = spool, scale, config, emit
        self.trainer: Trainer
        self.arch: str
        self.hparams: dict
        self.published_psnr: float
        self.published: list[int] = []
        self.stop_reason: str | None = None
        self.summary: dict = {}

    def _started(self, fields: dict) -> None:
        self.emit(Event("session", {"arch": self.arch, **fields}))
        if self.trainer.best_psnr >= self.published_psnr + self.config.publish_min_db:
            self._publish()  # a start that beats what the server has (a generic model): it gets it now

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    def run(self, seconds: float = math.inf, steps: int | None = None) -> None:
        """Train for up to ``seconds`` compute seconds / ``steps`` steps, or until the session ends."""
        self.trainer.run(seconds, steps, progress=self._evaluated)
        if self.trainer.done and not self.finished:
            self.finish("budget")

    def _evaluated(self, evaluation: Evaluation) -> bool:
        """Publish an improvement; True ends the run (a subclass's stopping rule)."""
        if evaluation.best_psnr >= self.published_psnr + self.config.publish_min_db:
            self._publish()
        return False

    def _publish(self) -> None:
        trainer = self.trainer
        model = archs.build(self.arch, self.hparams)
        model.load_state_dict(trainer.best_state)
        info = ModelInfo(arch=self.arch, hparams=self.hparams, scale=self.scale, color="y", source=self.source,
                         val_psnr_db=round(trainer.best_psnr, 4), gain_db=round(trainer.gain_db, 4),
                         train_seconds=round(trainer.seconds, 1), steps=trainer.steps)
        pointer = self.spool.publish(model, info)
        self.published_psnr = trainer.best_psnr
        self.published.append(pointer.version)
        self.emit(Event("published", {"arch": self.arch, "version": pointer.version, "gain_db": info.gain_db,
                                      "seconds": info.train_seconds, "steps": trainer.steps}))

    def finish(self, reason: str, **extra) -> None:
        """End the session, publishing the last small improvement too."""
        if self.trainer.best_psnr > self.published_psnr:
            self._publish()
        self.stop_reason = reason
        self.summary = {"arch": self.arch, "reason": reason, "seconds": round(self.trainer.seconds, 2),
                        "steps": self.trainer.steps, "gain_db": round(self.trainer.gain_db, 4),
                        "published": self.published, **extra}


class UpscaleSession(TrainingSession):
    """One F-EDSR training run on a snapshot of the pool's pairs, warm-started from the spool's current
    model, stopped by the design's rule in adaptive mode."""

    def __init__(self, spool: Spool, scale: int, pairs: list[Pair], config: WatchConfig, reason: str,
                 device: torch.device, rng: np.random.Generator, emit: Callable[[Event], None]):
        super().__init__(spool, scale, config, emit)
        start = Start.choose(spool, scale, config)
        self.arch, self.hparams, self.start_version = start.arch, start.hparams, start.version
        planes = PairSet(np.stack([network_planes(p.lr, "y") for p in pairs]),
                         np.stack([network_planes(p.hr, "y") for p in pairs]))
        train_pairs, val_pairs = planes.split()
        recipe = UpscaleRecipe(train_pairs, val_pairs, min(config.patch, *planes.lr.shape[-2:]), device, rng)
        fallback = None if start.kind == "bicubic" else archs.build(self.arch, self.hparams)
        self.trainer = Trainer(start.model, recipe, config.session, device, fallback)
        self.points: tuple[list[float], list[float]] = ([0.0], [self.trainer.gain_db])
        # What the server already has: the current model, or bicubic (a generic start is not published yet).
        self.published_psnr = recipe.baseline_psnr if self.start_version is None else self.trainer.start_psnr
        self._predicted: float | None = None  # THp of the last fit, at compute second _fitted_at
        self._fitted_at: float | None = None
        self._started({"reason": reason, "pairs": len(pairs), "t_first": round(pairs[0].t, 3),
                       "t_last": round(pairs[-1].t, 3), "start": start.kind, "start_model": self.start_version,
                       "start_gain_db": round(self.trainer.gain_db, 4)})

    def _evaluated(self, evaluation: Evaluation) -> bool:
        super()._evaluated(evaluation)
        seconds, gains = self.points
        seconds.append(evaluation.seconds)
        gains.append(evaluation.best_psnr - self.trainer.recipe.baseline_psnr)
        if self.config.mode != "adaptive" or evaluation.step < self.config.min_steps:
            return False
        rule = self.config.stop
        if self._fitted_at is None or seconds[-1] - self._fitted_at >= self.config.refit_s:
            self._predicted, self._fitted_at = rule.predicted_db(seconds, gains), seconds[-1]
        predicted = self._predicted
        stop, threshold = rule.decide(gains[-1], predicted)
        if stop:
            reason = "threshold" if gains[-1] >= threshold else "plateau"
            self.finish(reason, threshold_db=round(threshold, 4),
                        predicted_db=None if predicted is None else round(predicted, 4))
        return stop


class RefineSession(TrainingSession):
    """One TCSR fine-tuning run on the pool's runs, as the current F-EDSR upscales them (see the module
    docstring).

    Args:
        upscaler: (network, info, version) of the current F-EDSR.
        runs: the runs to train on, one frame size.
    """

    source = "pool runs"

    def __init__(self, spool: Spool, scale: int, upscaler: tuple[torch.nn.Module, ModelInfo, int], runs: list[Run],
                 config: WatchConfig, device: torch.device, rng: np.random.Generator, emit: Callable[[Event], None]):
        super().__init__(spool, scale, config, emit)
        model, self.hparams, kind, version = self._start(spool, scale)
        self.arch = archs.for_task(archs.REFINE)[0]
        network = upscaler[0]
        sequences = [(upscale_planes(network, run.lr[:, None], scale, device), run.hr[:, None]) for run in runs]
        recipe = RefineRecipe(sequences, model.k, config.refine_patch, device, rng)
        # Strength 0 is the identity: calibration already makes the start no worse than F-EDSR's output.
        scores = calibrate_strength(model, recipe) if kind != "identity" else {1.0: recipe.baseline_psnr}
        self.trainer = Trainer(model, recipe, config.refine_session, device)
        # What the server runs: the current TCSR at full strength, else nothing (sr-tcsr runs a generic
        # TCSR only when asked to). A start that beats it after calibration is published at once.
        self.published_psnr = recipe.baseline_psnr if version is None else scores[1.0]
        self._started({"reason": "idle", "runs": len(runs), "frames": sum(len(run.hr) for run in runs),
                       "upscaler": upscaler[2], "start": kind, "start_model": version,
                       "start_strength": next(iter(scores)), "start_gain_db": round(self.trainer.gain_db, 4)})

    @staticmethod
    def _start(spool: Spool, scale: int) -> tuple[torch.nn.Module, dict, str, int | None]:
        """(TCSR, its hparams, what it is, its version): the spool's current TCSR, else the generic one,
        else a new one."""
        arch = archs.for_task(archs.REFINE)[0]
        try:
            current = loader.load_current(spool, archs.REFINE, scale)
        except ModelError as exc:
            log.warning("not starting TCSR from the current model: %s", exc)
            current = None
        if current is not None and current[1].color == "y":
            return current[0], current[1].hparams, "current", current[2]
        hparams = archs.default_hparams(arch)
        path = generic.find(arch, hparams, scale, "y")
        if path is not None:
            return modelfile.load(path, scale=scale, arch=arch)[0], hparams, "generic", None
        return archs.build(arch, hparams), hparams, "identity", None


@dataclasses.dataclass
class Start:
    """What a session starts from: the spool's current upscaling model, else the generic F-EDSR
    (srtools.generic) when one ships for the size asked for, else a new F-EDSR (bicubic)."""

    model: torch.nn.Module
    arch: str
    hparams: dict
    version: int | None  # the current model's, else None
    kind: str  # "current", "generic" or "bicubic"

    @classmethod
    def choose(cls, spool: Spool, scale: int, config: WatchConfig) -> Start:
        try:
            current = loader.load_current(spool, archs.UPSCALE, scale)
        except ModelError as exc:
            log.warning("not starting from the current model: %s", exc)
            current = None
        if current is not None and current[1].color == "y":
            model, info, version = current
            return cls(model, info.arch, info.hparams, version, "current")
        if current is not None:
            log.warning("not starting from the current model v%d: a %s model; online training trains luma",
                        current[2], current[1].color)
        arch = archs.for_task(archs.UPSCALE)[0]
        size = {name: archs.default_hparam(arch, name) if value is None else value
                for name, value in (("channels", config.channels), ("blocks", config.blocks))}
        hparams = {"scale": scale, **size, "in_channels": 1}
        path = generic.find(arch, hparams, scale, "y")
        if path is not None:
            return cls(modelfile.load(path, scale=scale, arch=arch)[0], arch, hparams, None, "generic")
        return cls(archs.build(arch, hparams), arch, hparams, None, "bicubic")


class OnlineTrainer:
    """The watch loop's state, advanced by :meth:`tick` (by the daemon, or by a stream-time simulation).

    Args:
        spool: the spool with the pool, the requests and the models.
        scale: the upscaling factor.
        config: see :class:`WatchConfig`.
        emit: receives each :class:`Event`.
    """

    def __init__(self, spool: Spool, scale: int, config: WatchConfig, device: str = "cpu",
                 emit: Callable[[Event], None] = lambda event: None, seed: int = 0):
        self.spool, self.scale, self.config, self.emit = spool, scale, config, emit
        self.pool = Pool(spool.root)
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.session: UpscaleSession | None = None
        self.refining: RefineSession | None = None
        self.sessions = 0  # F-EDSR sessions started
        self.steps = 0  # training steps and compute seconds of every session so far
        self.seconds = 0.0
        self._refined: tuple | None = None  # the material (F-EDSR version, newest run) of the last refine session
        self._cannot_train: str | None = None  # the last reason the pool could not be trained on, said once

    def pending_requests(self) -> list[Path]:
        return sorted((self.spool.root / REQUESTS_DIR).glob("request-*.json"))

    def _reason_to_start(self) -> str | None:
        """Why an F-EDSR session should start now (mode and spool state), or None."""
        mode = self.config.mode
        if mode == "continuous":
            return "continuous"
        if mode == "once":
            return None if self.sessions else "once"
        requests = self.pending_requests()
        if requests:
            return f"request {requests[-1].stem.split('-')[1].lstrip('0') or '0'}"
        if loader.current_pointer(self.spool, archs.UPSCALE, self.scale) is None and not self.sessions:
            return "no model"
        return None

    def tick(self, seconds: float = math.inf, steps: int | None = None) -> bool:
        """Start a session if one is due and the pool has what it needs, then train within the budget:
        F-EDSR first (a due F-EDSR session ends a refine session), TCSR in the time left.

        Returns:
            Whether there was anything to do (False: idle, the caller may sleep).
        """
        try:
            if self.session is None and not self._start_upscale():
                return self._tick_refine(seconds, steps)
            self._run(self.session, seconds, steps)
        except (SrError, ValueError) as exc:  # a pool that cannot be trained on: say why (once), stay up
            self.session = self.refining = None
            if str(exc) != self._cannot_train:
                log.warning("cannot train: %s; waiting for the pool to change", exc)
            self._cannot_train = str(exc)
            return False
        self._cannot_train = None
        if self.session.finished:
            # Requests that came during the session are dropped too: it trained on the newest pool.
            requests = self.pending_requests()
            for path in requests:
                path.unlink(missing_ok=True)
            self.emit(Event("stopped", {**self.session.summary, "requests_dropped": len(requests)}))
            self.session = None
        return True

    def _start_upscale(self) -> bool:
        """Start the F-EDSR session that is due, ending a refine session first; False when none is due or
        the pool is too small yet."""
        reason = self._reason_to_start()
        if reason is None:
            return False
        pairs = recent_pairs(self.pool, self.config.max_pairs, self.config.half_life_s, self.rng)
        if len(pairs) < self.config.min_pairs:
            return False  # a request with an (almost) empty pool waits for pairs
        if self.refining is not None:
            self.refining.finish("preempted")
            self.emit(Event("stopped", self.refining.summary))
            self.refining = None
        self.session = UpscaleSession(self.spool, self.scale, pairs, self.config, reason, self.device, self.rng,
                                      self.emit)
        self.sessions += 1
        return True

    def _tick_refine(self, seconds: float, steps: int | None) -> bool:
        """Train TCSR when there is no F-EDSR session to run (see the module docstring)."""
        if self.refining is None:
            if not self.config.refine or self.config.mode == "continuous":
                return False
            # Cheap checks first (a directory listing, a pointer): the runs are read only for a session.
            pointer = loader.current_pointer(self.spool, archs.UPSCALE, self.scale)
            seqs = self.pool.sequence(RUN)
            if pointer is None or len(seqs) < self.config.min_runs:
                return False
            material = (pointer.version, seqs[-1])
            if self._refined is not None and material[0] == self._refined[0] \
                    and material[1] - self._refined[1] < self.config.min_runs:
                return False  # nothing new since the last refine session
            self._refined = material
            upscaler = loader.load_current(self.spool, archs.UPSCALE, self.scale)
            runs = recent_runs(self.pool, self.config.max_runs)
            if upscaler is None or len(runs) < self.config.min_runs:
                return False
            self.refining = RefineSession(self.spool, self.scale, upscaler, runs, self.config, self.device, self.rng,
                                          self.emit)
        self._run(self.refining, seconds, steps)
        if self.refining.finished:
            self.emit(Event("stopped", self.refining.summary))
            self.refining = None
        return True

    def _run(self, session: TrainingSession, seconds: float, steps: int | None) -> None:
        steps_before, seconds_before = session.trainer.steps, session.trainer.seconds
        session.run(seconds, steps)
        self.steps += session.trainer.steps - steps_before
        self.seconds += session.trainer.seconds - seconds_before


def watch_spool(spool: Spool, scale: int, config: WatchConfig, device: str, emit: Callable[[Event], None],
                poll_interval: float = 1.0, seed: int = 0) -> None:
    """Run the online trainer of ``spool`` until interrupted (sr-train --watch), holding its lock
    (:func:`spool_lock`) and sleeping ``poll_interval`` seconds whenever there is nothing to do.

    Raises:
        BusyError: another trainer holds the spool.
    """
    with spool_lock(spool):
        trainer = OnlineTrainer(spool, scale, config, device, emit, seed)
        log.info("watching %s (mode %s)", spool.root, config.mode)
        while True:
            if not trainer.tick(seconds=poll_interval):
                time.sleep(poll_interval)
