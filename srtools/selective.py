"""Selective SR: the network on the blocks of a frame where it gains most, as many as fit the deadline.

The low-res frame is cut into ``block`` x ``block`` blocks. Each block goes through the network
inside a *window*: the block plus a halo of the network's receptive radius on every side, shifted
inward at the frame's edges so that every window has the same size (one batched call) and its
edges are either the frame's edges or at least a halo away from the block. The network's output
for a block is then the same as the full frame's (to float rounding): no seams between blocks.

Temporal reuse: each block remembers the network's *correction* (its output minus bicubic) from
its last pass, with the low-res window it was computed on. A block whose window has not changed
since (no pixel by more than ``reuse_threshold`` levels: x264 leaves static areas nearly
bit-exact, while a mean over the window would hide a moving edge) is not computed again: it takes
bicubic of the current frame plus that correction. A block that did change, by up to
:attr:`SelectiveUpscaleStage.STALE_LEVELS`, and that the deadline leaves out takes the same
slightly stale correction rather than bicubic alone: much better on static-camera clips, a few
hundredths of a dB worse on a moving camera (benchmarks/bench_selective.py, README). Reusing the
correction rather than the pixels keeps the current frame's own low frequencies, so small changes
do not freeze.

Which blocks: the most detailed, by the energy of the Laplacian of the current low-res block, which
tracks where the network corrects much even when the camera moves (a block's past correction does
not); a block that could fall back on a stale correction is ranked down in proportion to how
little it changed, since computing it gains only what the stale correction misses.

How many: the measured time per block (a moving average over batched calls) sets how many fit
the time left in the frame's slot (:class:`srtools.framefilter.Deadline`), after the bicubic and
composition work. With a latency of one frame, 35% of the slot stays unused as a margin; with
two or more, the network takes 90% of it, since a frame that overruns its slot is not late
yet and the next frames' slots pay the overrun back (on this project's 2-core machine: twice the
blocks, README). The blocks run in up to :attr:`SelectiveUpscaleStage.CALLS` batched calls, and a
call that would end past :attr:`SelectiveUpscaleStage.STOP_AT` of the time until the frame is late
is skipped: a slow spell the estimates missed costs blocks, not a late frame.
"""

from __future__ import annotations

import dataclasses
import math
import time

import cv2
import numpy as np
import torch

from .framefilter import CostGate
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
    """sr-serve's filter stage (:mod:`srtools.framefilter`): the model on whole frames when it fits the
    time left, else on the blocks that gain most (see the module docstring); bicubic elsewhere.

    Args:
        out_header: the output stream's header (input size x scale).
        block: block size in low-res pixels.
        reuse_threshold: largest luma change (levels) of a block's window under which its last
            correction is reused instead of computing the block; 0 turns reuse off, stale
            corrections included.
        latency: the frame intervals a frame may take before it is late (:class:`srtools.framefilter.Deadline`).
    """

    # Share of the time left in the frame's slot that the network may take: writing the frame and the
    # estimates' noise need the rest, or, with a latency of 2 frames or more, come out of later slots.
    USABLE, USABLE_NO_SLACK = 0.9, 0.65
    STOP_AT = 0.85  # no batch of blocks starts that would end after this share of the time until the frame is late
    CALLS = 3  # batched calls per frame: between them, a slow spell the estimates missed is caught
    STARVED_PROBE = 8  # frames without any block before one block runs to re-measure
    STALE_LEVELS = 16  # largest window change (levels) for a stale correction over bicubic alone

    def __init__(self, out_header: Header, block: int = 32, reuse_threshold: float = 2.0, latency: int = 1):
        self.out_header, self.block, self.reuse_threshold = out_header, block, reuse_threshold
        self.usable = self.USABLE if latency > 1 else self.USABLE_NO_SLACK
        self.slack = (latency - 1) / float(out_header.fps)  # beyond the slot, until the frame is late
        self.gate = CostGate()
        self.fallbacks = 0  # frames with no network output at all
        # Blocks computed, blocks that took a remembered correction (exact or stale), stale ones alone.
        self.blocks_run = self.blocks_reused = self.blocks_stale = self.blocks_total = 0
        self._engine: ModelUpscaler | None = None
        self.full_cost = math.inf
        self._stop_at = math.inf

    @property
    def probes(self) -> int:
        return self.gate.probes

    @property
    def share(self) -> float:
        """Share of blocks with network output (computed or a correction reused) over the selective frames."""
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
        self._stop_at = time.perf_counter() + self.STOP_AT * (time_left + self.slack)
        time_left *= self.usable
        # A whole frame after a slow spell raised full_cost (the only way back to whole frames), once
        # blocks have become fast enough to say that it would fit.
        trial = self.full_cost > time_left and self._blocks_measured and self._whole_from_blocks() <= time_left
        if self.full_cost <= time_left or trial:
            start = time.perf_counter()
            out = engine.upscale(frame, self.out_header)
            took = time.perf_counter() - start
            self.full_cost = _updated(self.full_cost, took, trust=trial)
            if trial:  # blocks were measured on the frame before, at the same speed
                self.whole_ratio = self._bounded_ratio(took / (self.block_cost * self.frame_in_windows))
            self._blocks_measured = False
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
        self.has_output = np.zeros(n, dtype=bool)
        self.references = np.zeros((n, *self.grid.window), np.uint8)  # each block's window when computed
        self.correction = np.zeros((h * engine.info.scale, w * engine.info.scale), np.int16)  # network - bicubic
        self.starved = 0
        self.full_cost = engine.cost if engine.cost is not None else math.inf
        self.frame_in_windows = h * w / (self.grid.window[0] * self.grid.window[1])
        # Until measured: the whole frame's time per pixel, on a window's pixels, with a margin.
        self.block_cost = 1.5 * self.full_cost / self.frame_in_windows if math.isfinite(self.full_cost) else 0.01
        # A whole frame's time over the time of blocks whose windows hold as many pixels, measured once
        # both are: not 1, since small windows keep the activations in cache (1.4 on this project's
        # 2-core machine, where windows of 58x58 take 0.8 us a pixel and whole 320x180 frames 1.1).
        self.whole_ratio: float | None = None
        self._blocks_measured = False  # on the last frame: block_cost is as fresh as a whole frame's time
        self.overhead = 0.0  # bicubic + composition, measured on every selective frame

    @staticmethod
    def _bounded_ratio(ratio: float) -> float:
        """A measured whole/blocks ratio, bounded so that one measurement a load spike disturbed can
        neither keep whole frames away for good nor try them on every frame."""
        return min(max(ratio, 0.5), 2.0)

    def _whole_from_blocks(self) -> float:
        """A whole frame's time as the blocks' measured time predicts it (inf until blocks are measured)."""
        return math.inf if self.whole_ratio is None else self.block_cost * self.frame_in_windows * self.whole_ratio

    def _windows(self, luma: np.ndarray, chosen: np.ndarray | slice = slice(None)) -> np.ndarray:
        """(B, wh, ww) the windows of ``luma``."""
        wh, ww = self.grid.window
        return np.stack([luma[wy:wy + wh, wx:wx + ww] for wy, wx in self.grid.windows[chosen]])

    def _remember_full(self, frame: Frame, out: Frame) -> None:
        """A whole frame went through the network: every block's correction is remembered."""
        self.correction[:] = out.y.astype(np.int16) - resize_plane(frame.y, *out.y.shape)
        self.references[:] = self._windows(frame.y)
        self.has_output[:] = True

    def _priority(self, luma: np.ndarray, candidates: np.ndarray, difference: np.ndarray) -> np.ndarray:
        """How much computing each candidate block now is expected to gain, higher first (see the
        module docstring): its detail, scaled down by how little it changed."""
        return self._detail(luma, candidates) * np.minimum(1.0, difference[candidates] / self.STALE_LEVELS)

    def _detail(self, luma: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(len(candidates),) the mean Laplacian energy of each candidate block of ``luma``."""
        laplacian = cv2.Laplacian(luma, cv2.CV_32F)
        sums = cv2.integral(laplacian * laplacian, sdepth=cv2.CV_64F)
        y0, y1, x0, x1 = self.grid.blocks[candidates].T
        return (sums[y1, x1] - sums[y0, x1] - sums[y1, x0] + sums[y0, x0]) / ((y1 - y0) * (x1 - x0))

    def _region(self, b: int, scale: int) -> tuple[slice, slice]:
        """Block ``b`` in the output plane."""
        y0, y1, x0, x1 = self.grid.blocks[b]
        return slice(scale * y0, scale * y1), slice(scale * x0, scale * x1)

    def _run_blocks(self, engine: ModelUpscaler, luma: np.ndarray,
                    chosen: np.ndarray) -> tuple[np.ndarray, list[torch.Tensor]]:
        """The network on ``chosen`` in up to :attr:`CALLS` batched calls, skipping the rest once a call
        would end past the stop time: (the blocks computed, their outputs)."""
        outputs: list[torch.Tensor] = []
        per_block, start = self.block_cost, time.perf_counter()
        for batch in np.array_split(chosen, min(self.CALLS, len(chosen))):
            if outputs and time.perf_counter() + per_block * len(batch) > self._stop_at:
                break
            outputs += upscale_blocks(engine, luma, self.grid, batch)
            per_block = (time.perf_counter() - start) / len(outputs)
        return chosen[:len(outputs)], outputs

    def _selective(self, frame: Frame, engine: ModelUpscaler, time_left: float) -> tuple[Frame, int]:
        """Bicubic, then as many of the best changed blocks as fit, then the remembered corrections of
        the unchanged blocks and of the slightly changed ones left out; (frame, any network output)."""
        start = time.perf_counter()
        s = engine.info.scale
        out = bicubic(frame, self.out_header)
        luma = out.planes[0]
        # How much each block's window changed since its correction was computed (inf: never computed,
        # or reuse off).
        difference = np.full(len(self.grid), np.inf)
        if self.reuse_threshold > 0 and self.has_output.any():
            changed = np.abs(self._windows(frame.y).astype(np.int16) - self.references).max(axis=(1, 2))
            difference[self.has_output] = changed[self.has_output]
        reuse = difference <= self.reuse_threshold
        candidates = np.flatnonzero(~reuse)
        spare = time_left - self.overhead - (time.perf_counter() - start)
        fit = int(max(0.0, spare) // self.block_cost)
        probing = fit == 0 and len(candidates) > 0 and self.starved + 1 >= self.STARVED_PROBE
        if fit == 0 and len(candidates):
            self.starved += 1
            if probing:  # re-measure: the machine may have time again
                fit = 1
        if 0 < fit < len(candidates):
            candidates = candidates[np.argsort(-self._priority(frame.y, candidates, difference), kind="stable")]
        chosen = candidates[:fit]
        self._blocks_measured = len(chosen) > 0
        if len(chosen):
            self.starved = 0
            run_start = time.perf_counter()
            chosen, outputs = self._run_blocks(engine, frame.y, chosen)
            took = (time.perf_counter() - run_start) / len(chosen)
            self.block_cost = took if probing else self.block_cost + 0.3 * (took - self.block_cost)
            if self.whole_ratio is None:  # the first blocks measured: against the latest whole frame's time
                self.whole_ratio = self._bounded_ratio(self.full_cost / (took * self.frame_in_windows))
            for b, tensor in zip(chosen, outputs):
                region = self._region(b, s)
                sr = to_plane(tensor)
                self.correction[region] = sr.astype(np.int16) - luma[region]
                luma[region] = sr
            self.references[chosen] = self._windows(frame.y, chosen)
            self.has_output[chosen] = True
        # Blocks not computed this frame whose window changed little still take their last correction:
        # bicubic plus a correction slightly out of date beats bicubic alone.
        stale = (difference <= self.STALE_LEVELS) & ~reuse
        stale[chosen] = False
        reuse |= stale
        for b in np.flatnonzero(reuse):
            region = self._region(b, s)
            luma[region] = np.clip(luma[region] + self.correction[region], 0, 255)
        self.blocks_run += len(chosen)
        self.blocks_reused += int(reuse.sum())
        self.blocks_stale += int(stale.sum())
        self.blocks_total += len(self.grid)
        if not len(chosen) and not reuse.any():
            self.fallbacks += 1
        total = time.perf_counter() - start
        self.overhead += 0.2 * (max(0.0, total - self.block_cost * len(chosen)) - self.overhead)
        return out, len(chosen) > 0 or bool(reuse.any())
