"""The shared frame-filter loop and real-time pieces: deadlines, the cost gate's probes, selective SR
that recovers after a slow period, frames kept in order.

Real-time decisions are tested in simulated time (:class:`SimulatedClock`): the network's calls take
a set time per pixel and nothing else takes any, so other processes loading the machine change no
decision.
"""

import io
import math
import threading
from typing import Callable

import numpy as np
import pytest
import torch

from srtools import archs, framefilter, modelfile, y4m
from srtools.selective import BlockGrid, SelectiveUpscaleStage, upscale_blocks
from srtools.upscale import ModelUpscaler, bicubic

FPS = 25
HEADER = y4m.Header(64, 36, FPS)


def numbered(i: int) -> y4m.Frame:
    """Frame i: a textured luma pattern (so the network has something to correct), pixel (0, 0) = i."""
    rng = np.random.default_rng(i // 30)  # the content changes every 30 frames
    y = rng.integers(0, 256, HEADER.plane_shapes[0], dtype=np.uint8)
    y[0, 0] = i
    return y4m.Frame([y, *[np.full(shape, 128, np.uint8) for shape in HEADER.plane_shapes[1:]]])


class SimulatedClock:
    """Seconds that pass only when the test says so (the network's calls, see :class:`SimulatedNetwork`).

    Read from a live source's thread (the loop's prefetcher stamping a frame's arrival), it gives the
    arrival time that :func:`live_frames` set there for the frame being read.
    """

    def __init__(self):
        self.now = 0.0
        self.source = threading.local()

    def __call__(self) -> float:
        return getattr(self.source, "arrival", self.now)


def live_frames(clock: SimulatedClock, count: int, fps: float = FPS):
    """A live source in simulated time: frame i arrives at i / fps seconds."""
    for i in range(count):
        clock.source.arrival = i / fps
        yield numbered(i)


class SimulatedNetwork(torch.nn.Module):
    """Wraps a network: each call takes 1 us of simulated time per input pixel (2.3 ms for a whole 64x36
    frame), and 20 us more while ``slow`` is set (46 ms more, above a frame time), like a CPU taken by
    another job for a while."""

    FAST, SLOW = 1e-6, 2e-5

    def __init__(self, model: torch.nn.Module, clock: SimulatedClock):
        super().__init__()
        self.inner, self.clock, self.slow = model, clock, False

    def receptive_radius(self) -> int:
        return self.inner.receptive_radius()

    def forward(self, x):
        self.clock.now += (self.FAST + self.SLOW * self.slow) * x.numel()
        return self.inner(x)


def tiny_upscaler(clock: SimulatedClock, seed: int = 0) -> ModelUpscaler:
    """A small F-EDSR in simulated time, with a whole frame's time there for its warm-up cost."""
    torch.manual_seed(seed)
    hparams = {"scale": 2, "channels": 4, "blocks": 1}
    model = archs.build("fedsr", hparams)
    torch.nn.init.normal_(model.tail.weight, std=0.05)  # a real correction, not bicubic
    upscaler = ModelUpscaler(model, modelfile.ModelInfo("fedsr", hparams, 2), version=1)
    upscaler.model = SimulatedNetwork(upscaler.model, clock)
    upscaler.cost = SimulatedNetwork.FAST * HEADER.width * HEADER.height
    return upscaler


class RecordingStage(SelectiveUpscaleStage):
    """Records, per frame, the input frame number and whether the whole frame went through the network."""

    def __init__(self, clock: SimulatedClock, slow_frames: set[int], network: SimulatedNetwork):
        super().__init__(HEADER.resized(128, 72), block=16, reuse_threshold=0, clock=clock)
        self.slow_frames, self.network, self.path = slow_frames, network, []

    def process(self, frame, engine, time_left):
        index = int(frame.y[0, 0])
        # The loop takes a frame as soon as the prefetcher has it, and live_frames has them all at once:
        # the frame waits here until it arrives, and the wait comes off its time left.
        waited = max(0.0, index / FPS - self.clock.now)
        self.clock.now += waited
        self.network.slow = index in self.slow_frames
        calls = engine.calls
        out, ran = super().process(frame, engine, time_left - waited)
        self.path.append((index, engine.calls > calls))
        return out, ran


def test_realtime_recovers_after_each_slow_period():
    clock = SimulatedClock()
    upscaler = tiny_upscaler(clock)
    upscaler.calls = 0
    whole = upscaler.upscale

    def counting_upscale(frame, header):
        upscaler.calls += 1
        return whole(frame, header)

    upscaler.upscale = counting_upscale
    # Two slow spells: a whole frame tried while the second one starts must not keep whole frames away.
    stage = RecordingStage(clock, slow_frames={*range(10, 40), *range(90, 110)}, network=upscaler.model)
    stats = framefilter.Stats()
    framefilter.run(live_frames(clock, 170), FPS, y4m.Writer(io.BytesIO(), stage.out_header), stage, upscaler,
                    realtime=True, stats=stats, clock=clock)
    assert [index for index, _ in stage.path] == list(range(170))  # no frame lost or reordered
    full = dict(stage.path)
    assert sum(full[i] for i in range(10)) >= 8  # fast: whole frames (a hiccup's overrun is paid back)
    assert stats.late <= 16  # only while the estimates catch up with a change of speed
    for slow in range(10, 40), range(90, 110):
        # Slow: whole frames only where the time left allows (after a cheap frame), blocks otherwise.
        assert sum(not full[i] for i in slow[5:]) >= 8
        # After it the measured block time falls, a whole frame is tried, and whole frames return.
        back = min(i for i in range(slow.stop, slow.stop + 40) if full[i])
        assert back <= slow.stop + 30
        assert sum(full[i] for i in range(back, back + 20)) >= 18
    assert stage.counts.total > 0 and stage.counts.share < 1


def test_blocks_with_halo_equal_full_frame_sr():
    """100% selection is seamless: every block matches full-frame SR to float rounding, borders too."""
    torch.manual_seed(1)
    hparams = {"scale": 2, "channels": 8, "blocks": 2}
    model = archs.build("fedsr", hparams)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    upscaler = ModelUpscaler(model, modelfile.ModelInfo("fedsr", hparams, 2))
    luma = np.random.default_rng(2).integers(0, 256, (45, 70), dtype=np.uint8)  # not a multiple of the block
    grid = BlockGrid.build(45, 70, block=16, halo=model.receptive_radius())
    blocks = upscale_blocks(upscaler, luma, grid, np.arange(len(grid)))
    with torch.inference_mode():
        full = model(torch.from_numpy(luma).float().div(255)[None, None])[0, 0]
    assembled = torch.zeros_like(full)
    for (y0, y1, x0, x1), block in zip(grid.blocks, blocks):
        assembled[2 * y0:2 * y1, 2 * x0:2 * x1] = block
    assert (assembled - full).abs().max() < 1e-5
    # A halo smaller than the receptive field leaves seams.
    short = BlockGrid.build(45, 70, block=16, halo=2)
    cut = upscale_blocks(upscaler, luma, short, np.arange(len(short)))
    assert max((b - full[2 * y0:2 * y1, 2 * x0:2 * x1]).abs().max() for (y0, y1, x0, x1), b in
               zip(short.blocks, cut)) > 1e-3


def test_cost_gate_probes_on_a_bounded_schedule():
    class Engine:
        cost = 0.1  # too slow for 40 ms frames

    gate, decisions = framefilter.CostGate(), []
    for _ in range(100):
        run = gate.allow(Engine, 0.04)
        decisions.append(run)
        if run:
            gate.record(0.1)
    probes = [i for i, run in enumerate(decisions) if run]
    # Each failed probe doubles the gap: 8, 16, 32, ... frames, so probes are a bounded share.
    assert probes == [7, 23, 55] and gate.probes == 3
    while not gate.allow(Engine, 0.04):  # the next probe, 64 frames on ...
        pass
    gate.record(0.01)  # ... fits: the engine is back on every frame
    assert all(gate.allow(Engine, 0.04) for _ in range(10))


def test_deadline_counts_late_frames_only_in_real_time():
    deadline = framefilter.Deadline(fps=25, realtime=True)
    assert deadline.begin(arrived=0.0, now=0.0) == pytest.approx(0.04)
    deadline.end(0.05)  # 10 ms late
    # The next frame arrived at 0.04 while the first was still being made: its slot began then, not
    # when it was taken, so the overrun comes out of its time.
    assert deadline.begin(arrived=0.04, now=0.05) == pytest.approx(0.03)
    deadline.end(0.06)
    assert deadline.begin(arrived=0.5, now=0.5) == pytest.approx(0.04)  # a late input starts a fresh slot
    deadline.end(0.51)
    assert deadline.late == 1 and deadline.worst_lag == pytest.approx(0.05) and deadline.lag == pytest.approx(0.01)
    off = framefilter.Deadline(fps=25, realtime=False)
    assert math.isinf(off.begin(0.0, 0.0))
    off.end(10.0)
    assert off.late == 0


def test_a_latency_of_two_frames_absorbs_an_overrun_and_the_next_frames_pay_it_back():
    strict = framefilter.Deadline(fps=25, realtime=True)
    relaxed = framefilter.Deadline(fps=25, realtime=True, latency=2)
    for deadline in strict, relaxed:
        deadline.begin(arrived=0.0, now=0.0)
        deadline.end(0.07)  # 30 ms over its 40 ms slot
        assert deadline.begin(arrived=0.04, now=0.07) == pytest.approx(0.01)  # 10 ms left of the next slot
        deadline.end(0.079)
    assert (strict.late, relaxed.late) == (1, 0)


def test_error_in_the_source_reaches_the_caller():
    def broken():
        yield numbered(0)
        raise ValueError("truncated frame 1")

    stage = SelectiveUpscaleStage(HEADER.resized(128, 72))
    with pytest.raises(ValueError, match="truncated frame 1"):
        framefilter.run(broken(), FPS, y4m.Writer(io.BytesIO(), stage.out_header), stage, None)


def selective_stage(latency: int = 1) -> tuple[SelectiveUpscaleStage, ModelUpscaler, Callable]:
    """A stage on blocks (reuse threshold 2) and a function running one frame through it, where the
    whole frame does not fit but every block does (``blocks_fit`` False: none does), in simulated time."""
    clock = SimulatedClock()
    upscaler = tiny_upscaler(clock)
    stage = SelectiveUpscaleStage(HEADER.resized(128, 72), block=16, reuse_threshold=2, latency=latency,
                                  clock=clock)
    stage.start(upscaler, numbered(0))

    def selective(frame, blocks_fit=True):
        costs = stage.state.costs
        costs.whole.value, costs.whole_ratio = math.inf, math.inf  # a whole frame neither fits nor is tried
        costs.block.value = stage.usable / (1.2 * len(stage.state.grid)) if blocks_fit else math.inf
        [out], _ = stage.process(frame, upscaler, time_left=1.0)
        return out

    return stage, upscaler, selective


def test_unchanged_blocks_reuse_their_output_changed_ones_are_recomputed():
    stage, upscaler, selective = selective_stage()
    frame = numbered(0)

    first = selective(frame)
    whole = upscaler.upscale(frame, stage.out_header)
    assert np.abs(first.y.astype(int) - whole.y).max() <= 1  # blocks = full-frame SR (up to rounding)
    grid = stage.state.grid
    assert (stage.counts.computed, stage.counts.reused) == (len(grid), 0)
    again = selective(frame)
    assert np.array_equal(again.y, first.y) and stage.counts.reused == len(grid)
    moved = y4m.Frame([frame.y.copy(), *frame.planes[1:]])
    moved.y[30, 60] ^= 0x40  # one pixel in the bottom-right corner changes a lot
    selective(moved)
    recomputed = stage.counts.computed - len(grid)
    wh, ww = grid.window
    touching = sum(wy <= 30 < wy + wh and wx <= 60 < wx + ww for wy, wx in grid.windows)
    assert recomputed == touching and 0 < touching < len(grid)


def test_blocks_left_out_take_their_last_correction_when_they_changed_little():
    stage, _, selective = selective_stage()
    frame = numbered(0)
    correction = selective(frame).y.astype(int) - bicubic(frame, stage.out_header).y

    def shifted(levels):
        return y4m.Frame([np.clip(frame.y.astype(int) + levels, 0, 255).astype(np.uint8), *frame.planes[1:]])

    # Brighter by 8 levels (within STALE_LEVELS), and no time for any block: bicubic + the old correction.
    brighter = shifted(8)
    out = selective(brighter, blocks_fit=False)
    expected = np.clip(bicubic(brighter, stage.out_header).y + correction, 0, 255)
    assert np.array_equal(out.y, expected) and not np.array_equal(out.y, bicubic(brighter, stage.out_header).y)
    assert stage.counts.reused == len(stage.state.grid)
    # Changed by more than STALE_LEVELS: bicubic alone, a fallback.
    far = shifted(SelectiveUpscaleStage.STALE_LEVELS + 24)
    fallbacks = stage.fallbacks
    assert np.array_equal(selective(far, blocks_fit=False).y, bicubic(far, stage.out_header).y)
    assert stage.fallbacks == fallbacks + 1


def test_a_slow_spell_the_estimates_missed_stops_the_blocks_before_the_deadline():
    stage, upscaler, _ = selective_stage()
    upscaler.model.slow = True  # a block (its 30x30 window) now takes 19 ms; the stage still expects 1 ms
    stage.state.costs.whole.value, stage.state.costs.block.value = math.inf, 0.001
    start = stage.clock()
    stage.process(numbered(0), upscaler, time_left=0.1)
    assert stage.clock() - start < 0.1
    assert 0 < stage.counts.computed < len(stage.state.grid)


def test_with_a_latency_to_spare_the_blocks_take_most_of_the_slot():
    computed = {}
    for latency in 1, 2:
        stage, upscaler, _ = selective_stage(latency)
        blocks = len(stage.state.grid)
        stage.state.costs.whole.value, stage.state.costs.block.value = math.inf, 1.0 / blocks  # all blocks: 1 s
        stage.process(numbered(0), upscaler, time_left=1.0)
        computed[latency] = stage.counts.computed / blocks
    # One frame: a third of the slot stays free; two: the stage plans up to 90% of it.
    assert 0.5 < computed[1] <= 0.65 < 0.8 < computed[2] <= 0.9


@pytest.mark.parametrize("whole_ratio,tried", [(1.0, True), (1.4, False)])
def test_a_whole_frame_is_tried_again_only_when_blocks_predict_it_fits(whole_ratio, tried):
    """Blocks in small windows can cost less per pixel than a whole frame (caches): the prediction
    scales their time by the ratio measured on the last trial, so a whole frame is not tried, and
    late, on every other frame."""
    stage, upscaler, _ = selective_stage()
    costs = stage.state.costs
    costs.whole.value, costs.whole_ratio = math.inf, whole_ratio  # a slow spell raised the whole frame's cost
    costs.block.value = 0.8 * stage.usable / costs.frame_in_windows  # blocks now say: 80% of the time left
    costs.blocks_fresh = True  # ... measured on the frame before
    [out], _ = stage.process(numbered(0), upscaler, time_left=1.0)
    assert (stage.counts.total == 0) == tried  # no blocks: the whole frame
    if tried:
        assert np.array_equal(out.y, upscaler.upscale(numbered(0), stage.out_header).y)
        assert costs.whole.value < 0.1 and costs.whole_ratio == 0.5  # re-measured: milliseconds, not 0.52 s
