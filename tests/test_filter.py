"""The shared frame-filter loop: deadlines with recovery after a slow period, frames kept in order."""

import io
import time

import numpy as np
import pytest

from srtools import archs, filter, modelfile, y4m
from srtools.upscale import ModelUpscaler, UpscaleStage

FPS = 25
HEADER = y4m.Header(32, 18, FPS)


def paced_frames(count: int, fps: float = FPS):
    """A live source: frame i (luma value i) arrives at i / fps seconds."""
    start = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, start + i / fps - time.monotonic()))
        yield y4m.Frame([np.full(shape, i, np.uint8) for shape in HEADER.plane_shapes])


class SlowPeriodStage(UpscaleStage):
    """sr-serve's stage whose model takes 0.1 s (2.5 frame intervals) on input frames in ``slow``,
    like a CPU taken by another job for a while; records which frames went through the model."""

    def __init__(self, slow: range):
        super().__init__(HEADER.resized(64, 36))
        self.slow = slow
        self.path: list[tuple[int, bool]] = []

    def process(self, frame, engine, use_engine):
        index = int(frame.y[0, 0])
        if use_engine and index in self.slow:
            time.sleep(0.1)
        out, ran = super().process(frame, engine, use_engine)
        self.path.append((index, ran))
        return out, ran


def tiny_upscaler() -> ModelUpscaler:
    hparams = {"scale": 2, "channels": 4, "blocks": 1}
    upscaler = ModelUpscaler(archs.build("fedsr", hparams), modelfile.ModelInfo("fedsr", hparams, 2), version=1)
    upscaler.warm_up(HEADER)
    return upscaler


def test_realtime_recovers_after_a_slow_period():
    stage = SlowPeriodStage(slow=range(10, 40))
    stats = filter.Stats()
    sink = io.BytesIO()
    filter.run(paced_frames(120), FPS, y4m.Writer(sink, stage.out_header), stage, tiny_upscaler(), realtime=True,
               stats=stats)
    path = dict(stage.path)
    assert [index for index, _ in stage.path] == list(range(120))  # no frame lost or reordered
    assert all(path[i] for i in range(10))  # fast: the model runs
    assert not all(path[i] for i in range(20, 40))  # slow: bicubic, with a few probes
    assert stats.fallbacks >= 10
    # After the slow period a probe finds the model fast again: it runs on (nearly: another process
    # may take the core for a frame) every later frame.
    back = min(i for i in range(40, 120) if path[i])
    assert back <= 40 + filter.DeadlineController.PROBE_MAX // 4
    assert sum(path[i] for i in range(back, 120)) >= 0.9 * (120 - back)
    assert stats.engine_frames + stats.fallbacks == 120


def test_deadline_controller_probes_on_a_bounded_schedule():
    controller = filter.DeadlineController(fps=25, realtime=True)
    controller.reset(cost=0.1)  # too slow for 40 ms frames
    now, decisions = 0.0, []
    for _ in range(100):
        run = controller.begin(now)
        decisions.append(run)
        controller.end(now + (0.1 if run else 0.001), 0.1 if run else None)
        now += 0.04
    probes = [i for i, run in enumerate(decisions) if run]
    # Each failed probe doubles the gap: 8, 16, 32, ... frames, so probes are a bounded share.
    assert probes[:3] == [7, 23, 55]
    assert controller.probes == len(probes) == 3
    assert filter.Stats().line(None, controller).endswith("3 probes, 3 late")


def test_outside_realtime_the_engine_always_runs():
    controller = filter.DeadlineController(fps=25, realtime=False)
    controller.reset(cost=10.0)
    assert all(controller.begin(float(t)) for t in range(5))


def test_error_in_the_source_reaches_the_caller():
    def broken():
        yield y4m.Frame([np.zeros(shape, np.uint8) for shape in HEADER.plane_shapes])
        raise ValueError("truncated frame 1")

    stage = UpscaleStage(HEADER.resized(64, 36))
    with pytest.raises(ValueError, match="truncated frame 1"):
        filter.run(broken(), FPS, y4m.Writer(io.BytesIO(), stage.out_header), stage, None)
