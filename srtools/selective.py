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

How many: the measured time per block (a moving average over batched calls, :class:`CostModel`)
sets how many fit the time left in the frame's slot (:class:`srtools.framefilter.Deadline`), after
the bicubic and composition work. With a latency of one frame, 35% of the slot stays unused as a
margin; with two or more, the network takes 90% of it, since a frame that overruns its slot is not
late yet and the next frames' slots pay the overrun back (on this project's 2-core machine: twice
the blocks, README). The blocks run in up to :attr:`SelectiveUpscaleStage.CALLS` batched calls, and a
call that would end past :attr:`SelectiveUpscaleStage.STOP_AT` of the time until the frame is late
is skipped: a slow spell the estimates missed costs blocks, not a late frame.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import cv2
import numpy as np
import torch

from .framefilter import CostGate, MovingAverage
from .metrics import box_sums
from .upscale import ModelUpscaler, bicubic, resize_plane, to_plane, to_unit
from .y4m import Frame, Header


class CostModel:
    """Selective SR's estimates of one model's times on this machine, in seconds, and what they allow.

    Attributes:
        whole: a whole frame's time: up at once, down gradually (:class:`srtools.framefilter.MovingAverage`).
        block: one block's time (its window's) in a batched call: a moving average.
        overhead: a selective frame's own work (bicubic, composition): a moving average.
        whole_ratio: a whole frame's time over the time of blocks whose windows hold as many pixels,
            measured once both are (None until then): not 1, since small windows keep the activations
            in cache (1.4 on this project's 2-core machine, where windows of 58x58 take 0.8 us a pixel
            and whole 320x180 frames 1.1).
        blocks_fresh: blocks ran on the last frame, so their time is as fresh as a whole frame's.

    Args:
        whole: a whole frame's time to start from (the model's warm-up; inf when not measured).
        frame_in_windows: how many windows' worth of pixels a frame holds.
    """

    WEIGHT = 0.3  # of the newest measurement in the whole-frame and block times
    OVERHEAD_WEIGHT = 0.2  # in the overhead

    def __init__(self, whole: float, frame_in_windows: float):
        self.whole = MovingAverage(self.WEIGHT, whole, rises_at_once=True)
        # Until measured: the whole frame's time per pixel, on a window's pixels, with a margin.
        self.block = MovingAverage(self.WEIGHT, 1.5 * whole / frame_in_windows if math.isfinite(whole) else 0.01)
        self.overhead = MovingAverage(self.OVERHEAD_WEIGHT, 0.0)
        self.frame_in_windows = frame_in_windows
        self.whole_ratio: float | None = None
        self.blocks_fresh = False

    def whole_fits(self, seconds: float) -> bool:
        return self.whole.value <= seconds

    def whole_trial(self, seconds: float) -> bool:
        """Whether to try a whole frame that its own estimate says does not fit in ``seconds``: the only
        way back to whole frames after a slow spell raised that estimate, once blocks measured on the
        frame before predict that it fits."""
        return not self.whole_fits(seconds) and self.blocks_fresh and self.whole_from_blocks() <= seconds

    def whole_from_blocks(self) -> float:
        """A whole frame's time as the blocks' time predicts it (inf until the ratio is measured)."""
        return math.inf if self.whole_ratio is None else self.block.value * self.frame_in_windows * self.whole_ratio

    def blocks_fitting(self, seconds: float) -> int:
        """How many blocks fit in ``seconds``, once the frame's overhead is paid."""
        return int(max(0.0, seconds - self.overhead.value) // self.block.value)

    def measured_whole(self, seconds: float, trial: bool) -> None:
        """A whole frame took ``seconds``; a trial's figure stands alone (the estimate was a slow spell's)."""
        self.whole.add(seconds, alone=trial)
        if trial:  # blocks were measured on the frame before, at the same speed
            self.whole_ratio = self._bounded_ratio(seconds / (self.block.value * self.frame_in_windows))
        self.blocks_fresh = False

    def measured_blocks(self, seconds_each: float, probe: bool) -> None:
        """Blocks took ``seconds_each``; a probe's figure stands alone (the estimate kept every block out)."""
        self.block.add(seconds_each, alone=probe)
        if self.whole_ratio is None:  # the first blocks measured: against the latest whole frame's time
            self.whole_ratio = self._bounded_ratio(self.whole.value / (seconds_each * self.frame_in_windows))

    def measured_frame(self, seconds: float, blocks: int) -> None:
        """A selective frame took ``seconds`` in all, ``blocks`` blocks computed."""
        self.overhead.add(max(0.0, seconds - self.block.value * blocks))
        self.blocks_fresh = blocks > 0

    @staticmethod
    def _bounded_ratio(ratio: float) -> float:
        """A measured whole/blocks ratio, bounded so that one measurement a load spike disturbed can
        neither keep whole frames away for good nor try them on every frame."""
        return min(max(ratio, 0.5), 2.0)


@dataclasses.dataclass
class BlockCounts:
    """What selective SR did with the blocks of the frames it upscaled in blocks (not whole): the
    counters sr-serve reports (:class:`srtools.framefilter.Stats`).

    Attributes:
        frames: frames upscaled in blocks.
        computed: their blocks that went through the network.
        reused: their blocks that took a remembered correction instead, exact or stale.
        stale: those of the reused blocks whose window had changed (by up to STALE_LEVELS).
        total: all their blocks.
    """

    frames: int = 0
    computed: int = 0
    reused: int = 0
    stale: int = 0
    total: int = 0

    @property
    def share(self) -> float | None:
        """The share of the blocks with network output, computed or reused (None before any frame in blocks)."""
        return (self.computed + self.reused) / self.total if self.total else None

    def as_dict(self) -> dict:
        share = self.share
        return {"block_frames": self.frames, "blocks_computed": self.computed, "blocks_reused": self.reused,
                "blocks_stale": self.stale, "blocks_total": self.total,
                "block_share": None if share is None else round(share, 4)}

    def describe(self) -> str:
        if not self.total:
            return ""
        return (f"selective SR on {self.frames} frames: {self.share:.0%} of their blocks by the network "
                f"({self.computed} computed, {self.reused} reused, {self.stale} of them stale; {self.total} in all)")


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


class ModelState:
    """What selective SR keeps for its current model: the block grid, each block's last correction
    (network output minus bicubic) with the low-res window it was computed on, and the cost estimates.

    Args:
        engine: the model.
        shape: (h, w), the low-res luma's size.
        block: block size in low-res pixels.
    """

    def __init__(self, engine: ModelUpscaler, shape: tuple[int, int], block: int):
        h, w = shape
        self.engine, self.scale = engine, engine.info.scale
        self.grid = BlockGrid.build(h, w, block, engine.model.receptive_radius())
        n = len(self.grid)
        self.has_output = np.zeros(n, dtype=bool)
        self.references = np.zeros((n, *self.grid.window), np.uint8)  # each block's window when computed
        self.correction = np.zeros((h * self.scale, w * self.scale), np.int16)  # network - bicubic
        self.starved = 0  # consecutive frames on which no block fitted
        frame_in_windows = h * w / (self.grid.window[0] * self.grid.window[1])
        self.costs = CostModel(engine.cost if engine.cost is not None else math.inf, frame_in_windows)

    def windows(self, luma: np.ndarray, chosen: np.ndarray | slice = slice(None)) -> np.ndarray:
        """(B, wh, ww) the windows of ``luma``."""
        wh, ww = self.grid.window
        return np.stack([luma[wy:wy + wh, wx:wx + ww] for wy, wx in self.grid.windows[chosen]])

    def region(self, b: int) -> tuple[slice, slice]:
        """Block ``b`` in the output plane."""
        y0, y1, x0, x1 = self.grid.blocks[b]
        return slice(self.scale * y0, self.scale * y1), slice(self.scale * x0, self.scale * x1)

    def changes(self, luma: np.ndarray) -> np.ndarray:
        """(B,) how much each block's window in ``luma`` changed since its correction was computed: its
        largest pixel difference in levels (inf: never computed)."""
        changes = np.full(len(self.grid), np.inf)
        if self.has_output.any():
            changed = np.abs(self.windows(luma).astype(np.int16) - self.references).max(axis=(1, 2))
            changes[self.has_output] = changed[self.has_output]
        return changes

    def remember_full(self, luma: np.ndarray, out: np.ndarray) -> None:
        """A whole frame's luma went through the network (``out``): every block's correction is remembered."""
        self.correction[:] = out.astype(np.int16) - resize_plane(luma, *out.shape)
        self.references[:] = self.windows(luma)
        self.has_output[:] = True

    def paste(self, out: np.ndarray, luma: np.ndarray, blocks: np.ndarray, outputs: list[torch.Tensor]) -> None:
        """The network's ``outputs`` for ``blocks`` of ``luma`` replace them in ``out`` (bicubic luma), and
        their corrections are remembered."""
        for b, tensor in zip(blocks, outputs):
            region = self.region(b)
            sr = to_plane(tensor)
            self.correction[region] = sr.astype(np.int16) - out[region]
            out[region] = sr
        if len(blocks):
            self.references[blocks] = self.windows(luma, blocks)
            self.has_output[blocks] = True

    def correct(self, out: np.ndarray, blocks: np.ndarray) -> None:
        """``blocks`` of ``out`` (bicubic luma) take their remembered correction."""
        for b in blocks:
            region = self.region(b)
            out[region] = np.clip(out[region] + self.correction[region], 0, 255)


@dataclasses.dataclass
class Plan:
    """What selective SR does with the blocks of one frame.

    Attributes:
        chosen: the blocks to compute, best first (a stop time may leave the last ones out).
        reuse: (B,) bool, the blocks whose window has not changed: their correction as it is.
        stale: (B,) bool, the blocks that changed a little: their correction unless they are computed.
        probe: the blocks run only to re-measure their time (none fitted for a while).
    """

    chosen: np.ndarray
    reuse: np.ndarray
    stale: np.ndarray
    probe: bool


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
        clock: the time in seconds (tests simulate it).
    """

    # Share of the time left in the frame's slot that the network may take: writing the frame and the
    # estimates' noise need the rest, or, with a latency of 2 frames or more, come out of later slots.
    USABLE, USABLE_NO_SLACK = 0.9, 0.65
    STOP_AT = 0.85  # no batch of blocks starts that would end after this share of the time until the frame is late
    CALLS = 3  # batched calls per frame: between them, a slow spell the estimates missed is caught
    STARVED_PROBE = 8  # frames without any block before one block runs to re-measure
    STALE_LEVELS = 16  # largest window change (levels) for a stale correction over bicubic alone

    def __init__(self, out_header: Header, block: int = 32, reuse_threshold: float = 2.0, latency: int = 1,
                 clock: Callable[[], float] = time.perf_counter):
        self.out_header, self.block, self.reuse_threshold = out_header, block, reuse_threshold
        self.usable = self.USABLE if latency > 1 else self.USABLE_NO_SLACK
        self.slack = (latency - 1) / float(out_header.fps)  # beyond the slot, until the frame is late
        self.clock = clock
        self.gate = CostGate()  # models that cannot run on blocks
        self.state: ModelState | None = None  # the current model's grid, reuse memory and cost estimates
        self.counts = BlockCounts()
        self.fallbacks = 0  # frames with no network output at all
        self.block_probes = 0  # blocks run only to re-measure (see STARVED_PROBE)

    @property
    def probes(self) -> int:
        return self.gate.probes + self.block_probes

    def start(self, engine: ModelUpscaler, frame: Frame) -> None:
        """Take up a new model, on frames of ``frame``'s size: its grid, an empty reuse memory, and the
        first estimates of its times (:meth:`process` does it when the model changes)."""
        self.state = ModelState(engine, frame.y.shape, self.block)

    def process(self, frame: Frame, engine: ModelUpscaler | None, time_left: float) -> tuple[list[Frame], int]:
        if engine is None:
            return [bicubic(frame, self.out_header)], 0
        if math.isinf(time_left):  # not real time: every frame whole
            return [engine.upscale(frame, self.out_header)], 1
        if not (engine.info.color == "y" and hasattr(engine.model, "receptive_radius")):
            return self._whole_or_bicubic(frame, engine, time_left)
        if self.state is None or engine is not self.state.engine:
            self.start(engine, frame)
        stop_at = self.clock() + self.STOP_AT * (time_left + self.slack)
        time_left *= self.usable
        costs = self.state.costs
        trial = costs.whole_trial(time_left)
        if costs.whole_fits(time_left) or trial:
            return [self._whole(frame, engine, trial)], 1
        out, any_output = self._selective(frame, engine, time_left, stop_at)
        return [out], int(any_output)

    def flush(self, engine: ModelUpscaler | None) -> tuple[list[Frame], int]:
        return [], 0

    # ------------------------------------------------------------------------------------------
    def _whole_or_bicubic(self, frame: Frame, engine: ModelUpscaler, time_left: float) -> tuple[list[Frame], int]:
        """Models that cannot run on blocks (colour mode yuv): the whole frame when it fits."""
        if not self.gate.allow(engine, time_left):
            self.fallbacks += 1
            return [bicubic(frame, self.out_header)], 0
        start = self.clock()
        out = engine.upscale(frame, self.out_header)
        self.gate.record(self.clock() - start)
        return [out], 1

    def _whole(self, frame: Frame, engine: ModelUpscaler, trial: bool) -> Frame:
        """The whole frame through the network, every block's correction remembered."""
        start = self.clock()
        out = engine.upscale(frame, self.out_header)
        self.state.costs.measured_whole(self.clock() - start, trial)
        self.state.remember_full(frame.y, out.y)
        return out

    def _selective(self, frame: Frame, engine: ModelUpscaler, time_left: float, stop_at: float) -> tuple[Frame, bool]:
        """Bicubic, then as many of the best changed blocks as fit in ``time_left`` seconds (calls that
        would end past the clock's ``stop_at`` skipped), then the remembered corrections of the unchanged
        blocks and of the slightly changed ones left out; (frame, any network output)."""
        start = self.clock()
        out = bicubic(frame, self.out_header)
        plan = self._plan(frame.y, time_left, start)
        computed, outputs = self._run(engine, frame.y, plan, stop_at)
        any_output = self._compose(out.planes[0], frame.y, plan, computed, outputs)
        self.state.costs.measured_frame(self.clock() - start, len(computed))
        return out, any_output

    def _plan(self, luma: np.ndarray, time_left: float, since: float) -> Plan:
        """Which blocks of ``luma`` to compute, best first, as many as fit in ``time_left`` seconds from
        the clock's ``since``, and which take their remembered correction."""
        state = self.state
        changes = state.changes(luma) if self.reuse_threshold > 0 else np.full(len(state.grid), np.inf)
        reuse = changes <= self.reuse_threshold
        candidates = np.flatnonzero(~reuse)
        fit = state.costs.blocks_fitting(time_left - (self.clock() - since))
        starving = fit == 0 and len(candidates) > 0
        probe = starving and state.starved + 1 >= self.STARVED_PROBE
        if probe:  # re-measure: the machine may have time again
            fit = 1
        if 0 < fit < len(candidates):
            candidates = candidates[np.argsort(-self._priority(luma, candidates, changes), kind="stable")]
        chosen = candidates[:fit]
        state.starved = 0 if len(chosen) else state.starved + starving
        # Blocks not computed whose window changed little still take their last correction: bicubic plus
        # a correction slightly out of date beats bicubic alone.
        return Plan(chosen, reuse, (changes <= self.STALE_LEVELS) & ~reuse, probe)

    def _priority(self, luma: np.ndarray, candidates: np.ndarray, changes: np.ndarray) -> np.ndarray:
        """How much computing each candidate block now is expected to gain, higher first (see the
        module docstring): its detail, scaled down by how little it changed."""
        return self._detail(luma, candidates) * np.minimum(1.0, changes[candidates] / self.STALE_LEVELS)

    def _detail(self, luma: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(len(candidates),) the mean Laplacian energy of each candidate block of ``luma``."""
        laplacian = cv2.Laplacian(luma, cv2.CV_32F)
        y0, y1, x0, x1 = self.state.grid.blocks[candidates].T
        return box_sums(laplacian * laplacian, y0, y1, x0, x1) / ((y1 - y0) * (x1 - x0))

    def _run(self, engine: ModelUpscaler, luma: np.ndarray, plan: Plan,
             stop_at: float) -> tuple[np.ndarray, list[torch.Tensor]]:
        """The network on the plan's chosen blocks in up to :attr:`CALLS` batched calls, skipping the
        rest once a call would end past the clock's ``stop_at``: (the blocks computed, their outputs)."""
        if not len(plan.chosen):
            return plan.chosen, []
        costs = self.state.costs
        outputs: list[torch.Tensor] = []
        per_block, start = costs.block.value, self.clock()
        for batch in np.array_split(plan.chosen, min(self.CALLS, len(plan.chosen))):
            if outputs and self.clock() + per_block * len(batch) > stop_at:
                break
            outputs += upscale_blocks(engine, luma, self.state.grid, batch)
            per_block = (self.clock() - start) / len(outputs)
        costs.measured_blocks(per_block, plan.probe)
        return plan.chosen[:len(outputs)], outputs

    def _compose(self, out: np.ndarray, luma: np.ndarray, plan: Plan, computed: np.ndarray,
                 outputs: list[torch.Tensor]) -> bool:
        """Paste the computed blocks' outputs into ``out`` (bicubic luma of ``luma``) and remember their
        corrections, add the remembered ones where the plan reuses them, count; whether any block
        has network output."""
        self.state.paste(out, luma, computed, outputs)
        stale = plan.stale.copy()
        stale[computed] = False
        reuse = plan.reuse | stale
        self.state.correct(out, np.flatnonzero(reuse))
        counts = self.counts
        counts.frames += 1
        counts.computed += len(computed)
        counts.reused += int(reuse.sum())
        counts.stale += int(stale.sum())
        counts.total += len(self.state.grid)
        self.block_probes += plan.probe
        any_output = len(computed) > 0 or bool(reuse.any())
        self.fallbacks += not any_output
        return any_output
