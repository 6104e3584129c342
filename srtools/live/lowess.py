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

Why the departure alone does not decide (benchmarks/bench_monitor.py, docs/benchmarks.md): on real
footage the PSNR of one unchanged view moves by as much as a cut moves it. A static camera's PSNR
steps by 3.5 dB for seconds as bottles are moved and the whole frame's quality shifts; a cut from a
test pattern to a fractal moves it by less than 0.5 dB. No threshold separates these (6 false
requests per minute on the static camera at 1.5 dB, and that cut missed at any threshold that is
quiet). The picture does: on the single-scene tuning clips (camera motion, noise, an occluder
included) each 16x9 luma thumbnail is within a change of 0.35 (about 1 - correlation) of one of
the view's pictures of the last 2 s, and after every cut it is at least 0.65 from all of the
previous scene's. Hence the gate (a departure counts on a changed picture) and the cut (a wholly
new picture counts on its own, above the view's usual change: a fine moving texture changes at
every sample), with a threshold scaled by the departures' robust spread where the PSNR is noisy,
and three samples in a row (0.75 s at 4 pairs/s, well inside the design's 2 s).
"""

from __future__ import annotations

import collections
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


_CONTRAST = 4.0  # luma levels (std): a thumbnail's structure below this is noise, not a recognisable picture
_CUT_SPREAD = 2.0  # how many times the view's usual change (median) the cut adds on top
_MIN_RESIDUALS = 8  # departures (picture changes) known before a departure (a new picture) can count


def picture_change(picture: np.ndarray, references: np.ndarray) -> float:
    """How far a picture is from the nearest of some references, brightness aside.

    The mean squared difference of the mean-removed thumbnails over the sum of their variances:
    for pictures of equal contrast that is 1 - their correlation, so 0 is the same picture, about
    1 an unrelated one, 2 an inverted one; a picture and a uniform one are about 1 apart. A
    brightness change does not count, a contrast change little (0.06 for 30% less). The coarse
    thumbnail cells tolerate motion, and the nearest reference is taken so that a picture that
    comes back (after an occlusion, a pan back) is not new. Both variances are padded by 4^2 levels,
    so that the noise of nearly uniform thumbnails does not look like structure.

    Args:
        picture: a luma thumbnail, any shape.
        references: (n, ...) thumbnails of the same shape, n >= 1.
    """
    a = np.asarray(picture, float).ravel()
    refs = np.asarray(references, float).reshape(len(references), -1)
    da, dr = a - a.mean(), refs - refs.mean(1, keepdims=True)
    change = ((dr - da) ** 2).mean(1) / (da.var() + dr.var(1) + 2 * _CONTRAST**2)
    return float(change.min())


@dataclasses.dataclass
class Detection:
    smoothed: float | None  # the trend's value at this sample (None until enough samples)
    threshold: float | None  # the departure (dB) that counted here, floor or noise-scaled (None: noise unknown)
    change: float | None  # the picture's change from the trend's pictures (None without pictures)
    request: bool  # a scene change: ask for retraining


class SceneChangeDetector:
    """Flags the samples where the PSNR departs from its recent trend, either way, on a new picture.

    The trend is the causal LOWESS fit of the accepted samples (the k most recent), evaluated at
    the new sample's time. A sample departs when it is more than the threshold from the trend:
    ``threshold_db``, or ``noise_factor`` robust standard deviations (1.4826 x the median absolute
    deviation) of the last ``noise_samples`` departures where the PSNR is noisier (a GOP's
    oscillation, noise). Given each sample's picture (a luma thumbnail of the HR frame), a
    departure counts only when the picture changed too, by more than ``picture_gate`` (see
    :func:`picture_change`, against the trend's pictures), or has too little contrast to be
    recognised (a thumbnail's std under 4 levels): a view whose quality wanders (a camera's
    encoder, objects moved in a still view) moves the PSNR by as much as a cut does, but keeps its
    picture. A picture change beyond :meth:`cut` (``picture_cut`` plus twice the view's
    usual change) counts on its own, for a cut to content of the same difficulty, which leaves the
    PSNR flat; where every picture is new (a fine moving texture) the cut rises out of reach and
    the PSNR decides. A request needs ``persistence`` counting samples in a row, the PSNR not
    switching sides: a brief event (a key frame, an occlusion, a flash) is left out of the trend
    and forgotten, while a new scene lasts. The trend restarts from the new scene's samples after
    a request, so one scene change asks once, and from nothing whenever the model changes, since a
    new model moves the PSNR on its own. The departures' noise and the pictures' usual change are
    kept across restarts (forgetting them would make the seconds after a restart the most
    trigger-happy); nothing counts before eight of each are known (2 s at 4 pairs/s).

    Without pictures, the PSNR alone decides.

    Args:
        k: samples in the window.
        threshold_db: the least departure that counts.
        noise_factor: robust standard deviations of the residuals that a departure must exceed.
        persistence: counting samples in a row that make a request.
        picture_gate: the picture change a PSNR departure needs; 0 lets every departure count.
        picture_cut: the picture change that counts without a departure, on a view whose pictures
            usually stay the same; 2 or more never does.
        degree: 0 local-constant (default, see the module docstring), 1 local-linear.
        min_samples: samples needed after a restart before a sample can count (at most k).
        noise_samples: recent departures (and picture changes) the noise is measured on.
    """

    # The defaults, which sr-monitor's options show (benchmarks/bench_monitor.py measured them).
    K, THRESHOLD_DB, NOISE_FACTOR, PERSISTENCE, PICTURE_GATE, PICTURE_CUT = 8, 1.0, 4.0, 3, 0.25, 0.5

    def __init__(self, k: int = K, threshold_db: float = THRESHOLD_DB, noise_factor: float = NOISE_FACTOR,
                 persistence: int = PERSISTENCE, picture_gate: float = PICTURE_GATE, picture_cut: float = PICTURE_CUT,
                 degree: int = 0, min_samples: int = 4, noise_samples: int = 32):
        self.k, self.threshold_db, self.noise_factor, self.persistence = k, threshold_db, noise_factor, persistence
        self.picture_gate, self.picture_cut = picture_gate, picture_cut
        self.degree, self.min_samples, self.noise_samples = degree, min(min_samples, k), noise_samples
        self.model: object = None
        self.residuals: collections.deque = collections.deque(maxlen=noise_samples)  # departures, across restarts
        self.changes: collections.deque = collections.deque(maxlen=noise_samples)  # pictures' changes, likewise
        self._restart([])

    def _restart(self, samples: list) -> None:
        self.samples: collections.deque = collections.deque(samples, maxlen=self.k)  # accepted (t, psnr, picture)
        self.run: list = []  # counting samples in a row: (t, psnr, picture, side of the PSNR or 0)

    def trend(self, t: float) -> float | None:
        """The fit of the recent samples at time ``t`` (None with too few samples)."""
        if len(self.samples) < self.min_samples:
            return None
        x, y = np.array([s[0] for s in self.samples]), np.array([s[1] for s in self.samples])
        d = np.abs(x - t)
        w = epanechnikov(d / d.max()) if d.max() > 0 else np.ones_like(d)
        if w.sum() == 0:
            w = np.ones_like(w)
        return float(_weighted_fit(x, y, w, np.array(t), self.degree))

    def threshold(self) -> float | None:
        """The departure that counts now: the floor, or more where the recent residuals are noisy; None
        until the noise is known (the first residuals of the stream), when only pictures count."""
        if len(self.residuals) < _MIN_RESIDUALS:
            return None
        r = np.array(self.residuals)
        return max(self.threshold_db, self.noise_factor * 1.4826 * float(np.median(np.abs(r - np.median(r)))))

    def cut(self) -> float:
        """The picture change that counts on its own now: ``picture_cut`` plus twice the view's usual
        change (the median of the recent ones); never before that is known."""
        if len(self.changes) < _MIN_RESIDUALS:
            return np.inf
        return self.picture_cut + _CUT_SPREAD * float(np.median(self.changes))

    def update(self, t: float, psnr: float, model: object = None, picture: np.ndarray | None = None) -> Detection:
        """Take one sample: stream time, PSNR (dB), the model it was scored with, its thumbnail."""
        if model != self.model:
            self.model = model
            self._restart([])
        smoothed = self.trend(t)
        pictures = [s[2] for s in self.samples if s[2] is not None]
        change = picture_change(picture, np.array(pictures)) if picture is not None and pictures else None
        if change is not None:
            self.changes.append(change)
        if smoothed is None:
            self.samples.append((t, psnr, picture))
            return Detection(None, None, change, False)
        threshold = self.threshold()
        departure = psnr - smoothed
        self.residuals.append(departure)
        side = int(np.sign(departure)) if threshold is not None and abs(departure) > threshold else 0
        if change is not None and change <= self.picture_gate and float(np.std(picture)) >= _CONTRAST:
            side = 0  # the same picture: its PSNR moved for another reason
        counts = side != 0 or (change is not None and change > self.cut())
        if not counts:
            self.run = []  # a brief event, over: left out of the trend
            self.samples.append((t, psnr, picture))
            return Detection(smoothed, threshold, change, False)
        if side and any(s == -side for *_, s in self.run):
            self.run = []  # the PSNR went the other way: a new run starts
        self.run.append((t, psnr, picture, side))
        if len(self.run) < self.persistence:
            return Detection(smoothed, threshold, change, False)
        self._restart([r[:3] for r in self.run])  # a new scene: the trend restarts from it
        return Detection(smoothed, threshold, change, True)
