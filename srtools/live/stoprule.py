"""The design's stopping rule for online training: a fixed gain threshold and a predicted one.

During a cold start the trainer records (training compute seconds, PSNR gain over bicubic on
held-out pool pairs). A shallow network, 1 input -> 3 hidden layers of 20 sigmoid units -> 1
output, fitted to those points with an MSE loss and L2 regularisation (weight decay), predicts how
the gain grows with more compute; its value at ``horizon_s`` compute seconds is THp, the largest
gain the trainer expects to reach. Training stops once the gain reaches

    TH = min(THs, alpha * THp),   alpha < 1,

and at once when THp is no higher than the gain already reached (more compute buys nothing).
THs caps the effort for content where the model could keep improving for long; alpha * THp stops
near the plateau rather than chasing its last tenths of a dB.

Inputs and outputs are scaled to [0, 1] by the longest time and the largest gain seen, so one fit
suits any clip; it is deterministic (seeded). Sigmoid units saturate, so the fitted curve levels
off beyond the data instead of growing without bound, which is what THp needs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn


class GainCurve(nn.Sequential):
    """1 -> 20 -> 20 -> 20 -> 1, sigmoid hidden units: gain as a function of compute."""

    def __init__(self, hidden: int = 20):
        super().__init__(nn.Linear(1, hidden), nn.Sigmoid(), nn.Linear(hidden, hidden), nn.Sigmoid(),
                         nn.Linear(hidden, hidden), nn.Sigmoid(), nn.Linear(hidden, 1))


def fit_gain_curve(seconds: np.ndarray, gains: np.ndarray, l2: float = 1e-4, iterations: int = 300,
                   seed: int = 0) -> GainCurve:
    """Fit :class:`GainCurve` to (seconds, gain) points: MSE plus ``l2`` times the squared weights,
    minimised with L-BFGS (a few hundred iterations of a 900-parameter network take a fraction of a
    second). Inputs are scaled by the longest time seen, outputs by the largest gain."""
    torch.manual_seed(seed)
    model = GainCurve()
    model.seconds_scale = max(float(np.max(seconds)), 1e-6)
    model.gain_scale = max(float(np.max(np.abs(gains))), 1e-6)
    x = torch.tensor(np.asarray(seconds, np.float32) / model.seconds_scale)[:, None]
    y = torch.tensor(np.asarray(gains, np.float32) / model.gain_scale)[:, None]
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.mean((model(x) - y) ** 2) + l2 * sum((p ** 2).sum() for p in model.parameters())
        loss.backward()
        return loss

    optimizer.step(closure)
    return model.eval()


def predict(model: GainCurve, seconds: float | np.ndarray) -> np.ndarray:
    """The fitted gain (dB) after ``seconds`` of training compute."""
    with torch.no_grad():
        x = torch.tensor(np.atleast_1d(np.asarray(seconds, np.float32)) / model.seconds_scale)[:, None]
        return model(x)[:, 0].numpy() * model.gain_scale


@dataclasses.dataclass
class StopRule:
    """TH = min(THs, alpha * THp); see the module docstring.

    Attributes:
        fixed_db: THs.
        alpha: the share of the predicted gain that is enough, < 1.
        horizon_s: compute seconds at which THp is read off the fitted curve.
        min_points: cold-start points needed before THp is predicted (until then: THs alone).
    """

    fixed_db: float = 1.5
    alpha: float = 0.9
    horizon_s: float = 600.0
    min_points: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    def predicted_db(self, seconds: list[float], gains: list[float]) -> float | None:
        """THp from the points so far, or None with too few of them."""
        if len(seconds) < self.min_points:
            return None
        curve = fit_gain_curve(np.array(seconds), np.array(gains))
        return float(predict(curve, self.horizon_s)[0])

    def decide(self, reached: float, predicted: float | None) -> tuple[bool, float]:
        """(stop?, threshold TH) for the gain ``reached`` and THp ``predicted`` (None: THs alone)."""
        if predicted is None:
            return reached >= self.fixed_db, self.fixed_db
        threshold = min(self.fixed_db, self.alpha * predicted)
        return reached >= threshold or predicted <= reached, threshold
