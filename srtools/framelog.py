"""Per-frame logs of the Y4M filters (sr-serve and sr-tcsr --frame-log): one JSON line per output frame.

    {"frame": 120, "model": "v2", "engine": true}

``frame`` is the output frame's index in the stream (from 0: the same frame index every stage of
the chain has, so frame n is at n / fps), ``model`` the engine in use when it was made (its label,
null for none), and ``engine`` whether the model made it: sr-serve's network output, whole or in
blocks, or sr-tcsr's refinement. What the --stats counters sum, the log has frame by frame: which
model was on air when (the first frame of each swap-in), and which frames TCSR refined.
"""

from __future__ import annotations

import collections
import json
from typing import IO

from .errors import SrError
from .framefilter import Engine, FilterStage
from .y4m import Frame


def open_log(path: str) -> IO[str]:
    """``path`` opened for a frame log (replaced).

    Raises:
        SrError: it cannot be written.
    """
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise SrError(f"{path}: cannot write the frame log ({exc.strerror})") from None


class FrameLog:
    """A :class:`srtools.framefilter.FilterStage` that runs ``stage`` and logs each frame it outputs to
    ``stream``.

    A frame the stage passes through unchanged is the input frame itself, so an output frame that is
    one of the recent inputs was not made by the engine; of the others, the first ``ran`` (the count
    the stage returns) were.
    """

    def __init__(self, stage: FilterStage, stream: IO[str]):
        self.stage, self.stream = stage, stream
        self.frames = 0
        self._inputs: collections.deque[Frame] = collections.deque(maxlen=64)  # more than any stage holds

    @property
    def fallbacks(self) -> int:
        return self.stage.fallbacks

    @property
    def probes(self) -> int:
        return self.stage.probes

    def process(self, frame: Frame, engine: Engine | None, time_left: float) -> tuple[list[Frame], int]:
        self._inputs.append(frame)
        out, ran = self.stage.process(frame, engine, time_left)
        self._log(out, ran, engine)
        return out, ran

    def flush(self, engine: Engine | None) -> tuple[list[Frame], int]:
        out, ran = self.stage.flush(engine)
        self._log(out, ran, engine)
        return out, ran

    def _log(self, out: list[Frame], ran: int, engine: Engine | None) -> None:
        label = engine.label if engine is not None else None
        made = 0
        for frame in out:
            by_engine = made < ran and not any(frame is seen for seen in self._inputs)
            made += by_engine
            self.stream.write(json.dumps({"frame": self.frames, "model": label, "engine": by_engine}) + "\n")
            self.frames += 1
        if out:
            self.stream.flush()
