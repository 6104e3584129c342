"""The frame-filter loop shared by the Y4M filters (sr-serve, sr-tcsr): prefetch, hot-swap, deadlines, stats.

A filter stage turns input frames into output frames with an optional *engine* (a model that the
spool may replace at any time) and a cheap path that needs none (bicubic, pass-through). The loop
reads frames ahead on a thread, swaps in the watcher's newest engine between two frames, gives the
stage the time left in the frame's slot (:class:`Deadline`, ``--realtime``), writes what the stage
returns and reports statistics on stderr.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from typing import Callable, Iterable, Iterator, Protocol

from . import y4m
from .fsutil import write_json_atomic

log = logging.getLogger("srtools.filter")


# The largest frame an engine warms up on: a larger stream's header would otherwise size the warm-up's
# memory (1.4 GB for sr-serve at 1920x1080) before any frame has come, and a header costs nothing to send.
WARM_UP_PIXELS = 640 * 360


class Engine(Protocol):
    label: str  # for logs: "v7" for a spool version, else the file's source
    cost: float | None  # seconds one call takes, measured by warm_up()

    def warm_up(self, header: y4m.Header) -> None:
        """Run on a blank frame of the size :func:`warm_up_size` gives for ``header``, measuring :attr:`cost`."""


def warm_up_size(header: y4m.Header) -> tuple[y4m.Header, float]:
    """The frame size to warm an engine up on for ``header``'s stream: the stream's own, or, above
    :data:`WARM_UP_PIXELS`, the same shape scaled down to that many pixels; and the factor from a
    call's time on it to one on the stream's frames (their ratio of pixels: the networks' time
    grows with the pixels)."""
    pixels = header.width * header.height
    if pixels <= WARM_UP_PIXELS:
        return header, 1.0
    shrink = math.sqrt(WARM_UP_PIXELS / pixels)
    width, height = max(1, int(header.width * shrink)), max(1, int(header.height * shrink))
    return header.resized(width, height), pixels / (width * height)


class FilterStage(Protocol):
    """What one filter does with each frame."""

    fallbacks: int  # frames the engine could have made but did not have time for
    probes: int  # engine runs made only to re-measure its cost (see CostGate)

    def process(self, frame: y4m.Frame, engine: Engine | None, time_left: float) -> tuple[list[y4m.Frame], int]:
        """Frames ready for output after ``frame`` arrived, and how many of them the engine made;
        ``time_left`` is the seconds until the frame's slot ends (:class:`Deadline`; negative when
        earlier frames overran it, infinite outside real time)."""

    def flush(self, engine: Engine | None) -> tuple[list[y4m.Frame], int]:
        """Frames still held when the input ends (the engine may still run on them), and how many it made."""


def measure_cost(call: Callable[[], object], warm_up: int = 2, timed: int = 3) -> float:
    """Seconds one ``call()`` takes: the median of ``timed`` calls after ``warm_up`` untimed ones (first
    calls allocate and pick kernels; a median ignores a call that lost its core to another process)."""
    for _ in range(warm_up):
        call()
    times = []
    for _ in range(timed):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


class Prefetcher(threading.Thread):
    """Reads frames ahead on a thread, so decoding and pipe reads overlap with the network; each frame
    comes with the ``clock`` time it arrived (read from the input), for its deadline."""

    _END = object()

    def __init__(self, frames: Iterable[y4m.Frame], depth: int = 4, clock: Callable[[], float] = time.monotonic):
        super().__init__(name="prefetch", daemon=True)
        self.frames = frames
        self.clock = clock
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for frame in self.frames:
                self.queue.put((frame, self.clock()))
        except BaseException as exc:  # re-raised in the frame loop
            self.error = exc
        self.queue.put(self._END)

    def __iter__(self) -> Iterator[tuple[y4m.Frame, float]]:
        while (item := self.queue.get()) is not self._END:
            yield item
        if self.error is not None:
            raise self.error


class Deadline:
    """Frame deadlines at the input frame rate, and the frames that missed them.

    Each frame has a *slot*, one frame interval long, that starts when the previous frame's slot
    ends, or when the frame arrived if that is later (a late input is not our lateness). The stage
    plans to finish a frame by the end of its slot; a frame is *late* when it is written more than
    ``latency`` intervals after its slot started. Time a frame takes beyond its slot comes out of
    the next frames' slots, so a latency above one absorbs a slow frame without letting the output
    drift behind the input. Outside real time nothing is due.

    Args:
        fps: the input frame rate.
        realtime: apply deadlines at all.
        latency: frame intervals a frame may take from the start of its slot until it is written.
    """

    def __init__(self, fps: float, realtime: bool, latency: int = 1):
        self.interval = 1.0 / fps
        self.realtime = realtime
        self.latency = latency
        self.late = 0
        self.lag = 0.0  # seconds from the start of the newest frame's slot to its output: a backlog shows here
        self.worst_lag = 0.0  # the longest such lag
        self._slot = -math.inf  # when the current frame's slot started

    def begin(self, arrived: float, now: float) -> float:
        """A frame that arrived at ``arrived`` is taken at ``now``: the seconds left until its slot ends
        (negative when earlier frames overran it; infinite outside real time)."""
        if not self.realtime:
            return math.inf
        self._slot = max(self._slot + self.interval, arrived)
        return self._slot + self.interval - now

    def end(self, now: float) -> None:
        """The frame was written at ``now``."""
        if not self.realtime:
            return
        self.lag = max(0.0, now - self._slot)  # 0: written before its slot began
        self.worst_lag = max(self.worst_lag, self.lag)
        if self.lag > self.latency * self.interval:
            self.late += 1


class MovingAverage:
    """A time estimate that measurements keep current: each one moves it ``weight`` of the way to itself.

    Args:
        weight: the newest measurement's weight.
        value: the estimate before any measurement; None or infinite when there is none (the first
            measurement then stands alone).
        rises_at_once: a measurement above the estimate replaces it (a slower machine must not make
            the next frames late too), while lower ones pull it down gradually (one fast call is no trend).
    """

    def __init__(self, weight: float, value: float | None = None, rises_at_once: bool = False):
        self.weight, self.value, self.rises_at_once = weight, value, rises_at_once

    def add(self, measured: float, alone: bool = False) -> None:
        """Take a measurement in; ``alone``: it is the only recent figure (a probe, a re-measuring try)
        and replaces the estimate."""
        if (alone or self.value is None or math.isinf(self.value)
                or (self.rises_at_once and measured > self.value)):
            self.value = measured
        else:
            self.value += self.weight * (measured - self.value)


class CostGate:
    """Whether a whole-frame engine fits the time left, with probes to recover from a slow spell.

    The engine runs when its cost, a moving average of measured runs (from its warm-up at first),
    fits the time left. A cost measured under load would otherwise shut the engine out for good, so
    after ``probe_gap`` consecutive frames without it the engine runs once more to re-measure (a
    *probe*); a probe that fits brings the engine back, one that does not doubles the gap, up to
    :attr:`PROBE_MAX` frames, so probes cost a bounded share of frames.
    """

    PROBE_MIN, PROBE_MAX = 8, 256
    SMOOTHING = 0.2  # weight of the newest measurement in the moving average

    def __init__(self) -> None:
        self.probes = 0
        self._cost = MovingAverage(self.SMOOTHING)
        self._engine: object | None = None
        self._skipped = 0
        self._probe_gap = self.PROBE_MIN
        self._probing = False
        self._time_left = math.inf

    @property
    def cost(self) -> float | None:
        """Seconds the engine is expected to take (None: not known yet)."""
        return self._cost.value

    def allow(self, engine: Engine, time_left: float) -> bool:
        """Whether to run ``engine`` with ``time_left`` seconds until the frame's slot ends; no probe
        while earlier frames' overruns leave the slot no time at all."""
        if engine is not self._engine:  # a new model: start from its warm-up figure
            self._engine, self._cost = engine, MovingAverage(self.SMOOTHING, engine.cost)
            self._skipped, self._probe_gap = 0, self.PROBE_MIN
        self._probing, self._time_left = False, time_left
        if self.cost is None or self.cost <= time_left:
            return True
        self._skipped += 1
        self._probing = self._skipped >= self._probe_gap and time_left > 0
        return self._probing

    def record(self, seconds: float) -> None:
        """The engine ran for ``seconds`` on the frame just allowed."""
        self.probes += self._probing
        if self._probing or self.cost is None:  # the only recent figure: it stands alone
            fits = seconds <= self._time_left
            self._probe_gap = self.PROBE_MIN if fits else min(2 * self._probe_gap, self.PROBE_MAX)
        self._cost.add(seconds, alone=self._probing)
        self._skipped = 0


class Counters(Protocol):
    """A stage's own counters, reported with the loop's (sr-serve's selective SR blocks)."""

    def as_dict(self) -> dict:
        """The counters under their --stats names."""

    def describe(self) -> str:
        """The counters in words, for the log line ('' while there is nothing to say)."""


class Stats:
    """Counters of a filter run, reported on stderr.

    Args:
        fallback_name: what the stage's fallbacks are, in the log line.
        engine_name: what the frames the engine made are, in the log line.
        path: where :meth:`report` also publishes the counters as JSON.
        details: the stage's own counters, reported with these.
    """

    def __init__(self, fallback_name: str = "bicubic fallbacks", engine_name: str = "with network output",
                 path: str | None = None, details: Counters | None = None) -> None:
        self.frames = self.engine_frames = self.swaps = self.late = 0
        self.worst_lag = 0.0
        self.fallback_name, self.engine_name = fallback_name, engine_name
        self.path = path
        self.details = details
        self.start = time.monotonic()

    def as_dict(self, engine: Engine | None, deadline: Deadline, stage: FilterStage) -> dict:
        elapsed = time.monotonic() - self.start
        return {"frames": self.frames, "seconds": round(elapsed, 2), "model": engine.label if engine else None,
                "swaps": self.swaps, "engine_frames": self.engine_frames, "fallbacks": stage.fallbacks,
                "probes": stage.probes, "late": deadline.late, "lag_ms": round(1e3 * deadline.lag, 1),
                "worst_lag_ms": round(1e3 * deadline.worst_lag, 1),
                **(self.details.as_dict() if self.details else {})}

    def report(self, engine: Engine | None, deadline: Deadline, stage: FilterStage) -> None:
        """Log the counters, and publish them to ``path`` (atomically) when there is one."""
        log.info("%s", self.line(engine, deadline, stage))
        self.publish(engine, deadline, stage)

    def publish(self, engine: Engine | None, deadline: Deadline, stage: FilterStage) -> None:
        """Publish the counters to ``path`` (atomically) when there is one (a live panel reads them)."""
        if self.path:
            write_json_atomic(self.path, self.as_dict(engine, deadline, stage))

    def line(self, engine: Engine | None, deadline: Deadline, stage: FilterStage) -> str:
        elapsed = time.monotonic() - self.start
        fps = self.frames / elapsed if elapsed > 0 else 0.0
        text = (f"{self.frames} frames in {elapsed:.1f} s ({fps:.1f} fps), model "
                f"{engine.label if engine else 'none'}, {self.swaps} swaps, {stage.fallbacks} {self.fallback_name}, "
                f"{self.engine_frames} {self.engine_name}")
        if deadline.realtime:
            text += (f", {stage.probes} probes, {deadline.late} late (worst lag {1e3 * deadline.worst_lag:.0f} ms "
                     f"of {1e3 * deadline.latency * deadline.interval:.0f} allowed)")
        if self.details and (details := self.details.describe()):
            text += f"; {details}"
        return text


def run(frames: Iterable[y4m.Frame], fps: float, writer: y4m.Writer, stage: FilterStage, engine: Engine | None, *,
        watcher=None, realtime: bool = False, latency: int = 1, stats: Stats | None = None,
        report_every: float = 10.0, publish_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic) -> Engine | None:
    """Run ``stage`` over ``frames`` and write its output; returns the engine in use at the end.

    Args:
        frames: the input frames (read ahead on a thread).
        fps: their frame rate, for deadlines.
        writer: where output frames go (flushed after each input frame).
        stage: what each frame becomes.
        engine: the engine to start with (None: the cheap path until the watcher has one).
        watcher: a :class:`srtools.loader.ModelWatcher` offering newer engines, or None.
        realtime: give each frame a deadline at the input frame rate.
        latency: frame intervals each frame may take until written (see :class:`Deadline`).
        stats: counters to fill (a final line is logged even when the loop is interrupted).
        report_every: seconds between two log lines of the counters (each also publishes them).
        publish_every: seconds between two publications of the counters to ``stats.path``, which
            also follows a model swap at once.
        clock: the time in seconds, for arrivals, deadlines and reports (tests simulate it).
    """
    stats = stats or Stats()
    deadline = Deadline(fps, realtime, latency)
    # Frames are stamped when read: the queue holds more than a late frame's backlog, so that a
    # backlog of our own making is not taken for a late input.
    prefetcher = Prefetcher(frames, depth=max(4, latency + 2), clock=clock)
    prefetcher.start()
    next_report = clock() + report_every
    next_publish = clock() + publish_every  # the counters' file (Stats.path), more often than the log
    try:
        for frame, arrived in prefetcher:
            if watcher is not None and watcher.latest not in (None, engine):
                engine = watcher.latest
                stats.swaps += 1
                log.info("frame %d: switched to model %s", stats.frames, engine.label)
                next_publish = 0.0  # a new model on air: say so at once
            now = clock()
            out, ran = stage.process(frame, engine, deadline.begin(arrived, now))
            for item in out:
                writer.write(item)
            writer.flush()
            stats.frames += 1
            stats.engine_frames += ran
            deadline.end(clock())
            if now >= next_report:
                stats.report(engine, deadline, stage)
                next_report = next_publish = now + report_every
            elif now >= next_publish:
                stats.publish(engine, deadline, stage)
                next_publish = now + publish_every
        out, ran = stage.flush(engine)
        for item in out:
            writer.write(item)
        stats.engine_frames += ran
        writer.flush()
    finally:
        stats.late, stats.worst_lag = deadline.late, deadline.worst_lag
        stats.report(engine, deadline, stage)
    return engine
