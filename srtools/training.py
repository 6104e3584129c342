"""Training recipes on recorded frames (F-EDSR and TCSR) around one time-budgeted loop, and pair loading.

:func:`train` runs any :class:`Recipe` (what a batch is, the loss, the held-out score) for a
time budget: Adam, a warm-up then a cosine learning-rate schedule over the budget, and the best
model on held-out frames kept. The F-EDSR recipe (:class:`UpscaleRecipe`), and why:

- The network predicts the residual over bicubic and starts as exact bicubic (see
  :class:`srtools.archs.fedsr_arch.FEDSR`), so every minute of training is spent on what bicubic
  gets wrong and the published model is never worse than bicubic on the held-out frames.
- Patches are drawn where bicubic is most wrong (:class:`PatchSampler`): half of them with
  probability proportional to the square root of the bicubic error in the patch, half uniformly.
  Flat areas (sky, walls) teach the network nothing, and they are most of a frame.
- The learning rate follows a cosine over the time budget (not a step count), after a short
  warm-up, so a run stopped by --max-seconds has annealed properly.
- The best model on held-out frames (:func:`hold_out`: every tenth, at most eight spread over the
  clip) is kept, measured every ``eval_every`` seconds and at the end.

The TCSR recipe (:class:`RefineRecipe`) trains on windows of 2k+1 consecutive frames upscaled by
the current F-EDSR model, against the high-res middle frame, with the loss of
:func:`srtools.archs.tcsr_arch.tcsr_loss`; its baseline is the F-EDSR output itself. Its patches
are drawn the same way, where the F-EDSR output is most wrong, and the same frames are held out.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Callable, Iterable, Protocol

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from . import degrade, metrics, video
from .archs.tcsr_arch import tcsr_loss
from .errors import InputError
from .tcsr import window_indices
from .upscale import network_planes, resize_plane, to_plane, to_unit


@dataclasses.dataclass
class PairSet:
    """Frame-aligned training pairs as stacked planes.

    Attributes:
        lr: (N, C, h, w) uint8 low-res inputs.
        hr: (N, C, h*s, w*s) uint8 targets.
    """

    lr: np.ndarray
    hr: np.ndarray

    def __len__(self) -> int:
        return len(self.lr)

    @property
    def scale(self) -> int:
        return self.hr.shape[-1] // self.lr.shape[-1]

    def split(self, max_val: int = 8, every: int = 10) -> tuple[PairSet, PairSet]:
        """(train, validation), the frames held out by :func:`hold_out`."""
        train_idx, val_idx = hold_out(len(self), every, max_val)
        return PairSet(self.lr[train_idx], self.hr[train_idx]), PairSet(self.lr[val_idx], self.hr[val_idx])


def hold_out(n: int, every: int = 10, max_val: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices of n frames: every ``every``-th frame from ``every // 2`` is held out,
    at most ``max_val`` of them spread evenly over those (so they cover the whole clip).

    When no frame can be held out (n <= every // 2), both are every frame: the model is then scored on
    what it trains on.
    """
    val_idx = np.arange(every // 2, n, every)
    if len(val_idx) > max_val:
        val_idx = val_idx[np.linspace(0, len(val_idx) - 1, max_val).round().astype(int)]
    if len(val_idx) == 0 or len(val_idx) == n:
        return np.arange(n), np.arange(n)
    return np.setdiff1d(np.arange(n), val_idx), val_idx


def load_pairs(hr_source: str, lr_source: str, scale: int, color: str, max_frames: int,
               hr_section: dict, lr_section: dict, consecutive: bool = False) -> tuple[PairSet, float]:
    """Decode the HR and LR clips in lockstep into at most ``max_frames`` evenly spaced pairs.

    Args:
        hr_section / lr_section: ``start`` and ``duration`` (seconds or None) of each clip.
        consecutive: keep the first ``max_frames`` frames instead (temporal models need neighbours).

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
                if consecutive and len(keep) == max_frames:
                    break
                if len(keep) >= 2 * max_frames:  # bounded memory: halve the density, keep even spacing
                    keep, stride = keep[::2], stride * 2
            index += 1
    if not keep:
        raise InputError(f"{hr_source}: no frames in the selected section")
    if len(keep) > max_frames:
        keep = [keep[i] for i in np.linspace(0, len(keep) - 1, max_frames).round().astype(int)]
    return PairSet(np.stack([p[0] for p in keep]), np.stack([p[1] for p in keep])), float(hh.fps)


class PatchSampler:
    """Draws patch positions, half with probability proportional to the square root of the error in
    the patch, half uniformly (see the module docstring).

    The candidate patches lie on a grid of ``stride`` pixels over every frame; a patch's error is the
    sum of its frame's error map over it (:func:`srtools.metrics.box_sums`).

    Args:
        shape: (H, W) of the error maps, the grid patches are drawn on.
        error_maps: one (H, W) float32 map of squared error per frame, read one at a time (a
            generator holds one map in memory).
        patch: patch size on that grid, at most H and W.
        stride: pixels between candidate positions.
        rng: random generator.
    """

    def __init__(self, shape: tuple[int, int], error_maps: Iterable[np.ndarray], patch: int, stride: int,
                 rng: np.random.Generator):
        h, w = shape
        if h < patch or w < patch:
            raise ValueError(f"frames {w}x{h} smaller than the {patch}px training patch")
        self.rng = rng
        self.positions_y = np.arange(0, h - patch + 1, stride)
        self.positions_x = np.arange(0, w - patch + 1, stride)
        y0, x0 = np.meshgrid(self.positions_y, self.positions_x, indexing="ij")
        errors = [metrics.box_sums(error, y0, y0 + patch, x0, x0 + patch).reshape(-1) for error in error_maps]
        weights = np.sqrt(np.concatenate(errors)) + 1e-12
        self.cdf = np.cumsum(weights / weights.sum())

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(frame, y, x) of ``batch`` patches: frame indices in the order of ``error_maps``, top-left corners."""
        weighted = np.searchsorted(self.cdf, self.rng.random(batch // 2))
        uniform = self.rng.integers(0, len(self.cdf), batch - batch // 2)
        flat = np.minimum(np.concatenate([weighted, uniform]), len(self.cdf) - 1)
        frame, position = np.divmod(flat, len(self.positions_y) * len(self.positions_x))
        py, px = np.divmod(position, len(self.positions_x))
        return frame, self.positions_y[py], self.positions_x[px]


def bicubic_error(lr: np.ndarray, hr: np.ndarray) -> np.ndarray:
    """(h, w) float32 squared error of OpenCV bicubic upscaling of the (h, w) uint8 plane ``lr`` against
    the (h*s, w*s) plane ``hr``, measured at HR and area-averaged onto the LR grid."""
    error = (hr.astype(np.float32) - resize_plane(lr, *hr.shape).astype(np.float32)) ** 2
    return cv2.resize(error, (lr.shape[1], lr.shape[0]), interpolation=cv2.INTER_AREA)


def _augment(*tensors: torch.Tensor, rng: np.random.Generator) -> list[torch.Tensor]:
    """The same random flip / transpose of the last two axes for every tensor of the batch."""
    out = list(tensors)
    if rng.random() < 0.5:
        out = [t.flip(-1) for t in out]
    if rng.random() < 0.5:
        out = [t.flip(-2) for t in out]
    if rng.random() < 0.5:
        out = [t.transpose(-1, -2) for t in out]
    return out


def bicubic_psnr(pairs: PairSet) -> float:
    """Mean per-frame Y-PSNR of OpenCV bicubic upscaling, the baseline gains are measured against."""
    return float(np.mean([metrics.bounded_psnr(resize_plane(lr[0], *hr[0].shape), hr[0])
                          for lr, hr in zip(pairs.lr, pairs.hr)]))


class Recipe(Protocol):
    """What :func:`train` needs to know about one architecture's training."""

    baseline_psnr: float  # held-out Y-PSNR of what the model improves on (bicubic, F-EDSR output)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of one training step, on the training device."""

    def loss(self, model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...

    def evaluate(self, model: torch.nn.Module) -> float:
        """Held-out Y-PSNR of the model (eval mode, no gradients)."""


class UpscaleRecipe:
    """F-EDSR on (LR, HR) pairs: error-weighted patches, augmentation, L1 (see the module docstring).

    Args:
        train_pairs / val_pairs: training and held-out frame pairs.
        patch: LR patch size.
        device: torch device.
        rng: random generator.
    """

    _STRIDE = 4  # candidate patch positions on a 4-pixel LR grid

    def __init__(self, train_pairs: PairSet, val_pairs: PairSet, patch: int, device: torch.device,
                 rng: np.random.Generator):
        self.sampler = PatchSampler(train_pairs.lr.shape[-2:],
                                    (bicubic_error(lr[0], hr[0]) for lr, hr in zip(train_pairs.lr, train_pairs.hr)),
                                    patch, self._STRIDE, rng)
        self.train_pairs, self.val_pairs, self.patch, self.device, self.rng = train_pairs, val_pairs, patch, device, rng
        self.baseline_psnr = bicubic_psnr(val_pairs)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, p = self.train_pairs.scale, self.patch
        corners = list(zip(*self.sampler.sample(size)))
        lr = np.stack([self.train_pairs.lr[f, :, y:y + p, x:x + p] for f, y, x in corners])
        hr = np.stack([self.train_pairs.hr[f, :, y * s:(y + p) * s, x * s:(x + p) * s] for f, y, x in corners])
        inputs, targets = _augment(to_unit(lr, self.device), to_unit(hr, self.device), rng=self.rng)
        return inputs, targets

    def loss(self, model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(model(inputs), targets)

    @torch.inference_mode()
    def evaluate(self, model: torch.nn.Module) -> float:
        scores = [metrics.bounded_psnr(to_plane(model(to_unit(lr, self.device)[None])[0, 0]), hr[0])
                  for lr, hr in zip(self.val_pairs.lr, self.val_pairs.hr)]
        return float(np.mean(scores))


class RefineRecipe:
    """TCSR on consecutive frames: windows of 2k+1 upscaled frames -> the HR middle frame.

    The frames come as one or more sequences (a clip, or many short runs: the online trainer's pool,
    the generic model's synthetic clips); a window never crosses from one sequence into another, and
    is centred only where it lies inside its sequence (every frame of a sequence shorter than a
    window), so that the network learns from real neighbours. Patches (``patch`` pixels at output
    resolution) are drawn by :class:`PatchSampler`, weighted by the error of the upscaled frame; what
    is held out (:func:`hold_out`) is frames of a single sequence, or whole sequences of many (their
    middle frames scored: neighbouring frames of one sequence are too alike to test each other), each
    scored on fixed crops of ``val_crop`` pixels, so an evaluation costs a fraction of a full frame at
    640x360 and more. Windows at a sequence's ends repeat its end frames, as sr-tcsr does
    (:func:`srtools.tcsr.window_indices`).

    Args:
        sequences: (upscaled, hr) pairs of (N, 1, H, W) uint8 arrays, the F-EDSR output of N consecutive
            frames and the matching high-res frames; one H and W for all.
        k: neighbours on each side.
        patch: training patch size at output resolution.
        device / rng: torch device, random generator.
    """

    _STRIDE = 8

    def __init__(self, sequences: list[tuple[np.ndarray, np.ndarray]], k: int, patch: int, device: torch.device,
                 rng: np.random.Generator, every: int = 10, max_val: int = 8, val_crop: int = 128):
        self.upscaled = np.concatenate([upscaled for upscaled, _ in sequences])
        self.hr = hr = np.concatenate([target for _, target in sequences])
        h, w = hr.shape[-2:]
        lengths = np.array([len(upscaled) for upscaled, _ in sequences])
        self.first = np.repeat(np.cumsum(lengths) - lengths, lengths)  # each frame's sequence: its first frame
        self.length = np.repeat(lengths, lengths)
        patch = min(patch, h, w)
        self.k, self.patch, self.device, self.rng = k, patch, device, rng
        position = np.arange(len(hr)) - self.first
        whole = (position >= k) & (position < self.length - k) | (self.length < 2 * k + 1)
        if len(sequences) == 1:
            train, val = hold_out(len(hr), every, max_val)
        else:
            train_seq, val_seq = hold_out(len(sequences), every, max_val)
            starts = np.cumsum(lengths) - lengths
            train = np.concatenate([np.arange(starts[q], starts[q] + lengths[q]) for q in train_seq])
            val = starts[val_seq] + lengths[val_seq] // 2
        self.train_idx, self.val_idx = train[whole[train]], val
        self.sampler = PatchSampler((h, w), ((self.upscaled[i, 0].astype(np.float32) - hr[i, 0].astype(np.float32))
                                             ** 2 for i in self.train_idx), patch, self._STRIDE, rng)
        crop = min(val_crop, h, w)
        self.val_windows = [(i, y, x) for i in self.val_idx
                            for y, x in ((0, 0), (h - crop, w - crop), ((h - crop) // 2, (w - crop) // 2))]
        self.val_crop = crop
        self.baseline_psnr = float(np.mean([metrics.bounded_psnr(self._crop(self.upscaled, i, y, x, crop),
                                                                 self._crop(hr, i, y, x, crop))
                                            for i, y, x in self.val_windows]))

    def _window(self, i: int, y: int, x: int, size: int) -> np.ndarray:
        """(2k+1, 1, size, size): upscaled frames i-k .. i+k cropped at (y, x), the ends of i's sequence
        repeated."""
        first = self.first[i]
        frames = first + window_indices(i - first, self.k, self.length[i])
        return self.upscaled[frames, :, y:y + size, x:x + size]

    @staticmethod
    def _crop(frames: np.ndarray, i: int, y: int, x: int, size: int) -> np.ndarray:
        return frames[i, 0, y:y + size, x:x + size]

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        frame, ys, xs = self.sampler.sample(size)
        p = self.patch
        inputs, targets = [], []
        for f, y, x in zip(self.train_idx[frame], ys, xs):
            inputs.append(self._window(f, y, x, p))
            targets.append(self.hr[f, :, y:y + p, x:x + p])
        inputs_t, targets_t = _augment(to_unit(np.stack(inputs), self.device), to_unit(np.stack(targets), self.device),
                                       rng=self.rng)
        return inputs_t.contiguous(), targets_t.contiguous()

    def loss(self, model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        output, flows_coarse, flows_full, _ = model.forward_with_flows(inputs)
        return tcsr_loss(output, targets, inputs, flows_coarse, flows_full)

    @torch.inference_mode()
    def evaluate(self, model: torch.nn.Module) -> float:
        c = self.val_crop
        scores = []
        for i, y, x in self.val_windows:
            window = to_unit(self._window(i, y, x, c), self.device)[None]
            scores.append(metrics.bounded_psnr(to_plane(model(window)[0, 0]), self._crop(self.hr, i, y, x, c)))
        return float(np.mean(scores))


STRENGTHS = (1.0, 0.75, 0.5, 0.25, 0.0)  # of a TCSR's correction, tried by calibrate_strength (0: the identity)


def calibrate_strength(model: torch.nn.Module, recipe: RefineRecipe,
                       strengths: Iterable[float] = STRENGTHS) -> dict[float, float]:
    """Scale a trained TCSR's correction (:meth:`~srtools.archs.tcsr_arch.TCSR.scale_correction`) to
    the strength that scores best on ``recipe``'s held-out frames, in place.

    A TCSR trained elsewhere (the generic one, or this stream's before a scene change) may correct
    this content too hard: its correction is the right direction more often than the right size.
    The push side, which has the high-res frames, measures which size: a few evaluations, no training.

    Returns:
        The held-out Y-PSNR at each strength tried, the best first.
    """
    start = copy.deepcopy(model.state_dict())
    scores = {}
    for strength in strengths:
        model.load_state_dict(start)
        model.scale_correction(strength)
        scores[strength] = recipe.evaluate(model)
    ranked = dict(sorted(scores.items(), key=lambda item: -item[1]))
    model.load_state_dict(start)
    model.scale_correction(next(iter(ranked)))
    return ranked


@dataclasses.dataclass
class TrainConfig:
    """Budget and optimiser settings.

    The learning-rate schedule runs over the budget: ``max_seconds`` of training compute (the time
    spent in training steps and evaluations, not decoding), or ``max_steps`` steps when given
    (machine-independent budgets for experiments); whichever is used up first ends it.
    """

    max_seconds: float = 180.0
    max_steps: int | None = None
    batch: int = 16
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.03
    eval_every: float = 15.0
    seed: int = 0


@dataclasses.dataclass
class TrainResult:
    state_dict: dict[str, torch.Tensor]
    val_psnr_db: float
    baseline_psnr_db: float
    steps: int
    seconds: float

    @property
    def gain_db(self) -> float:
        return self.val_psnr_db - self.baseline_psnr_db


@dataclasses.dataclass
class Evaluation:
    """One held-out score during training: what progress callbacks receive."""

    fraction: float  # of the budget used
    step: int
    seconds: float  # training compute so far
    psnr: float
    best_psnr: float
    improved: bool  # a new best: the model now holds it


class Trainer:
    """Trains ``model`` in place by ``recipe`` in resumable slices, keeping the best state seen.

    Adam, a warm-up then a cosine learning-rate schedule over the budget of ``config``; the model is
    scored on the recipe's held-out data every ``config.eval_every`` compute seconds and when the
    budget is spent. :func:`train` runs one to the end; the online trainer (srtools.live.watchtrain)
    runs slices and stops early by its stopping rule.

    A ``fallback`` (a model of the same shape, e.g. a new F-EDSR, which is exact bicubic) is scored
    too when training starts from a trained model (generic or warm start): if the start scores lower
    on this content, the fallback is the best state until training beats it, so the result is never
    worse than the fallback.
    """

    def __init__(self, model: torch.nn.Module, recipe: Recipe, config: TrainConfig,
                 device: str | torch.device = "cpu", fallback: torch.nn.Module | None = None):
        self.model, self.recipe, self.config = model, recipe, config
        self.device = torch.device(device)
        torch.manual_seed(config.seed)
        model.to(self.device)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        self.steps = 0
        start = time.monotonic()
        model.eval()
        self.start_psnr = self.best_psnr = recipe.evaluate(model)
        self.best_state = copy.deepcopy(model.state_dict())
        if fallback is not None:
            fallback.to(self.device).eval()
            fallback_psnr = recipe.evaluate(fallback)
            if fallback_psnr > self.best_psnr:
                self.best_psnr, self.best_state = fallback_psnr, copy.deepcopy(fallback.state_dict())
        self.seconds = time.monotonic() - start  # scoring the starting point is training compute too
        self._next_eval = self.seconds + config.eval_every

    @property
    def fraction(self) -> float:
        """Share of the budget used (1.0: done)."""
        by_time = self.seconds / self.config.max_seconds
        by_steps = self.steps / self.config.max_steps if self.config.max_steps else 0.0
        return min(max(by_time, by_steps), 1.0)

    @property
    def done(self) -> bool:
        return self.fraction >= 1.0

    @property
    def gain_db(self) -> float:
        return self.best_psnr - self.recipe.baseline_psnr

    def run(self, seconds: float = math.inf, steps: int | None = None,
            progress: Callable[[Evaluation], bool | None] | None = None) -> None:
        """Train for up to ``seconds`` more compute seconds and ``steps`` more steps, or to the end
        of the budget. ``progress`` gets each evaluation; returning True stops the run there."""
        start, first_step = time.monotonic(), self.steps
        base = self.seconds
        while not self.done and self.seconds - base < seconds and (steps is None or self.steps - first_step < steps):
            self._step()
            self.seconds = base + time.monotonic() - start
            if self.seconds >= self._next_eval or self.done:
                evaluation = self._evaluate()
                self.seconds = base + time.monotonic() - start  # evaluations are training compute too
                if progress and progress(evaluation):
                    break

    def _step(self) -> None:
        fraction, config = self.fraction, self.config
        if fraction < config.warmup_fraction:
            lr = config.learning_rate * (0.1 + 0.9 * fraction / config.warmup_fraction)
        else:
            lr = config.learning_rate * 0.5 * (1 + math.cos(math.pi * fraction))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        inputs, targets = self.recipe.batch(config.batch)
        loss = self.recipe.loss(self.model, inputs, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1

    def _evaluate(self) -> Evaluation:
        self.model.eval()
        score = self.recipe.evaluate(self.model)
        improved = score > self.best_psnr
        if improved:
            self.best_psnr, self.best_state = score, copy.deepcopy(self.model.state_dict())
        self._next_eval = self.seconds + self.config.eval_every
        return Evaluation(self.fraction, self.steps, self.seconds, score, self.best_psnr, improved)

    def result(self) -> TrainResult:
        """Load the best state into the model and report it."""
        self.model.load_state_dict(self.best_state)
        self.model.eval()
        return TrainResult(self.best_state, self.best_psnr, self.recipe.baseline_psnr, self.steps, self.seconds)


def train(model: torch.nn.Module, recipe: Recipe, config: TrainConfig, device: str | torch.device = "cpu",
          progress: Callable[[Evaluation], None] | None = None,
          fallback: torch.nn.Module | None = None) -> TrainResult:
    """Train ``model`` in place by ``recipe`` for the budget of ``config`` and return the best state
    seen (see :class:`Trainer` for ``fallback``)."""
    trainer = Trainer(model, recipe, config, device, fallback)
    trainer.run(progress=progress)
    return trainer.result()


@torch.inference_mode()
def upscale_planes(model: torch.nn.Module | None, lr: np.ndarray, scale: int, device: torch.device,
                   chunk: int = 8) -> np.ndarray:
    """(N, 1, h, w) uint8 luma -> (N, 1, sh, sw) uint8 as sr-serve outputs it: through ``model``, or
    OpenCV bicubic when None."""
    n, _, h, w = lr.shape
    if model is None:
        return np.stack([resize_plane(plane[0], h * scale, w * scale)[None] for plane in lr])
    model.to(device).eval()
    out = [to_plane(model(to_unit(lr[i:i + chunk], device))[:, 0])[:, None] for i in range(0, n, chunk)]
    return np.concatenate(out)
