"""Locally weighted regression with the Epanechnikov kernel, and the scene-change detector built on it.

The design smooths the live PSNR series with LOWESS: the fit at time t uses the k nearest samples,
weighted by the Epanechnikov kernel K(u) = 3/4 (1 - u^2) for |u| <= 1, u = (t_i - t) / lambda, the
window width lambda being the distance from t to its k-th nearest sample. Live, only past samples
exist, so the detector fits the k most recent ones and evaluates the fit at the newest time.
Degree 1 (local-linear) follows a slow drift without lag; degree 0 (local-constant) is the
kernel-weighted mean. No library offers this kernel, hence numpy here.

Why the detector is local-constant: a live fit is evaluated at the newest sample's time, beyond its
window's data, where a local-linear fit extrapolates and its noise grows. Measured on 20 series of
two minutes at 2 samples/s (0.01 dB/s drift plus 0.25 dB noise), threshold 1 dB, false requests per
two minutes: local-constant 0.0 / 0.05 / 0.05 for k = 8 / 12 / 16, local-linear 0.75 / 0.15 / 0.2.
A drift of 0.01 dB/s lags by well under the threshold.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def epanechnikov(u: np.ndarray) -> np.ndarray:
    """K(u) = 3/4 (1 - u^2) on |u| <= 1, else 0."""
    return np.where(np.abs(u) <= 1, 0.75 * (1 - u * u), 0.0)


def _weighted_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, at: np.ndarray, degree: int) -> np.ndarray:
    """Weighted least-squares polynomial fits of degree 0 or 1 evaluated at ``at``, batched.

    Args:
        x, y, w: (..., k) samples and weights per fit.
        at: (...) where each fit is evaluated.
    """
    sw = w.sum(-1)
    mean_x = (w * x).sum(-1) / sw
    mean_y = (w * y).sum(-1) / sw
    if degree == 0:
        return mean_y
    dx = x - mean_x[..., None]
    var = (w * dx * dx).sum(-1)
    cov = (w * dx * (y - mean_y[..., None])).sum(-1)
    slope = np.divide(cov, var, out=np.zeros_like(cov), where=var > 1e-12)  # one distinct time: constant
    return mean_y + slope * (at - mean_x)


def lowess(t: np.ndarray, y: np.ndarray, k: int, degree: int = 1, causal: bool = False) -> np.ndarray:
    """Smoothed value at every sample, vectorised.

    Args:
        t, y: (n,) sample times (increasing) and values.
        k: neighbours per fit (the window), at most n.
        degree: 1 local-linear, 0 local-constant.
        causal: use the k most recent samples up to each point (live), else the k nearest.

    Returns:
        (n,) fitted values.
    """
    t, y = np.asarray(t, float), np.asarray(y, float)
    n = len(t)
    k = min(k, n)
    if causal:
        index = np.arange(n)[:, None] + np.arange(-k + 1, 1)[None, :]  # (n, k): i-k+1 .. i
        valid = index >= 0
        index = np.clip(index, 0, n - 1)
    else:
        distance = np.abs(t[None, :] - t[:, None])
        index = np.argsort(distance, axis=1, kind="stable")[:, :k]
        valid = np.ones_like(index, dtype=bool)
    x, v = t[index], y[index]
    d = np.where(valid, np.abs(x - t[:, None]), 0.0)
    width = d.max(axis=1)
    # The k-th neighbour itself gets weight 0 at u = 1; a degenerate window weights all equally.
    u = np.divide(d, width[:, None], out=np.zeros_like(d), where=width[:, None] > 0)
    w = np.where(valid, epanechnikov(u), 0.0)
    w = np.where(w.sum(1, keepdims=True) > 0, w, valid.astype(float))
    return _weighted_fit(x, v, w, t, degree)


@dataclasses.dataclass
class Detection:
    smoothed: float | None  # the trend's value at this sample (None until enough samples)
    request: bool  # a departure beyond the threshold: ask for retraining


class SceneChangeDetector:
    """Flags PSNR samples that depart from their recent trend by more than ``threshold_db``, either way.

    The trend is the causal LOWESS fit of the previous samples (the k most recent), evaluated at
    the new sample's time. A request needs ``persistence`` consecutive samples departing on the same
    side: one-sample spikes (a key frame's better quality, a noisy frame) are left out of the trend
    and forgotten, while a new scene keeps departing. The trend restarts whenever the model
    changes, since a new model moves the PSNR on its own, and after a request, so one scene change
    asks once.

    Args:
        k: samples in the window.
        threshold_db: the departure that marks a scene change.
        degree: 0 local-constant (default, see the module docstring), 1 local-linear.
        min_samples: samples needed after a restart before a departure can be flagged.
        persistence: consecutive departing samples that make a request.
    """

    def __init__(self, k: int = 8, threshold_db: float = 1.0, degree: int = 0, min_samples: int = 4,
                 persistence: int = 1):
        self.k, self.threshold_db, self.degree = k, threshold_db, degree
        self.min_samples, self.persistence = min_samples, persistence
        self.times: list[float] = []
        self.values: list[float] = []
        self.pending: list[tuple[float, float, int]] = []  # departing samples: (t, psnr, side)
        self.model: object = None

    def trend(self, t: float) -> float | None:
        """The fit of the recent samples at time ``t`` (None with too few samples)."""
        if len(self.times) < self.min_samples:
            return None
        x, y = np.array(self.times[-self.k:]), np.array(self.values[-self.k:])
        d = np.abs(x - t)
        w = epanechnikov(d / d.max()) if d.max() > 0 else np.ones_like(d)
        if w.sum() == 0:
            w = np.ones_like(w)
        return float(_weighted_fit(x, y, w, np.array(t), self.degree))

    def update(self, t: float, psnr: float, model: object = None) -> Detection:
        if model != self.model:
            self.model = model
            self.times, self.values, self.pending = [], [], []
        smoothed = self.trend(t)
        departure = 0 if smoothed is None or abs(psnr - smoothed) <= self.threshold_db else np.sign(psnr - smoothed)
        if departure:
            if self.pending and self.pending[-1][2] != departure:
                self.pending = []  # the other side: a new run starts
            self.pending.append((t, psnr, departure))
            if len(self.pending) >= self.persistence:  # a new scene: restart the trend from it
                self.times = [p[0] for p in self.pending]
                self.values = [p[1] for p in self.pending]
                self.pending = []
                return Detection(smoothed, True)
            return Detection(smoothed, False)
        self.pending = []  # a spike that did not last: left out of the trend
        self.times.append(t)
        self.values.append(psnr)
        return Detection(smoothed, False)
