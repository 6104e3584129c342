"""The spool's bounded pool of training pairs: what the push side saw, for the monitor and the trainer.

Layout (see srtools-spool(5))::

    SPOOL/pool/pair-000000042.npz    one pair: the HR frame and the decoded LR frame the server got

A pair file is a numpy ``.npz`` archive (arrays only; read with ``allow_pickle=False``, so loading
never runs code) holding ``t`` (stream time in seconds), ``hr_y``, ``hr_u``, ``hr_v`` and ``lr_y``,
``lr_u``, ``lr_v`` (uint8 planes, 4:2:0). Pairs are numbered in the order they were added; a pair
is written under SPOOL/tmp, fsynced, then linked into place under its number (so a reader sees the
whole file or none); the oldest pairs are removed before a new one is linked, so that the pool never
holds more than ``max_pairs`` (sr-push, the one writer, keeps that bound).
A reader that finds a pair gone (evicted meanwhile) skips it.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import SrError
from ..fsutil import fsync_dir, write_temp
from ..y4m import Frame

POOL_DIR = "pool"
DEFAULT_MAX_PAIRS = 480  # two minutes of pairs at 4 per second
_PLANES = ("y", "u", "v")


@dataclasses.dataclass(frozen=True)
class Pair:
    seq: int
    t: float
    hr: Frame
    lr: Frame


class Pool:
    """The pool under ``spool_root`` (created when ``create``); see the module docstring.

    Args:
        spool_root: the spool directory.
        max_pairs: the bound; adding beyond it removes the oldest pairs.
    """

    def __init__(self, spool_root: str | os.PathLike, max_pairs: int = DEFAULT_MAX_PAIRS, create: bool = False):
        self.root = Path(spool_root)
        self.dir = self.root / POOL_DIR
        self.tmp_dir = self.root / "tmp"
        self.max_pairs = max_pairs
        if create:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                self.tmp_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SrError(f"{self.dir}: cannot create the pair pool: {exc.strerror}") from None

    @staticmethod
    def name(seq: int) -> str:
        return f"pair-{seq:09d}.npz"

    def sequence(self) -> list[int]:
        """Numbers of the pairs present, oldest first (empty when the pool does not exist yet)."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(int(n[5:14]) for n in names if n.startswith("pair-") and n.endswith(".npz") and n[5:14].isdigit())

    def add(self, t: float, hr: Frame, lr: Frame) -> int:
        """Publish one pair atomically; returns its number.

        The oldest pairs are evicted first, so that a pool with one writer never holds more than
        ``max_pairs``.
        """
        arrays = {"t": np.array(t, np.float64)}
        arrays.update({f"hr_{p}": plane for p, plane in zip(_PLANES, hr.planes)})
        arrays.update({f"lr_{p}": plane for p, plane in zip(_PLANES, lr.planes)})
        tmp = write_temp(self.tmp_dir, lambda path: np.savez(path, **arrays), suffix=".npz")
        try:
            present = self.sequence()
            seq = max(present, default=0) + 1  # numbered before evicting: numbers never go back
            for old in present[:max(0, len(present) + 1 - self.max_pairs)]:
                (self.dir / self.name(old)).unlink(missing_ok=True)
            while True:
                try:
                    os.link(tmp, self.dir / self.name(seq))  # exclusive: a racing writer takes the next
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
        path = self.dir / self.name(seq)
        try:
            with np.load(path, allow_pickle=False) as data:
                hr = Frame([data[f"hr_{p}"] for p in _PLANES])
                lr = Frame([data[f"lr_{p}"] for p in _PLANES])
                return Pair(seq, float(data["t"]), hr, lr)
        except FileNotFoundError:
            return None
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
            raise SrError(f"{path}: not a pair file ({exc})") from None
