"""The spool's bounded pool of training material: what the push side saw, for the monitor and the trainer.

Layout (see srtools-spool(5))::

    SPOOL/pool/pair-000000042.npz    one pair: the HR frame and the decoded LR frame the server got
    SPOOL/pool/run-000000007.npz     one run: consecutive HR frames and their decoded LR frames (TCSR)

Each file is a numpy ``.npz`` archive (arrays only; read with ``allow_pickle=False``, so loading
never runs code) holding ``t``, the stream time in seconds of its (first) frame. A pair holds
``hr_y``, ``hr_u``, ``hr_v`` and ``lr_y``, ``lr_u``, ``lr_v`` (uint8 planes, 4:2:0); a run holds
``hr_y`` (n, H, W) and ``lr_y`` (n, H/s, W/s), the luma of n consecutive frames (TCSR refines luma
only). Pairs and runs are each numbered in the order they were added; a file is written under
SPOOL/tmp, fsynced, then linked into place under its number (so a reader sees the whole file or
none); the oldest of its kind are removed before a new one is linked, so that the pool never holds
more than ``max_pairs`` pairs and ``max_runs`` runs (sr-push, the one writer, keeps those bounds).
A reader that finds a file gone (evicted meanwhile) skips it.

Stream time only grows: a new sr-push continues it after the newest file already in the pool
(:meth:`Pool.resume_time`), so a publisher that restarts does not make its earlier pairs look
newer than its new ones to the trainer's recency weighting.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import SrError
from ..fsutil import fsync_dir, write_temp
from ..y4m import Frame

POOL_DIR = "pool"
DEFAULT_MAX_PAIRS = 480  # two minutes of pairs at 4 per second
DEFAULT_MAX_RUNS = 60  # two minutes of runs at one every 2 s
RESTART_GAP_S = 1.0  # stream seconds from the newest file of an earlier push to the first of the next
PAIR, RUN = "pair", "run"
_PLANES = ("y", "u", "v")


@dataclasses.dataclass(frozen=True)
class Pair:
    seq: int
    t: float
    hr: Frame
    lr: Frame


@dataclasses.dataclass(frozen=True)
class Run:
    """n consecutive frames: ``hr`` (n, H, W) and ``lr`` (n, h, w) uint8 luma, the first at time ``t``."""

    seq: int
    t: float
    hr: np.ndarray
    lr: np.ndarray


class Pool:
    """The pool under ``spool_root`` (created when ``create``); see the module docstring.

    Args:
        spool_root: the spool directory.
        max_pairs / max_runs: the bounds; adding beyond one removes the oldest of that kind.
    """

    def __init__(self, spool_root: str | os.PathLike, max_pairs: int = DEFAULT_MAX_PAIRS, create: bool = False,
                 max_runs: int = DEFAULT_MAX_RUNS):
        self.root = Path(spool_root)
        self.dir = self.root / POOL_DIR
        self.tmp_dir = self.root / "tmp"
        self.bounds = {PAIR: max_pairs, RUN: max_runs}
        if create:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                self.tmp_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SrError(f"{self.dir}: cannot create the pair pool: {exc.strerror}") from None

    @staticmethod
    def name(seq: int, kind: str = PAIR) -> str:
        return f"{kind}-{seq:09d}.npz"

    def sequence(self, kind: str = PAIR) -> list[int]:
        """Numbers of the pairs (or runs) present, oldest first (empty when the pool does not exist yet)."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        prefix = f"{kind}-"
        numbers = (n[len(prefix):-len(".npz")] for n in names if n.startswith(prefix) and n.endswith(".npz"))
        return sorted(int(n) for n in numbers if n.isdigit())

    def add(self, t: float, hr: Frame, lr: Frame) -> int:
        """Publish one pair atomically; returns its number (see :meth:`_publish`)."""
        arrays = {"t": np.array(t, np.float64)}
        arrays.update({f"hr_{p}": plane for p, plane in zip(_PLANES, hr.planes)})
        arrays.update({f"lr_{p}": plane for p, plane in zip(_PLANES, lr.planes)})
        return self._publish(PAIR, arrays)

    def add_run(self, t: float, hr: list[Frame], lr: list[Frame]) -> int:
        """Publish the luma of consecutive frames (the first at stream time ``t``) atomically; returns
        the run's number."""
        return self._publish(RUN, {"t": np.array(t, np.float64), "hr_y": np.stack([f.y for f in hr]),
                                   "lr_y": np.stack([f.y for f in lr])})

    def _publish(self, kind: str, arrays: dict[str, np.ndarray]) -> int:
        """Write ``arrays`` under tmp/, evict the oldest files of ``kind`` beyond its bound, and link the
        new file under the next number: a pool with one writer never holds more than the bound."""
        tmp = write_temp(self.tmp_dir, lambda path: np.savez(path, **arrays), suffix=".npz")
        try:
            present = self.sequence(kind)
            seq = max(present, default=0) + 1  # numbered before evicting: numbers never go back
            for old in present[:max(0, len(present) + 1 - self.bounds[kind])]:
                (self.dir / self.name(old, kind)).unlink(missing_ok=True)
            while True:
                try:
                    os.link(tmp, self.dir / self.name(seq, kind))  # exclusive: a racing writer takes the next
                    break
                except FileExistsError:
                    seq += 1
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.dir)
        return seq

    def read(self, seq: int) -> Pair | None:
        """Pair ``seq``, or None when it was evicted before it could be read.

        Raises:
            SrError: the file exists but is not a pair file.
        """
        return self._load(seq, PAIR, lambda data: Pair(seq, float(data["t"]),
                                                       Frame([data[f"hr_{p}"] for p in _PLANES]),
                                                       Frame([data[f"lr_{p}"] for p in _PLANES])))

    def read_run(self, seq: int) -> Run | None:
        """Run ``seq``, or None when it was evicted before it could be read.

        Raises:
            SrError: the file exists but is not a run file.
        """
        def unpack(data: Any) -> Run:
            run = Run(seq, float(data["t"]), data["hr_y"], data["lr_y"])
            if run.hr.ndim != 3 or run.lr.ndim != 3 or len(run.hr) != len(run.lr):
                raise ValueError(f"frames {run.hr.shape} and {run.lr.shape}")
            return run

        return self._load(seq, RUN, unpack)

    def _load(self, seq: int, kind: str, unpack: Callable[[Any], Any]) -> Any:
        path = self.dir / self.name(seq, kind)
        try:
            with np.load(path, allow_pickle=False) as data:
                return unpack(data)
        except FileNotFoundError:
            return None
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
            raise SrError(f"{path}: not a {kind} file ({exc})") from None

    def resume_time(self) -> float:
        """Where a new push continues stream time: :data:`RESTART_GAP_S` after the newest pair or run
        in the pool (its first frame's time), or 0 for an empty pool (see the module docstring)."""
        newest = []
        for kind, read in ((PAIR, self.read), (RUN, self.read_run)):
            for seq in reversed(self.sequence(kind)):
                try:
                    item = read(seq)
                except SrError:
                    continue  # a damaged file says nothing about time
                if item is not None:
                    newest.append(item.t)
                    break
        return max(newest) + RESTART_GAP_S if newest else 0.0
