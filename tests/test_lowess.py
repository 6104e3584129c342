"""LOWESS with the Epanechnikov kernel (against a direct implementation) and the scene-change detector."""

import numpy as np
import pytest

from srtools.live.lowess import SceneChangeDetector, epanechnikov, lowess


def reference_lowess(t, y, k, degree, causal):
    """The definition, one point at a time: k nearest (or most recent) samples, lambda = distance to
    the k-th, Epanechnikov weights, weighted least squares of the given degree."""
    out = []
    for i in range(len(t)):
        candidates = range(max(0, i - k + 1), i + 1) if causal else sorted(
            range(len(t)), key=lambda j: (abs(t[j] - t[i]), j))[:k]
        idx = np.array(sorted(candidates))
        d = np.abs(t[idx] - t[i])
        lam = d.max()
        w = np.array([0.75 * (1 - (dj / lam) ** 2) if lam > 0 else 1.0 for dj in d])
        if w.sum() == 0:
            w = np.ones_like(w)
        design = np.stack([np.ones(len(idx))] + ([t[idx] - t[i]] if degree == 1 else []), 1)
        sw = np.sqrt(w)
        coef, *_ = np.linalg.lstsq(design * sw[:, None], y[idx] * sw, rcond=None)
        out.append(coef[0])
    return np.array(out)


@pytest.mark.parametrize("degree", [0, 1])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_the_definition(degree, causal):
    rng = np.random.default_rng(degree + 2 * causal)
    t = np.cumsum(rng.uniform(0.1, 1.0, 60))
    y = np.sin(t / 3) + rng.normal(0, 0.2, 60)
    np.testing.assert_allclose(lowess(t, y, 9, degree, causal), reference_lowess(t, y, 9, degree, causal),
                               atol=1e-9)


def test_kernel_and_linear_trend():
    assert epanechnikov(np.array([0.0, 0.5, 1.0, 1.5])).tolist() == [0.75, 0.5625, 0.0, 0.0]
    t = np.arange(30.0)
    np.testing.assert_allclose(lowess(t, 2 * t + 1, 7, degree=1), 2 * t + 1, atol=1e-9)  # local-linear: exact
    assert abs(lowess(t, 2 * t + 1, 7, degree=1, causal=True)[-1] - 59) < 1e-9  # no lag at the end
    assert lowess(t, 2 * t + 1, 7, degree=0, causal=True)[-1] < 57  # local-constant lags a drift


def series(values, rate=2.0):
    return [(i / rate, v) for i, v in enumerate(values)]


def test_detector_ignores_noise_and_drift_and_flags_steps_both_ways():
    rng = np.random.default_rng(0)
    noise = 35 + rng.normal(0, 0.25, 240)  # two minutes at 2 samples/s
    drift = 35 + 0.01 * np.arange(240) + rng.normal(0, 0.25, 240)
    for quiet in (noise, drift):  # the design's bound: at most one false request per minute
        detector = SceneChangeDetector(k=8, threshold_db=1.0)
        assert sum(detector.update(t, v).request for t, v in series(quiet)) <= 2
    steps = np.concatenate([np.full(40, 35.0), np.full(40, 31.0), np.full(40, 36.0)]) + rng.normal(0, 0.25, 120)
    detector = SceneChangeDetector(k=8, threshold_db=1.0)
    flagged = [i for i, (t, v) in enumerate(series(steps)) if detector.update(t, v).request]
    assert {40, 80} <= set(flagged) and len(flagged) <= 3  # down, then up, at the first sample of each scene
    assert not any(i in flagged for i in (41, 42, 81, 82))  # once per change: the trend restarts


def test_a_new_model_restarts_the_trend():
    detector = SceneChangeDetector(k=8, threshold_db=1.0)
    for t, v in series([35.0] * 20):
        detector.update(t, v, model=1)
    detection = detector.update(10.0, 37.5, model=2)  # the better model's first sample: no request
    assert not detection.request and detection.smoothed is None
