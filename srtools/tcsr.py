"""Temporal refinement of upscaled frames (TCSR): the engine, the choice of frames, the sr-tcsr filter stage.

The stage keeps a sliding window of 2k+1 frames and outputs frame t once frame t+k has arrived
(the window's ends repeat the first and last frames), so the output has the same frames in the
same order as the input, k frames later. Frames it does not refine pass through unchanged, as do
all frames while there is no model; chroma always passes through (TCSR refines luma).

A refined frame must not be worse than its input. Two measurements say when it would be, and the
frame then passes through unchanged (:meth:`Refiner.refine` returns None):

- the model's own measured gain: a model file records its held-out gain over its input
  (``gain_db``, measured by whoever trained it on content they had the high-res frames of: the
  online trainer on the stream's own runs); a model whose gain is not positive is not run at all;
- the window's alignment: where the neighbours, once warped by the model's flows, still differ
  from the middle frame by more than :attr:`Refiner.MAX_MISALIGNMENT` levels on average, they
  show something else (a cut, a flash, motion beyond the flows' reach) and the network's
  correction is a guess.
"""

from __future__ import annotations

import collections
import functools
import math
import time
from typing import Callable, Iterable

import numpy as np
import torch

from .archs.tcsr_arch import TCSR
from .framefilter import CostGate, measure_cost, warm_up_size
from .modelfile import ModelInfo
from .upscale import resolve_precision, to_plane, to_unit
from .y4m import Frame, Header

K_MAX = TCSR.LIMITS["k"]  # the most neighbours on each side a model may use


class Refiner:
    """Runs a TCSR network on windows of frames, and says when a frame would lose (see the module docstring).

    Args:
        model: the network, (N, 2k+1, 1, H, W) -> (N, 1, H, W) in [0, 1].
        info: its model-file metadata.
        version: spool version, for logs (None for a file given directly).
        device: torch device.
        precision: ``fp32``, or ``bf16`` for the convolutions (see :class:`srtools.upscale.ModelUpscaler`).
    """

    MAX_MISALIGNMENT = 12.0  # levels: see the module docstring

    def __init__(self, model: torch.nn.Module, info: ModelInfo, version: int | None = None, device: str = "cpu",
                 precision: str = "fp32"):
        self.info, self.version = info, version
        self.k: int = model.k
        self.device = torch.device(device)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        # channels-last, as for F-EDSR (srtools.upscale): its convolutions run faster on CPU.
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.cost: float | None = None
        self.gains = info.gain_db is None or info.gain_db > 0  # measured by its trainer

    @property
    def label(self) -> str:
        return f"v{self.version}" if self.version is not None else self.info.source or "model"

    def warm_up(self, header: Header) -> None:
        """Refine a blank window of ``header``'s size, measuring :attr:`cost` (see
        :func:`srtools.framefilter.measure_cost`); of at most :data:`~srtools.framefilter.WARM_UP_PIXELS`
        pixels, its cost scaled up (:func:`~srtools.framefilter.warm_up_size`)."""
        size, factor = warm_up_size(header)
        window = [Frame([np.full(shape, 128, np.uint8) for shape in size.plane_shapes])] * (2 * self.k + 1)
        self.cost = factor * measure_cost(lambda: self.refine(window))

    @torch.inference_mode()
    def refine(self, window: list[Frame]) -> Frame | None:
        """The middle frame of ``window`` (2k+1 frames of one size) with refined luma, or None when it
        would lose: then it passes through (see the module docstring)."""
        if not self.gains:
            return None
        luma = to_unit(np.stack([f.y for f in window])[None, :, None], self.device)
        with self.autocast:
            out, _, _, aligned = self.model.forward_with_flows(luma)
        middle = window[self.k]
        reference = luma[:, self.k]
        misalignment = 255 * float(torch.stack([(a.float() - reference).abs().mean() for a in aligned]).mean())
        if misalignment > self.MAX_MISALIGNMENT:
            return None
        return Frame([to_plane(out[0, 0].float()), *middle.planes[1:]], middle.params)


def refiner_factory(device: str, precision: str) -> Callable[..., Refiner]:
    """Builds a :class:`Refiner` from (model, info, version), for :mod:`srtools.loader`."""
    return functools.partial(Refiner, device=device, precision=resolve_precision(precision, device))


def window_indices(i: int, k: int, n: int) -> np.ndarray:
    """Indices of frame i's window in a sequence of n: frames i-k .. i+k, the first and last frames
    repeated past the ends (as :class:`TcsrStage` refines, and training trains)."""
    return np.clip(np.arange(i - k, i + k + 1), 0, n - 1)


@torch.inference_mode()
def refine_frames(model: torch.nn.Module, upscaled: np.ndarray, frames: Iterable[int],
                  device: str | torch.device = "cpu") -> np.ndarray:
    """Frames of a sequence in memory refined as sr-tcsr refines them (batch use, evaluation).

    Args:
        model: a TCSR network in eval mode, (N, 2k+1, 1, H, W) -> (N, 1, H, W).
        upscaled: (T, 1, H, W) uint8 luma, the whole sequence (the windows reach beyond ``frames``).
        frames: indices of the frames to refine, each from its window (:func:`window_indices`).

    Returns:
        (len(frames), H, W) uint8, the refined luma in the order of ``frames``.
    """
    return np.stack([to_plane(model(to_unit(upscaled[window_indices(t, model.k, len(upscaled))], device)[None])[0, 0])
                     for t in frames])


def motion(window: list[Frame], k: int) -> float:
    """Mean absolute luma difference between the middle frame and its neighbours: how much the
    neighbours can add (a static scene gains little from alignment it does not need)."""
    middle = window[k].y.astype(np.int16)
    return float(np.mean([np.abs(f.y.astype(np.int16) - middle).mean() for i, f in enumerate(window) if i != k]))


class EveryNth:
    """Refine frames 0, N, 2N, ... (batch use: a fixed share of the frames)."""

    def __init__(self, n: int):
        self.n = n

    def pick(self, index: int, window: list[Frame], k: int, cost: float | None) -> bool:
        return index % self.n == 0

    def spent(self, seconds: float) -> None:
        pass

    def frame_passed(self) -> None:
        pass


class Budget:
    """Refine as many frames as an average of ``budget_s`` seconds per frame pays for, preferring motion.

    Every frame adds ``budget_s`` of credit, capped at what one or two refinements cost (so a quiet
    stretch cannot buy a burst); a frame is refined when the credit covers the model's cost and the
    frame moves at least as much as the median of the last frames, or when the credit is full and
    would otherwise be wasted. What a refinement really took is taken off the credit, so the
    average never overruns the budget.
    """

    HISTORY = 25

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.credit = 0.0
        self.cap = 2 * budget_s
        self.recent: collections.deque[float] = collections.deque(maxlen=self.HISTORY)

    def pick(self, index: int, window: list[Frame], k: int, cost: float | None) -> bool:
        score = motion(window, k)
        typical = float(np.median(self.recent)) if self.recent else 0.0
        self.recent.append(score)
        cost = cost or 0.0
        self.cap = max(2 * self.budget_s, 1.5 * cost)
        return self.credit >= cost and (score >= typical or self.credit + self.budget_s > self.cap)

    def spent(self, seconds: float) -> None:
        self.credit -= seconds

    def frame_passed(self) -> None:
        self.credit = min(self.credit + self.budget_s, self.cap)


class TcsrStage:
    """The sr-tcsr filter stage (:mod:`srtools.framefilter`).

    Args:
        selector: which frames to refine (:class:`EveryNth` or :class:`Budget`), among those the
            deadline controller allows.
    """

    def __init__(self, selector: EveryNth | Budget):
        self.selector = selector
        self.gate = CostGate()
        self.fallbacks = 0  # frames passed through because refining would have missed their deadline
        self.predicted_to_lose = 0  # frames passed through because refining would have made them worse
        self.frames: dict[int, Frame] = {}
        self.received = 0  # frames in
        self.next_out = 0  # index of the next frame to output

    @property
    def probes(self) -> int:
        return self.gate.probes

    def as_dict(self) -> dict:
        """Counters for sr-tcsr's --stats (:class:`srtools.framefilter.Counters`)."""
        return {"predicted_to_lose": self.predicted_to_lose}

    def describe(self) -> str:
        return f"{self.predicted_to_lose} passed through as predicted to lose" if self.predicted_to_lose else ""

    def process(self, frame: Frame, engine: Refiner | None, time_left: float) -> tuple[list[Frame], int]:
        self.frames[self.received] = frame
        self.received += 1
        self.selector.frame_passed()
        use_engine = engine is not None and (math.isinf(time_left) or self.gate.allow(engine, time_left))
        self.fallbacks += engine is not None and not use_engine
        return self._emit(engine, use_engine, end=False)

    def flush(self, engine: Refiner | None) -> tuple[list[Frame], int]:
        return self._emit(engine, True, end=True)

    def _emit(self, engine: Refiner | None, use_engine: bool, end: bool) -> tuple[list[Frame], int]:
        k = engine.k if engine is not None else 0
        out, ran = [], 0
        while self.next_out < self.received and (end or self.next_out + k < self.received):
            t = self.next_out
            frame = self.frames[t]
            if engine is not None and not engine.gains:
                self.predicted_to_lose += 1  # the model is not run at all
            elif engine is not None and use_engine and (end or not ran):  # one refinement per frame in
                window = [self.frames[i] for i in window_indices(t, k, self.received).tolist()]
                if self.selector.pick(t, window, k, self.gate.cost):
                    start = time.perf_counter()
                    refined = engine.refine(window)
                    took = time.perf_counter() - start
                    self.selector.spent(took)
                    self.gate.record(took)
                    if refined is None:
                        self.predicted_to_lose += 1
                    else:
                        frame = refined
                        ran += 1
            out.append(frame)
            self.next_out += 1
        # Keep what later windows need: frames from (next frame out) - K_MAX on.
        for index in [i for i in self.frames if i < self.next_out - K_MAX]:
            del self.frames[index]
        return out, ran
