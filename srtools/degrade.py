"""The default degradation: how a high-resolution clip becomes the low-resolution stream.

HR frames are cropped to a multiple of twice the scale (top-left kept; 4:2:0 needs even sizes at
both resolutions), downscaled with ffmpeg's
``area`` filter and encoded with libx264 at a constant rate factor (default 23, x264's default
preset): what a broadcaster's uplink carries. The push side uses the same chain with live encoder
settings (:func:`live_x264_args`: no B-frames, no lookahead, a keyframe per segment), so a model
trained on it learns to undo exactly those compression artefacts; ``make_lr(..., live=True)``
reproduces them for training material that must match the live stream frame by frame (TCSR learns
from consecutive frames, whose artefacts depend on the frame types).
"""

from __future__ import annotations

from . import ffmpeg

DEFAULT_CRF = 23
LIVE_BITRATE = "2M"  # sr-push's default cap
LIVE_PRESET = "veryfast"
LIVE_SEGMENT = 2.0  # seconds between keyframes: sr-push's default HLS-friendly segment


def crop_filter(scale: int) -> str:
    """ffmpeg filter cropping frames to a multiple of ``2 * scale`` in both dimensions."""
    m = 2 * scale
    return f"crop=trunc(iw/{m})*{m}:trunc(ih/{m})*{m}:0:0"


def shrink_filter(scale: int) -> str:
    """ffmpeg filter dividing both dimensions by ``scale`` with area averaging."""
    return f"scale=iw/{scale}:ih/{scale}:flags=area"


def downscale_filter(scale: int) -> str:
    return f"{crop_filter(scale)},{shrink_filter(scale)}"


def live_x264_args(crf: int = DEFAULT_CRF, bitrate: str = LIVE_BITRATE, preset: str = LIVE_PRESET,
                   segment: float = LIVE_SEGMENT) -> list[str]:
    """sr-push's video encoder: libx264 for low latency (no B-frames, no lookahead), CRF capped by the
    bitrate, keyframes at every segment boundary and nowhere else."""
    return ["-c:v", "libx264", "-preset", preset, "-tune", "zerolatency", "-bf", "0",
            "-crf", str(crf), "-maxrate", bitrate, "-bufsize", bitrate,
            "-force_key_frames", f"expr:gte(t,n_forced*{segment})", "-x264-params", "keyint=infinite:scenecut=0"]


def make_lr(hr_source: str, output: str, scale: int, crf: int = DEFAULT_CRF,
            start: float | None = None, duration: float | None = None, live: bool = False) -> None:
    """Write the degraded low-resolution version of (a section of) ``hr_source`` to ``output``: x264 at
    ``crf`` with its default preset, or with ``live`` sr-push's encoder settings (:func:`live_x264_args`)."""
    ffmpeg.require_input(hr_source)
    section = []
    if start:
        section += ["-ss", str(start)]
    if duration:
        section += ["-t", str(duration)]
    codec = live_x264_args(crf) if live else ["-c:v", "libx264", "-crf", str(crf)]
    ffmpeg.run([*section, "-i", hr_source, "-vf", downscale_filter(scale), "-fps_mode", "passthrough",
                *codec, "-pix_fmt", "yuv420p", "-an", output])
