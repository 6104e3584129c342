"""The design's experiment as a simulation: playback stalls and quality per caching policy.

Playback model. The proxy delivers segments one after another; segment i takes f_i (its delay
from the cache plan: largest uncached edge latency + reconstruction of the uncached tiles, with
real measured reconstruction times). The client keeps at most ``buffer`` segments ahead of the
playhead: the proxy starts segment i once segment i-1 is delivered and segment i-buffer has
started playing. Playback starts when segment 0 arrives (the start-up delay, reported apart);
afterwards every moment the playhead waits for a segment not yet delivered is stall time.

Quality. Each tile's per-frame luma squared error against the original is measured once per form
(cached HR tile, DNN-upscaled LR tile, bicubic-upscaled LR tile); a plan's reconstructed frame
has the error of the forms it picks, so its Y-PSNR (mean of per-frame PSNR, srtools.metrics
conventions) is exact for every plan without re-running the reconstruction. sr-proxy with
``--crf 0`` serves exactly these frames.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from .cacheplan import Instance

POLICIES = ("none", "random", "largest_latency_first", "auction", "exact")


def playback(delays_s: np.ndarray, durations_s: np.ndarray, buffer: int) -> tuple[float, float]:
    """(start-up delay, total stall time) in seconds; see the module docstring."""
    delivered = 0.0
    play_start = np.zeros(len(delays_s))
    stall = 0.0
    for i, delay in enumerate(delays_s):
        start = delivered if i < buffer else max(delivered, play_start[i - buffer])
        delivered = start + delay
        if i == 0:
            play_start[0] = delivered
            continue
        due = play_start[i - 1] + durations_s[i - 1]
        play_start[i] = max(due, delivered)
        stall += play_start[i] - due
    return float(play_start[0]), float(stall)


def segment_delays(inst: Instance, cached: np.ndarray) -> np.ndarray:
    """(n,) f_i in ms for a plan."""
    uncached = ~cached
    return np.where(uncached, inst.latency_ms, 0.0).max(axis=1) + (inst.recon_ms * uncached).sum(axis=1)


@dataclasses.dataclass
class Quality:
    """Per-frame luma squared errors of every tile in every form: ``sse[form][i]`` is (J, F_i)."""

    sse: dict[str, list[np.ndarray]]
    pixels: int  # luma samples per frame

    def psnr(self, cached_tiles: np.ndarray, dnn: np.ndarray) -> float:
        """Mean per-frame Y-PSNR when tile (i, j) is HR where ``cached_tiles`` else DNN/bicubic per ``dnn``."""
        values = []
        for i in range(len(self.sse["hr"])):
            form = np.where(cached_tiles[i], 0, np.where(dnn[i], 1, 2))
            stacked = np.stack([self.sse["hr"][i], self.sse["dnn"][i], self.sse["bicubic"][i]])
            frame_sse = stacked[form, np.arange(len(form))].sum(axis=0)
            with np.errstate(divide="ignore"):
                values.append(10 * np.log10(255.0 ** 2 * self.pixels / frame_sse))
        return float(np.mean(np.concatenate(values)))


def cached_tiles(tile_sets: list[list[list[int]]], cached: np.ndarray, tiles: int) -> np.ndarray:
    """(n, M) set plan -> (n, J) bool: tile cached."""
    out = np.zeros((len(tile_sets), tiles), dtype=bool)
    for i, sets in enumerate(tile_sets):
        for m in np.flatnonzero(cached[i]):
            out[i, sets[m]] = True
    return out


_COLOURS = [(90, 90, 90), (60, 160, 230), (60, 180, 60), (200, 80, 200), (40, 40, 220), (200, 140, 40)]


def line_chart(path: str, x: list[float], series: dict[str, list[float]], x_label: str, y_label: str,
               title: str) -> bool:
    """Draw a simple line chart with OpenCV and write it as PNG; False when it could not be written."""
    width, height, left, right, top, bottom = 900, 560, 90, 230, 50, 70
    image = np.full((height, width, 3), 255, np.uint8)
    ys = [v for values in series.values() for v in values if math.isfinite(v)]
    y_max = max(ys + [1e-9]) * 1.08
    x_min, x_max = min(x), max(x) if max(x) > min(x) else min(x) + 1
    plot_w, plot_h = width - left - right, height - top - bottom

    def point(xv: float, yv: float) -> tuple[int, int]:
        return (int(left + (xv - x_min) / (x_max - x_min) * plot_w), int(top + plot_h - yv / y_max * plot_h))

    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.rectangle(image, (left, top), (left + plot_w, top + plot_h), (0, 0, 0), 1)
    for k in range(6):
        yv = y_max * k / 5
        _, py = point(x_min, yv)
        cv2.line(image, (left - 5, py), (left + plot_w, py), (225, 225, 225) if k else (0, 0, 0), 1)
        cv2.putText(image, f"{yv:.3g}", (8, py + 5), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for xv in x:
        px, _ = point(xv, 0)
        cv2.line(image, (px, top + plot_h), (px, top + plot_h + 5), (0, 0, 0), 1)
        cv2.putText(image, f"{xv:g}", (px - 12, top + plot_h + 22), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for k, (name, values) in enumerate(series.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        points = [point(xv, yv) for xv, yv in zip(x, values) if math.isfinite(yv)]
        for a, b in zip(points, points[1:]):
            cv2.line(image, a, b, colour, 2, cv2.LINE_AA)
        for p in points:
            cv2.circle(image, p, 4, colour, -1, cv2.LINE_AA)
        ly = top + 20 + 24 * k
        cv2.line(image, (width - right + 15, ly), (width - right + 45, ly), colour, 2, cv2.LINE_AA)
        cv2.putText(image, name, (width - right + 52, ly + 5), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, title, (left + 140, 25), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, x_label, (left + plot_w // 2 - 80, height - 20), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, y_label, (8, top - 12), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return bool(cv2.imwrite(path, image))
