"""The default degradation: how a high-resolution clip becomes the low-resolution stream.

HR frames are cropped to a multiple of twice the scale (top-left kept; 4:2:0 needs even sizes at
both resolutions), downscaled with ffmpeg's
``area`` filter and encoded with libx264 at a constant rate factor (default 23, x264's default
preset): what a broadcaster's uplink carries. The push side uses the same chain, so a model
trained on it learns to undo exactly those compression artefacts.
"""

from __future__ import annotations

from . import ffmpeg

DEFAULT_CRF = 23


def crop_filter(scale: int) -> str:
    """ffmpeg filter cropping frames to a multiple of ``2 * scale`` in both dimensions."""
    m = 2 * scale
    return f"crop=trunc(iw/{m})*{m}:trunc(ih/{m})*{m}:0:0"


def shrink_filter(scale: int) -> str:
    """ffmpeg filter dividing both dimensions by ``scale`` with area averaging."""
    return f"scale=iw/{scale}:ih/{scale}:flags=area"


def downscale_filter(scale: int) -> str:
    return f"{crop_filter(scale)},{shrink_filter(scale)}"


def make_lr(hr_source: str, output: str, scale: int, crf: int = DEFAULT_CRF,
            start: float | None = None, duration: float | None = None) -> None:
    """Write the degraded low-resolution version of (a section of) ``hr_source`` to ``output``."""
    ffmpeg.require_input(hr_source)
    section = []
    if start:
        section += ["-ss", str(start)]
    if duration:
        section += ["-t", str(duration)]
    ffmpeg.run([*section, "-i", hr_source, "-vf", downscale_filter(scale), "-fps_mode", "passthrough",
                "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p", "-an", output])
