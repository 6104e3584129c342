"""Training F-EDSR on frame pairs: error-weighted patch sampling, L1 loss, Adam, a time budget.

The recipe, and why:

- The network predicts the residual over bicubic and starts as exact bicubic (see
  :class:`srtools.archs.fedsr_arch.FEDSR`), so every minute of training is spent on what bicubic
  gets wrong and the published model is never worse than bicubic on the held-out frames.
- Patches are drawn where bicubic is most wrong: half of them with probability proportional to the
  square root of the bicubic error in the patch, half uniformly. Flat areas (sky, walls) teach the
  network nothing, and they are most of a frame.
- The learning rate follows a cosine over the time budget (not a step count), after a short
  warm-up, so a run stopped by --max-seconds has annealed properly.
- The best model on held-out frames is kept (measured every ``eval_every`` seconds and at the end).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Callable

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from . import metrics
from .upscale import resize_plane, to_plane, to_unit


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
        """(train, validation): every ``every``-th frame held out, at most ``max_val`` of them."""
        n = len(self)
        val_idx = np.arange(every // 2, n, every)
        if len(val_idx) > max_val:
            val_idx = val_idx[np.linspace(0, len(val_idx) - 1, max_val).round().astype(int)]
        if len(val_idx) == 0 or len(val_idx) == n:
            return self, self
        train_idx = np.setdiff1d(np.arange(n), val_idx)
        return PairSet(self.lr[train_idx], self.hr[train_idx]), PairSet(self.lr[val_idx], self.hr[val_idx])


class PatchSampler:
    """Draws (LR, HR) patch batches, half weighted by bicubic error, half uniform.

    Args:
        pairs: training pairs.
        patch: LR patch size (HR patches are ``patch * scale``).
        rng: random generator.
    """

    _STRIDE = 4  # candidate patch positions on a 4-pixel LR grid

    def __init__(self, pairs: PairSet, patch: int, rng: np.random.Generator):
        self.pairs, self.patch, self.rng = pairs, patch, rng
        n, _, h, w = pairs.lr.shape
        if h < patch or w < patch:
            raise ValueError(f"frames {w}x{h} smaller than the {patch}px training patch")
        self.positions_y = np.arange(0, h - patch + 1, self._STRIDE)
        self.positions_x = np.arange(0, w - patch + 1, self._STRIDE)
        weights = np.stack([self._patch_error(i) for i in range(n)]).reshape(-1)
        weights = np.sqrt(weights) + 1e-12
        self.cdf = np.cumsum(weights / weights.sum())

    def _patch_error(self, i: int) -> np.ndarray:
        """Sum of squared bicubic error over every candidate patch of frame i, on the LR grid."""
        lr, hr = self.pairs.lr[i, 0], self.pairs.hr[i, 0]
        up = resize_plane(lr, *hr.shape).astype(np.float32)
        err = (hr.astype(np.float32) - up) ** 2
        err_lr = cv2.resize(err, (lr.shape[1], lr.shape[0]), interpolation=cv2.INTER_AREA)
        integral = cv2.integral(err_lr, sdepth=cv2.CV_64F)
        p = self.patch
        ys, xs = np.meshgrid(self.positions_y, self.positions_x, indexing="ij")
        return integral[ys + p, xs + p] - integral[ys, xs + p] - integral[ys + p, xs] + integral[ys, xs]

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        n_pos = len(self.positions_y) * len(self.positions_x)
        weighted = np.searchsorted(self.cdf, self.rng.random(batch // 2))
        uniform = self.rng.integers(0, len(self.pairs) * n_pos, batch - batch // 2)
        flat = np.minimum(np.concatenate([weighted, uniform]), len(self.pairs) * n_pos - 1)
        frame, pos = np.divmod(flat, n_pos)
        py, px = np.divmod(pos, len(self.positions_x))
        s, p = self.pairs.scale, self.patch
        lr = np.stack([self.pairs.lr[f, :, y:y + p, x:x + p]
                       for f, y, x in zip(frame, self.positions_y[py], self.positions_x[px])])
        hr = np.stack([self.pairs.hr[f, :, y * s:(y + p) * s, x * s:(x + p) * s]
                       for f, y, x in zip(frame, self.positions_y[py], self.positions_x[px])])
        return lr, hr


def _augment(lr: torch.Tensor, hr: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flip / transpose for the whole batch (cheap, keeps tensors contiguous)."""
    if rng.random() < 0.5:
        lr, hr = lr.flip(-1), hr.flip(-1)
    if rng.random() < 0.5:
        lr, hr = lr.flip(-2), hr.flip(-2)
    if rng.random() < 0.5:
        lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
    return lr, hr


@torch.inference_mode()
def evaluate(model: torch.nn.Module, pairs: PairSet, device: torch.device) -> float:
    """Mean per-frame PSNR (dB) of the model's output against HR, channel 0 (Y)."""
    model.eval()
    scores = []
    for lr, hr in zip(pairs.lr, pairs.hr):
        scores.append(metrics.psnr(to_plane(model(to_unit(lr, device)[None])[0, 0]), hr[0]))
    return float(np.mean(scores))


def bicubic_psnr(pairs: PairSet) -> float:
    """Mean per-frame Y-PSNR of OpenCV bicubic upscaling, the baseline gains are measured against."""
    return float(np.mean([metrics.psnr(resize_plane(lr[0], *hr[0].shape), hr[0])
                          for lr, hr in zip(pairs.lr, pairs.hr)]))


@dataclasses.dataclass
class TrainConfig:
    max_seconds: float = 180.0
    patch: int = 32
    batch: int = 16
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.03
    eval_every: float = 15.0
    seed: int = 0


@dataclasses.dataclass
class TrainResult:
    state_dict: dict[str, torch.Tensor]
    val_psnr_db: float
    bicubic_psnr_db: float
    steps: int
    seconds: float

    @property
    def gain_db(self) -> float:
        return self.val_psnr_db - self.bicubic_psnr_db


def train(model: torch.nn.Module, train_pairs: PairSet, val_pairs: PairSet, config: TrainConfig,
          device: str = "cpu", progress: Callable[[float, int, float, float], None] | None = None) -> TrainResult:
    """Train ``model`` in place for ``config.max_seconds`` and return the best state seen.

    Args:
        progress: called after each evaluation with (fraction of budget, step, val PSNR, best PSNR).
    """
    dev = torch.device(device)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    model.to(dev)
    sampler = PatchSampler(train_pairs, config.patch, rng)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    baseline = bicubic_psnr(val_pairs)
    best_psnr = evaluate(model, val_pairs, dev)
    best_state = copy.deepcopy(model.state_dict())
    start = time.monotonic()
    next_eval = config.eval_every
    step = 0
    while True:
        elapsed = time.monotonic() - start
        done = elapsed >= config.max_seconds
        if done or elapsed >= next_eval:
            score = evaluate(model, val_pairs, dev)
            if score > best_psnr:
                best_psnr, best_state = score, copy.deepcopy(model.state_dict())
            next_eval = elapsed + config.eval_every
            if progress:
                progress(min(elapsed / config.max_seconds, 1.0), step, score, best_psnr)
        if done:
            break
        fraction = elapsed / config.max_seconds
        if fraction < config.warmup_fraction:
            lr = config.learning_rate * (0.1 + 0.9 * fraction / config.warmup_fraction)
        else:
            lr = config.learning_rate * 0.5 * (1 + math.cos(math.pi * fraction))
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        lr_np, hr_np = sampler.sample(config.batch)
        lr_t, hr_t = _augment(to_unit(lr_np, dev), to_unit(hr_np, dev), rng)
        loss = F.l1_loss(model(lr_t), hr_t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
    model.load_state_dict(best_state)
    return TrainResult(best_state, best_psnr, baseline, step, time.monotonic() - start)
