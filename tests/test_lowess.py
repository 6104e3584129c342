"""LOWESS with the Epanechnikov kernel (the detector's live trend against the definition) and the scene-change
detector."""

import numpy as np
import pytest

from srtools.live.lowess import SceneChangeDetector, epanechnikov, picture_change


def reference_fit(t, y, at, degree):
    """The definition of a live LOWESS value: the fit of the samples (t, y) evaluated at time ``at``,
    lambda = the distance from ``at`` to the furthest sample, Epanechnikov weights, weighted least
    squares of the given degree (all samples equally when every weight is 0)."""
    d = np.abs(t - at)
    lam = d.max()
    w = np.array([0.75 * (1 - (dj / lam) ** 2) if lam > 0 else 1.0 for dj in d])
    if w.sum() == 0:
        w = np.ones_like(w)
    design = np.stack([np.ones(len(t))] + ([t - at] if degree == 1 else []), 1)
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
    return coef[0]


def trends(detector, t, y):
    """The detector's trend at each sample's time before it takes the sample (None while too few)."""
    out = []
    for ti, yi in zip(t, y):
        out.append(detector.trend(ti))
        detector.update(ti, yi)
    return out


@pytest.mark.parametrize("degree", [0, 1])
def test_the_trend_matches_the_definition(degree):
    rng = np.random.default_rng(degree)
    t = np.cumsum(rng.uniform(0.1, 1.0, 60))
    y = np.sin(t / 3) + rng.normal(0, 0.2, 60)
    k = 9
    detector = SceneChangeDetector(k=k, threshold_db=1e9, picture_cut=2, degree=degree)  # every sample accepted
    got = trends(detector, t, y)
    for i, value in enumerate(got):
        if i < detector.min_samples:
            assert value is None
        else:
            recent = slice(max(0, i - k), i)  # the k most recent samples before this one
            assert value == pytest.approx(reference_fit(t[recent], y[recent], t[i], degree), abs=1e-9)


def test_kernel_and_linear_trend():
    assert epanechnikov(np.array([0.0, 0.5, 1.0, 1.5])).tolist() == [0.75, 0.5625, 0.0, 0.0]
    t = np.arange(30.0)
    linear = trends(SceneChangeDetector(k=7, threshold_db=1e9, degree=1), t, 2 * t + 1)
    assert linear[-1] == pytest.approx(59, abs=1e-9)  # local-linear: no lag on a drift
    constant = trends(SceneChangeDetector(k=7, threshold_db=1e9, degree=0), t, 2 * t + 1)
    assert constant[-1] < 57  # local-constant lags a drift


RATE = 4.0  # pairs per second, as the push side samples them


def series(values, rate=RATE):
    return [(i / rate, v) for i, v in enumerate(values)]


def requests(detector, values, pictures=None):
    """Indices of the samples that made a request."""
    pictures = [None] * len(values) if pictures is None else pictures
    samples = zip(series(values), pictures)
    return [i for i, ((t, v), p) in enumerate(samples) if detector.update(t, v, picture=p).request]


def two_minutes(rng, noise=0.25):
    return 35 + rng.normal(0, noise, int(120 * RATE))


def test_psnr_alone_ignores_noise_drift_spikes_and_oscillation():
    """Without pictures the PSNR alone decides: none of these is a scene change (the design allows one
    false request a minute; these make none)."""
    rng = np.random.default_rng(0)
    n = int(120 * RATE)
    t = np.arange(n) / RATE
    quiet = {
        "noise": two_minutes(rng),
        "slow drift, 0.01 dB/s": two_minutes(rng) + 0.01 * t,
        "faster drift, 0.05 dB/s": two_minutes(rng) + 0.05 * t,
        "key-frame spikes, +2 dB every 2 s": two_minutes(rng) + 2.0 * (np.arange(n) % 8 == 0),
        "oscillation, +-1.5 dB over a 2 s GOP": two_minutes(rng) + 1.5 * np.sin(2 * np.pi * t / 2),
        "heavy-tailed noise": 35 + rng.standard_t(3, n) * 0.4,
    }
    for name, values in quiet.items():
        assert requests(SceneChangeDetector(), values) == [], name


def test_the_noise_scaled_threshold_is_what_keeps_an_oscillation_quiet():
    rng = np.random.default_rng(1)
    t = np.arange(int(120 * RATE)) / RATE
    values = two_minutes(rng) + 1.5 * np.sin(2 * np.pi * t / 2)
    assert len(requests(SceneChangeDetector(noise_factor=0), values)) > 4  # the fixed 1 dB alone
    assert requests(SceneChangeDetector(noise_factor=4), values) == []
    detector = SceneChangeDetector()
    for time, value in series(values):
        detection = detector.update(time, value)
    assert detection.threshold > 1.5  # scaled by the residuals' robust spread


def test_psnr_steps_down_and_up_are_found_once_each():
    rng = np.random.default_rng(2)
    steps = np.concatenate([np.full(80, 35.0), np.full(80, 31.0), np.full(80, 36.0), np.full(80, 33.5)])
    flagged = requests(SceneChangeDetector(), steps + rng.normal(0, 0.25, len(steps)))
    # the third sample of each new scene (persistence 3: 0.5 s after the cut), once per change
    assert flagged == [82, 162, 242]


def test_a_new_model_restarts_the_trend():
    detector = SceneChangeDetector()
    for t, v in series([35.0] * 20):
        detector.update(t, v, model=1)
    detection = detector.update(5.0, 37.5, model=2)  # the better model's first sample: no request
    assert not detection.request and detection.smoothed is None


def test_picture_change():
    rng = np.random.default_rng(3)
    picture = rng.uniform(0, 255, (9, 16))
    other = rng.uniform(0, 255, (9, 16))
    assert picture_change(picture, picture[None]) < 1e-9
    assert picture_change(picture + 40, picture[None]) < 1e-9  # brightness does not count
    assert picture_change(picture * 0.7, picture[None]) < 0.07  # contrast little
    assert 0.7 < picture_change(other, picture[None]) < 1.3  # unrelated
    assert picture_change(255 - picture, picture[None]) > 1.9  # inverted
    assert picture_change(other, np.stack([picture, other + 1])) < 1e-9  # the nearest reference counts
    flat = np.full((9, 16), 100.0)
    assert 0.9 < picture_change(picture, flat[None]) <= 1.0  # a uniform picture and a textured one
    nearly_flat = flat + rng.normal(0, 1.5, (2, 9, 16))  # noise, no structure: not a new picture
    assert picture_change(nearly_flat[0], nearly_flat[1:]) < 0.2


def pictures_of(scenes, rng):
    """One slightly noisy thumbnail per sample for each (picture, samples) scene."""
    return [picture + rng.normal(0, 3, picture.shape) for picture, count in scenes for _ in range(count)]


def test_a_departure_on_the_same_picture_is_not_a_scene_change_but_on_a_new_one_it_is():
    rng = np.random.default_rng(4)
    view, other = rng.uniform(0, 255, (2, 9, 16))
    values = np.concatenate([np.full(40, 40.0), np.full(40, 43.5)]) + rng.normal(0, 0.1, 80)  # +3.5 dB at 10 s
    assert requests(SceneChangeDetector(), values, pictures_of([(view, 80)], rng)) == []  # an encoder's quality
    assert requests(SceneChangeDetector(), values, pictures_of([(view, 40), (other, 40)], rng)) == [42]  # a cut
    assert requests(SceneChangeDetector(), values) == [42]  # without pictures, the PSNR alone


def test_a_new_picture_counts_on_its_own_but_a_brief_one_does_not():
    rng = np.random.default_rng(5)
    view, other, passing = rng.uniform(0, 255, (3, 9, 16))
    flat = 35 + rng.normal(0, 0.1, 80)  # the cut leaves the PSNR where it was
    assert requests(SceneChangeDetector(), flat, pictures_of([(view, 40), (other, 40)], rng)) == [42]
    assert requests(SceneChangeDetector(picture_cut=2), flat, pictures_of([(view, 40), (other, 40)], rng)) == []
    occluded = pictures_of([(view, 40), (passing, 2), (view, 38)], rng)  # half a second in front of the lens
    assert requests(SceneChangeDetector(), flat, occluded) == []


def test_where_every_picture_is_new_the_psnr_decides():
    """A fine moving texture (water, foliage, noise) decorrelates its thumbnails at every sample: the cut
    is raised by the view's usual change, and the gate lets the PSNR decide."""
    rng = np.random.default_rng(6)
    texture = list(rng.uniform(0, 255, (160, 9, 16)))
    flat = 35 + rng.normal(0, 0.1, 160)
    detector = SceneChangeDetector()
    detections = [detector.update(t, v, picture=p) for (t, v), p in zip(series(flat), texture)]
    assert np.mean([d.change > detector.picture_cut for d in detections[1:]]) > 0.9
    assert not any(d.request for d in detections)
    step = np.concatenate([flat[:80], flat[80:] - 3])
    assert requests(SceneChangeDetector(), step, texture) == [82]


def test_a_picture_without_contrast_cannot_hold_a_departure_back():
    """Nearly uniform thumbnails (fog, a plain wall, a fine texture averaged out) cannot be recognised
    as the same picture: their departures count, the PSNR decides."""
    rng = np.random.default_rng(7)
    plain = [np.full((9, 16), 120.0) + rng.normal(0, 1.5, (9, 16)) for _ in range(80)]
    values = np.concatenate([np.full(40, 30.0), np.full(40, 45.0)]) + rng.normal(0, 0.1, 80)
    detector = SceneChangeDetector()
    detections = [detector.update(t, v, picture=p) for (t, v), p in zip(series(values), plain)]
    assert max(d.change for d in detections[1:]) < detector.picture_gate
    assert [i for i, d in enumerate(detections) if d.request] == [42]
