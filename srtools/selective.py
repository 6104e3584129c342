"""Selective SR: the network on the blocks of a frame where it gains most, as many as fit the deadline.

The low-res frame is cut into ``block`` x ``block`` blocks. Each block goes through the network
inside a *window*: the block plus a halo of the network's receptive radius on every side, shifted
inward at the frame's edges so that every window has the same size (one batched call) and its
edges are either the frame's edges or at least a halo away from the block. The network's output
for a block is then the same as the full frame's (to float rounding): no seams between blocks.

Which blocks: the ones whose correction (the network's output minus bicubic, mean squared, over
the block) was largest the last time they went through the network, that correction weighted up
with its age so that every block is looked at again; blocks never seen yet come first. What the
network corrects much is where it gains much (benchmarks/bench_selective.py measures how much of
an oracle's choice this keeps).

Temporal reuse: a block whose low-res window has not changed since its last pass (no pixel by more
than ``reuse_threshold`` levels: x264 leaves static areas nearly bit-exact, while a mean over the
window would hide a moving edge) takes its previous output instead of being computed again.

How many: the measured time per block (a moving average over batched calls) sets how many fit
the time left before the frame is due, after the bicubic and composition work.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch

from .filter import CostGate
from .upscale import ModelUpscaler, bicubic, resize_plane, to_plane, to_unit
from .y4m import Frame, Header


def _updated(estimate: float, measured: float, trust: bool) -> float:
    """A time estimate after a new measurement: up at once (a slower machine must not make the next
    frames late too), down gradually (one fast call is no trend), or the measurement alone when it
    is the only recent figure (a re-measuring try)."""
    if trust or measured > estimate:
        return measured
    return estimate + 0.3 * (measured - estimate)


@dataclasses.dataclass(frozen=True)
class BlockGrid:
    """Blocks of a (height, width) plane and their equally sized windows.

    Attributes:
        blocks: (B, 4) int rows of (y0, y1, x0, x1), the block in the plane.
        windows: (B, 2) int rows of (wy0, wx0), the window's top-left corner.
        window: (wh, ww), the window size.
    """

    blocks: np.ndarray
    windows: np.ndarray
    window: tuple[int, int]

    @classmethod
    def build(cls, height: int, width: int, block: int, halo: int) -> BlockGrid:
        wh, ww = min(block + 2 * halo, height), min(block + 2 * halo, width)
        blocks, windows = [], []
        for y0 in range(0, height, block):
            for x0 in range(0, width, block):
                y1, x1 = min(y0 + block, height), min(x0 + block, width)
                blocks.append((y0, y1, x0, x1))
                windows.append((min(max(y0 - halo, 0), height - wh), min(max(x0 - halo, 0), width - ww)))
        return cls(np.array(blocks), np.array(windows), (wh, ww))

    def __len__(self) -> int:
        return len(self.blocks)


@torch.inference_mode()
def upscale_blocks(upscaler: ModelUpscaler, luma: np.ndarray, grid: BlockGrid,
                   chosen: np.ndarray) -> list[torch.Tensor]:
    """The network's luma output for the ``chosen`` blocks of ``luma`` (h, w) uint8, one batched call.

    Returns:
        One (s * bh, s * bw) float tensor in [0, 1] per chosen block, unclamped.
    """
    s = upscaler.info.scale
    wh, ww = grid.window
    crops = np.stack([luma[wy:wy + wh, wx:wx + ww] for wy, wx in grid.windows[chosen]])[:, None]
    x = to_unit(crops, upscaler.device).contiguous(memory_format=torch.channels_last)
    with upscaler.autocast:
        out = upscaler.model(x)[:, 0].float()
    blocks = []
    for o, (y0, y1, x0, x1), (wy, wx) in zip(out, grid.blocks[chosen], grid.windows[chosen]):
        blocks.append(o[s * (y0 - wy):s * (y1 - wy), s * (x0 - wx):s * (x1 - wx)])
    return blocks


class SelectiveUpscaleStage:
    """sr-serve's filter stage (:mod:`srtools.filter`): the model on whole frames when it fits the
    time left, else on the blocks that gain most (see the module docstring); bicubic elsewhere.

    Args:
        out_header: the output stream's header (input size x scale).
        block: block size in low-res pixels.
        reuse_threshold: largest luma change (levels) of a block's window under which its previous
            output is reused; 0 turns reuse off.
    """

    AGE_WEIGHT = 0.05  # a block's score grows by 5% per frame it was not computed
    USABLE = 0.65  # share of the time left before the deadline that the network may take
    STARVED_PROBE = 8  # frames without any block before one block runs to re-measure

    def __init__(self, out_header: Header, block: int = 32, reuse_threshold: float = 2.0):
        self.out_header, self.block, self.reuse_threshold = out_header, block, reuse_threshold
        self.gate = CostGate()
        self.fallbacks = 0  # frames with no network output at all
        self.blocks_run = self.blocks_reused = self.blocks_total = 0
        self._engine: ModelUpscaler | None = None
        self.full_cost = math.inf
        self.try_whole = False

    @property
    def probes(self) -> int:
        return self.gate.probes

    @property
    def share(self) -> float:
        """Share of blocks with network output (computed or reused) over the selective frames so far."""
        return (self.blocks_run + self.blocks_reused) / self.blocks_total if self.blocks_total else 1.0

    def process(self, frame: Frame, engine: ModelUpscaler | None, time_left: float) -> tuple[list[Frame], int]:
        if engine is None:
            return [bicubic(frame, self.out_header)], 0
        if math.isinf(time_left):  # not real time: every frame whole
            return [engine.upscale(frame, self.out_header)], 1
        if not (engine.info.color == "y" and hasattr(engine.model, "receptive_radius")):
            return self._whole_or_bicubic(frame, engine, time_left)
        if engine is not self._engine:
            self._start(engine, frame)
        time_left *= self.USABLE  # writing the frame, and the estimates' noise, need the rest
        if self.full_cost <= time_left or self.try_whole:
            start = time.perf_counter()
            out = engine.upscale(frame, self.out_header)
            took = time.perf_counter() - start
            self.full_cost = _updated(self.full_cost, took, trust=self.try_whole)
            self.try_whole = False
            self._remember_full(frame, out)
            return [out], 1
        out, computed = self._selective(frame, engine, time_left)
        return [out], int(computed)

    def flush(self, engine: ModelUpscaler | None) -> tuple[list[Frame], int]:
        return [], 0

    # ------------------------------------------------------------------------------------------
    def _whole_or_bicubic(self, frame: Frame, engine: ModelUpscaler, time_left: float) -> tuple[list[Frame], int]:
        """Models that cannot run on blocks (colour mode yuv): the whole frame when it fits."""
        if not self.gate.allow(engine, time_left):
            self.fallbacks += 1
            return [bicubic(frame, self.out_header)], 0
        start = time.perf_counter()
        out = engine.upscale(frame, self.out_header)
        self.gate.record(time.perf_counter() - start)
        return [out], 1

    def _start(self, engine: ModelUpscaler, frame: Frame) -> None:
        """A new model: its grid, an empty reuse cache, and first estimates of its times."""
        self._engine = engine
        h, w = frame.y.shape
        self.grid = BlockGrid.build(h, w, self.block, engine.model.receptive_radius())
        n = len(self.grid)
        self.score = np.full(n, np.inf)  # never computed: first in line
        self.age = np.zeros(n)
        self.has_output = np.zeros(n, dtype=bool)
        self.references = np.zeros((n, *self.grid.window), np.uint8)  # each block's window when computed
        self.cached = np.zeros((h * engine.info.scale, w * engine.info.scale), np.uint8)
        self.starved = 0
        self.full_cost = engine.cost if engine.cost is not None else math.inf
        self.frame_in_windows = h * w / (self.grid.window[0] * self.grid.window[1])
        # Until measured: the whole frame's time per pixel, on a window's pixels, with a margin.
        self.block_cost = 1.5 * self.full_cost / self.frame_in_windows if math.isfinite(self.full_cost) else 0.01
        self.overhead = 0.0  # bicubic + composition, measured on every selective frame

    def _windows(self, luma: np.ndarray, chosen: np.ndarray | slice = slice(None)) -> np.ndarray:
        """(B, wh, ww) the windows of ``luma``."""
        wh, ww = self.grid.window
        return np.stack([luma[wy:wy + wh, wx:wx + ww] for wy, wx in self.grid.windows[chosen]])

    def _remember_full(self, frame: Frame, out: Frame) -> None:
        """A whole frame went through the network: every block's output is cached and scored."""
        s = self._engine.info.scale
        bic = resize_plane(frame.y, *out.y.shape).astype(np.float32)
        correction = (out.y.astype(np.float32) - bic) ** 2
        for b, (y0, y1, x0, x1) in enumerate(self.grid.blocks):
            self.score[b] = correction[s * y0:s * y1, s * x0:s * x1].mean()
        self.age[:] = 0
        self.cached[:] = out.y
        self.references[:] = self._windows(frame.y)
        self.has_output[:] = True

    def _selective(self, frame: Frame, engine: ModelUpscaler, time_left: float) -> tuple[Frame, int]:
        """Bicubic, reused blocks, then as many of the best other blocks as fit; (frame, blocks computed)."""
        start = time.perf_counter()
        s = engine.info.scale
        out = bicubic(frame, self.out_header)
        luma = out.planes[0]
        reuse = np.zeros(len(self.grid), dtype=bool)
        if self.reuse_threshold > 0 and self.has_output.any():
            difference = np.abs(self._windows(frame.y).astype(np.int16) - self.references).max(axis=(1, 2))
            reuse = self.has_output & (difference <= self.reuse_threshold)
        for b in np.flatnonzero(reuse):
            y0, y1, x0, x1 = self.grid.blocks[b]
            luma[s * y0:s * y1, s * x0:s * x1] = self.cached[s * y0:s * y1, s * x0:s * x1]
        candidates = np.flatnonzero(~reuse)
        priority = self.score[candidates] * (1 + self.AGE_WEIGHT * self.age[candidates])
        order = candidates[np.argsort(-priority, kind="stable")]
        spare = time_left - self.overhead - (time.perf_counter() - start)
        fit = int(max(0.0, spare) // self.block_cost)
        # Blocks cost what the same pixels cost in a whole frame: when a whole frame's worth of them
        # would fit, try a whole frame next (the only way back after a slow spell raised full_cost).
        self.try_whole = self.block_cost * self.frame_in_windows <= time_left
        probing = fit == 0 and len(order) > 0 and self.starved + 1 >= self.STARVED_PROBE
        if fit == 0 and len(order):
            self.starved += 1
            if probing:  # re-measure: the machine may have time again
                fit = 1
        chosen = order[:fit]
        self.age += 1
        if len(chosen):
            self.starved = 0
            run_start = time.perf_counter()
            outputs = upscale_blocks(engine, frame.y, self.grid, chosen)
            took = (time.perf_counter() - run_start) / len(chosen)
            self.block_cost = _updated(self.block_cost, took, trust=probing)
            for b, tensor in zip(chosen, outputs):
                y0, y1, x0, x1 = self.grid.blocks[b]
                region = (slice(s * y0, s * y1), slice(s * x0, s * x1))
                sr = to_plane(tensor)
                self.score[b] = float(((sr.astype(np.float32) - luma[region]) ** 2).mean())
                luma[region] = self.cached[region] = sr
            self.age[chosen] = 0
            self.references[chosen] = self._windows(frame.y, chosen)
            self.has_output[chosen] = True
        self.blocks_run += len(chosen)
        self.blocks_reused += int(reuse.sum())
        self.blocks_total += len(self.grid)
        if not len(chosen) and not reuse.any():
            self.fallbacks += 1
        total = time.perf_counter() - start
        self.overhead += 0.2 * (max(0.0, total - self.block_cost * len(chosen)) - self.overhead)
        return out, len(chosen) > 0 or bool(reuse.any())
