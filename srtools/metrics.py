"""Quality metrics. The conventions, written down once:

- Inputs are 8-bit planes (uint8 numpy arrays, values 0-255, peak 255), compared whole: no border
  is cropped, as ffmpeg's ``psnr`` and ``ssim`` filters do.
- **Y-PSNR** is the PSNR of the luma plane of a frame as it travels (studio-range BT.601 Y4M);
  identical planes give ``inf``. Over a clip we report the **mean of per-frame PSNR** (the SR
  literature's convention), not the PSNR of the mean MSE. Scores that are averaged or written as
  JSON (training's held-out scores, sr-monitor's samples) use :func:`bounded_psnr`, which counts
  identical planes as :data:`IDENTICAL_DB`, so one flat frame cannot make a mean infinite.
- **RGB-PSNR** converts both frames with OpenCV's BT.601 limited-range I420 -> RGB conversion and
  takes one MSE over all three channels.
- **SSIM** is ffmpeg's (and x264's) variant: 8x8 uniform windows on a 4-pixel grid, averaged over
  the windows, with ffmpeg's integer constants; it matches ffmpeg's ``ssim`` filter per plane.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .y4m import Frame


def mse(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB between two 8-bit arrays of the same shape (inf when identical)."""
    error = mse(a, b)
    return math.inf if error == 0 else 10.0 * math.log10(peak * peak / error)


IDENTICAL_DB = 99.0  # the PSNR of identical planes where a finite number is needed


def bounded_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """:func:`psnr` of two 8-bit arrays, at most :data:`IDENTICAL_DB` (identical planes count as that)."""
    return min(psnr(a, b), IDENTICAL_DB)


def y_psnr(a: Frame, b: Frame) -> float:
    return psnr(a.y, b.y)


def to_rgb(frame: Frame) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a 4:2:0 frame with even dimensions (BT.601 limited range)."""
    y, u, v = frame.planes
    h, w = y.shape
    i420 = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(h * 3 // 2, w)
    return cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)


def rgb_psnr(a: Frame, b: Frame) -> float:
    """RGB-PSNR of ``a`` against ``b``, both with chroma planes, ``b`` 4:2:0 with even dimensions: the
    chroma of an ``a`` of another subsampling (4:2:2, 4:4:4) is first brought to ``b``'s size by area
    averaging, as a conversion to 4:2:0 does."""
    if a.planes[1].shape != b.planes[1].shape:
        h, w = b.planes[1].shape
        a = Frame([a.y, *(cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA) for p in a.planes[1:])])
    return psnr(to_rgb(a), to_rgb(b))


# ffmpeg's constants, for sums over a 64-pixel window (see ssim_end1 in libavfilter/vf_ssim.c).
_SSIM_C1 = int(0.01 * 0.01 * 255 * 255 * 64 + 0.5)
_SSIM_C2 = int(0.03 * 0.03 * 255 * 255 * 64 * 63 + 0.5)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two 8-bit planes, computed as ffmpeg's ``ssim`` filter does (see module docstring)."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    h4, w4 = a.shape[0] // 4, a.shape[1] // 4
    if h4 < 2 or w4 < 2:
        raise ValueError("planes smaller than 8x8 have no SSIM window")
    x = a[:h4 * 4, :w4 * 4].astype(np.float64)
    y = b[:h4 * 4, :w4 * 4].astype(np.float64)

    def window_sums(p: np.ndarray) -> np.ndarray:  # sums over 4x4 blocks, then over 2x2 of those
        s = p.reshape(h4, 4, w4, 4).sum(axis=(1, 3))
        return s[:-1, :-1] + s[1:, :-1] + s[:-1, 1:] + s[1:, 1:]

    s1, s2 = window_sums(x), window_sums(y)
    ss, s12 = window_sums(x * x + y * y), window_sums(x * y)
    variances = ss * 64 - s1 * s1 - s2 * s2
    covariance = s12 * 64 - s1 * s2
    value = ((2 * s1 * s2 + _SSIM_C1) * (2 * covariance + _SSIM_C2)
             / ((s1 * s1 + s2 * s2 + _SSIM_C1) * (variances + _SSIM_C2)))
    return float(value.mean())


def y_ssim(a: Frame, b: Frame) -> float:
    return ssim(a.y, b.y)


def box_sums(values: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Sums of a 2-D map over boxes ``values[y0:y1, x0:x1]``, all boxes at once through one integral image
    (the error of every candidate training patch, the detail of every block of a frame).

    Args:
        values: (H, W) float32 or float64 map.
        y0, y1, x0, x1: arrays of one shape, the boxes' edges (0 <= y0 <= y1 <= H, likewise x).

    Returns:
        float64 sums of the shape of ``y0``.
    """
    integral = cv2.integral(values, sdepth=cv2.CV_64F)
    return integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
