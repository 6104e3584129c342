"""The PSNR monitor: each new pool pair scored with the current model, scene changes turned into requests.

For each pair it computes the Y-PSNR of the current upscaling model's output against the HR frame,
and of bicubic (for the gain), feeds the model's PSNR and a 16x9 luma thumbnail of the HR frame to
the :class:`~.lowess.SceneChangeDetector` (whose trend restarts at each new model version) and, on a
scene change, publishes a training request into the spool (``SPOOL/requests/request-NNNNNNNNN.json``,
atomically; see srtools-spool(5)).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .. import archs, loader, metrics
from ..errors import SrError
from ..fsutil import write_json_atomic
from ..spool import Spool
from ..upscale import ModelUpscaler, bicubic, upscaler_factory
from ..y4m import Frame, Header
from .lowess import Detection, SceneChangeDetector
from .pool import Pair, Pool

log = logging.getLogger("srtools.monitor")
REQUESTS_DIR = "requests"
THUMBNAIL = (16, 9)  # columns, rows: cells of 40x40 pixels at 640x360, coarse enough to tolerate motion


def thumbnail(frame: Frame) -> np.ndarray:
    """The frame's picture as the detector compares it: its luma averaged over a 16x9 grid."""
    return cv2.resize(frame.y, THUMBNAIL, interpolation=cv2.INTER_AREA).astype(np.float32)


def y_psnr(a: Frame, b: Frame) -> float:
    return metrics.bounded_psnr(a.y, b.y)


@dataclasses.dataclass
class Sample:
    """One evaluated pair: the JSON line sr-monitor writes."""

    t: float
    pair: int
    psnr: float
    bicubic_psnr: float
    smoothed: float | None
    threshold: float | None
    change: float | None
    model: int | None
    request: bool


class Monitor:
    """Scores pool pairs as they arrive (see the module docstring).

    Args:
        spool: the spool holding the pool, the models and the requests.
        scale: the upscaling factor of the models.
        detector: the scene-change detector.
    """

    def __init__(self, spool: str | Path, scale: int, detector: SceneChangeDetector, device: str = "cpu"):
        self.spool, self.scale, self.detector = Spool(spool, create=True), scale, detector
        self.pool = Pool(spool)
        self.watcher = loader.ModelWatcher(self.spool, archs.UPSCALE, scale, 0.0, upscaler_factory(device, "fp32"))
        self.last = 0  # the newest pair already scored

    def new_samples(self) -> Iterator[Sample]:
        """Score every pair added since the last call (pairs evicted meanwhile are skipped)."""
        self.watcher.poll()  # a rejected model is logged there and the previous one kept
        for seq in [s for s in self.pool.sequence() if s > self.last]:
            self.last = seq
            try:
                pair = self.pool.read(seq)
            except SrError as exc:
                log.warning("skipped: %s", exc)
                continue
            if pair is None:
                log.info("pair %d was evicted before it was read", seq)
                continue
            yield self.score(pair, self.watcher.latest)

    def score(self, pair: Pair, upscaler: ModelUpscaler | None) -> Sample:
        header = _header_of(pair)
        bicubic_psnr = y_psnr(bicubic(pair.lr, header), pair.hr)
        psnr = y_psnr(upscaler.upscale(pair.lr, header), pair.hr) if upscaler else bicubic_psnr
        version = upscaler.version if upscaler else None
        detection = self.detector.update(pair.t, psnr, version, thumbnail(pair.hr))
        if detection.request:
            self._request(pair, psnr, detection, version)
        return Sample(round(pair.t, 3), pair.seq, round(psnr, 4), round(bicubic_psnr, 4),
                      _rounded(detection.smoothed), _rounded(detection.threshold), _rounded(detection.change),
                      version, detection.request)

    def _request(self, pair: Pair, psnr: float, detection: Detection, version: int | None) -> None:
        directory = self.spool.root / REQUESTS_DIR
        directory.mkdir(parents=True, exist_ok=True)
        request = {"format": "srtools-request/1", "t": pair.t, "pair": pair.seq, "psnr": psnr,
                   "smoothed": detection.smoothed, "change": detection.change, "model": version,
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json_atomic(directory / f"request-{pair.seq:09d}.json", request, tmp_dir=self.spool.tmp_dir)
        log.info("t=%.2f s: Y-PSNR %.2f dB (trend %.2f dB), picture change %s: scene change, training requested",
                 pair.t, psnr, detection.smoothed, "n/a" if detection.change is None else f"{detection.change:.2f}")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _header_of(pair: Pair) -> Header:
    height, width = pair.hr.y.shape
    return Header(width, height)
