"""Visual saliency and per-segment viewer attention.

The cache planner weights each segment's delay by the viewer's attention v_i;
here v_i is estimated from the frames with the spectral residual saliency
model of Hou & Zhang, "Saliency Detection: A Spectral Residual Approach",
CVPR 2007.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

#: Width the frame is downscaled to before the FFT (the paper uses 64 px).
WORKING_WIDTH = 64
#: Gaussian blur of the squared residual, in working-resolution pixels
#: (sigma 2.5 as in the authors' reference code).
BLUR_SIGMA = 2.5


def spectral_residual(gray: np.ndarray) -> np.ndarray:
    """Spectral residual saliency map of one frame.

    Steps: downscale to ``WORKING_WIDTH`` px wide; take the log amplitude
    spectrum L and the phase P of the 2-D FFT; the spectral residual is L
    minus its 3x3 mean filter; the map is |IFFT(exp(residual + iP))|^2,
    blurred with a Gaussian (sigma ``BLUR_SIGMA``), upscaled back to the frame
    size and min-max normalised.

    Args:
        gray: (H, W) uint8 luma frame.

    Returns:
        (H, W) float32 map in [0, 1]; all zeros for a constant frame, which
        has no structure to attend to.

    Raises:
        ValueError: If ``gray`` is not a 2-D array.
    """
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D luma frame, got shape {gray.shape}")
    height, width = gray.shape
    if gray.min() == gray.max():
        return np.zeros((height, width), dtype=np.float32)

    small_width = min(WORKING_WIDTH, width)
    small_height = max(1, round(height * small_width / width))
    small = cv2.resize(gray, (small_width, small_height), interpolation=cv2.INTER_AREA)

    spectrum = np.fft.fft2(small.astype(np.float64))
    # The floor keeps log() finite where the spectrum vanishes exactly.
    log_amplitude = np.log(np.maximum(np.abs(spectrum), 1e-12))
    residual = log_amplitude - cv2.blur(log_amplitude, (3, 3), borderType=cv2.BORDER_REPLICATE)
    saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    saliency = cv2.GaussianBlur(saliency, (0, 0), BLUR_SIGMA, borderType=cv2.BORDER_REPLICATE)
    saliency = cv2.resize(saliency, (width, height), interpolation=cv2.INTER_LINEAR)

    low, high = saliency.min(), saliency.max()
    if high <= low:
        return np.zeros((height, width), dtype=np.float32)
    return ((saliency - low) / (high - low)).astype(np.float32)


def segment_attention(frames_per_segment: Iterable[Iterable[np.ndarray]]) -> np.ndarray:
    """Viewer attention v_i per segment from its frames.

    v_i is the mean spectral-residual saliency over all pixels of all frames
    of segment i, normalised so that the v_i sum to 1 (the convention of
    :class:`srtools.tiled.cacheplan.Instance`). When every frame is blank
    the attention is uniform, 1/n per segment.

    Args:
        frames_per_segment: For each segment, its (H, W) uint8 luma frames
            (a subsample of them is fine).

    Returns:
        (n,) float64 attention summing to 1.

    Raises:
        ValueError: If there are no segments or a segment has no frames.
    """
    means = []
    for index, frames in enumerate(frames_per_segment):
        per_frame = [float(spectral_residual(frame).mean()) for frame in frames]
        if not per_frame:
            raise ValueError(f"segment {index} has no frames")
        means.append(np.mean(per_frame))
    if not means:
        raise ValueError("no segments")
    attention = np.asarray(means, dtype=np.float64)
    total = attention.sum()
    if total <= 0:
        return np.full(len(attention), 1.0 / len(attention))
    return attention / total
