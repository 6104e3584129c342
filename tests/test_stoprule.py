"""The online trainer's stopping rule: the 1-20-20-20-1 sigmoid MLP and TH = min(THs, alpha * THp)."""

import numpy as np
import pytest

from srtools.live.stoprule import StopRule, fit_gain_curve, predict


def saturating(seconds):
    return 2.0 * (1 - np.exp(-np.asarray(seconds) / 60))  # plateau 2 dB, most of it in 3 minutes


def test_mlp_fits_a_saturating_curve_and_predicts_its_plateau():
    seconds = np.linspace(5, 120, 10)  # a cold start's first two minutes
    curve = fit_gain_curve(seconds, saturating(seconds))
    assert np.abs(predict(curve, seconds) - saturating(seconds)).max() < 0.1
    assert predict(curve, 600)[0] == pytest.approx(2.0, abs=0.3)
    assert sum(p.numel() for p in curve.parameters()) == 2 * 20 + 2 * (20 * 20 + 20) + 21  # 1-20-20-20-1


def should_stop(rule: StopRule, seconds: list[float], gains: list[float]) -> tuple[bool, float, float | None]:
    """(stop?, TH, THp) after the latest point, as the online trainer asks (srtools.live.watchtrain)."""
    predicted = rule.predicted_db(seconds, gains)
    return (*rule.decide(gains[-1], predicted), predicted)


def test_stop_rule():
    rule = StopRule(fixed_db=1.5, alpha=0.8, horizon_s=600, min_points=4)
    seconds = [10.0, 20.0, 30.0]
    assert should_stop(rule, seconds, list(saturating(seconds))) == (False, 1.5, None)  # THs alone at first
    seconds = list(np.linspace(10, 90, 9))
    gains = list(saturating(seconds))
    stop, threshold, predicted = should_stop(rule, seconds, gains)
    assert predicted == pytest.approx(2.0, abs=0.3) and threshold == pytest.approx(min(1.5, 0.8 * predicted))
    assert stop == (gains[-1] >= threshold)
    flat = [1.0] * 9  # a plateau reached: nothing more to gain, stop although THs is not reached
    stop, threshold, predicted = should_stop(rule, seconds, flat)
    assert stop and predicted == pytest.approx(1.0, abs=0.05) and flat[-1] < rule.fixed_db
    falling = list(np.linspace(-0.1, -0.3, 9))  # worse and worse: THp below the gain reached
    stop, threshold, predicted = should_stop(rule, seconds, falling)
    assert stop and predicted < falling[-1]
    with pytest.raises(ValueError):
        StopRule(alpha=1.0)
