"""Evaluation of a recorded stream (sr-eval): its low-res stream, super-resolved and bicubic, against the
recording, frame by frame.

The recording (the HR frames) is cropped as the push side crops it
(:func:`srtools.degrade.crop_filter`); the low-res stream is read beside it, frame for frame (it must
be frame-aligned: :func:`srtools.degrade.make_lr` with ``live=True`` makes it as sr-push sends it).
Each LR frame is upscaled whole by the model (what sr-serve computes with time to spare) and
bicubically; the Y-PSNR and Y-SSIM (:mod:`srtools.metrics`; identical planes count as
:data:`srtools.metrics.IDENTICAL_DB`) of both against the HR frame are kept per frame. On the way,
the SR and bicubic frames can be encoded, and a *wipe* video: bicubic on the left, SR on the right
of a divider that sweeps across the picture and back every :data:`WIPE_PERIOD_S` seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from . import degrade, ffmpeg, metrics, video, y4m
from .errors import InputError
from .upscale import ModelUpscaler, bicubic

WIPE_PERIOD_S = 8.0
OUTPUT_CODEC = ("-c:v", "libx264", "-crf", "12", "-preset", "veryfast", "-pix_fmt", "yuv420p")
SCORES = ("sr_psnr", "bicubic_psnr", "sr_ssim", "bicubic_ssim")


@dataclasses.dataclass(frozen=True)
class FrameScore:
    """One frame's scores against the recording: Y-PSNR in dB, Y-SSIM."""

    frame: int
    sr_psnr: float
    bicubic_psnr: float
    sr_ssim: float
    bicubic_ssim: float


@dataclasses.dataclass
class Evaluation:
    """The scores of every frame, and the stream's frame rate and sizes ([width, height])."""

    fps: float
    hr: list[int]
    lr: list[int]
    scores: list[FrameScore]

    def mean(self, field: str) -> float:
        return float(np.mean([getattr(s, field) for s in self.scores]))

    def per_second(self, seconds: int = 1) -> list[tuple[int, dict[str, float]]]:
        """(start, means of each score) per ``seconds`` seconds of stream."""
        frames = max(1, round(self.fps * seconds))
        groups = [self.scores[i:i + frames] for i in range(0, len(self.scores), frames)]
        return [(i * seconds, {f: float(np.mean([getattr(s, f) for s in group])) for f in SCORES})
                for i, group in enumerate(groups)]


def wipe(left: y4m.Frame, right: y4m.Frame, share: float, labels: tuple[str, str]) -> y4m.Frame:
    """``left`` left of a white divider at ``share`` of the width, ``right`` to its right, each side labelled."""
    planes = [plane.copy() for plane in right.planes]
    width = planes[0].shape[1]
    x = min(width, max(0, round(share * width))) & ~1  # even: chroma is half as wide
    planes[0][:, :x] = left.planes[0][:, :x]
    for plane, source in zip(planes[1:], left.planes[1:]):
        plane[:, :x // 2] = source[:, :x // 2]
        plane[:, max(0, x // 2 - 1):x // 2 + 1] = 128
    planes[0][:, max(0, x - 1):x + 1] = 235
    scale = max(0.4, planes[0].shape[0] / 500)
    for text, at in ((labels[0], 8), (labels[1], None)):
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        origin = (at if at is not None else width - w - 8, h + 8)
        cv2.putText(planes[0], text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 16, 3, cv2.LINE_AA)
        cv2.putText(planes[0], text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 235, 1, cv2.LINE_AA)
    return y4m.Frame(planes, right.params)


@contextlib.contextmanager
def _encoding(path: Path, header: y4m.Header) -> Iterator[y4m.Writer]:
    """A Y4M writer into an ffmpeg encoding ``path`` (H.264, CRF 12)."""
    process = ffmpeg.encode(os.fspath(path), codec_args=OUTPUT_CODEC)
    try:
        yield y4m.Writer(process.stdin, header)
    except BaseException:
        process.kill()
        raise
    process.wait()


def evaluate(hr: str, lr: str, scale: int, upscaler: ModelUpscaler, outputs: dict[str, Path] | None = None,
             progress: Callable[[int], None] | None = None) -> Evaluation:
    """Score every frame of the low-res stream ``lr``, super-resolved by ``upscaler`` and bicubic, against
    the recording ``hr``.

    Args:
        outputs: where to encode the frames, by kind: "sr", "bicubic", "wipe" (any of them).
        progress: called with the number of frames done so far.

    Raises:
        InputError: the two are not ``scale`` apart in size, or not frame for frame.
        FFmpegError: decoding or encoding failed.
    """
    outputs = outputs or {}
    scores = []
    with contextlib.ExitStack() as stack:
        hr_reader = stack.enter_context(video.open_source(hr, vf=degrade.crop_filter(scale)))
        lr_reader = stack.enter_context(video.open_source(lr))
        header, lr_header = hr_reader.header, lr_reader.header
        if (lr_header.width * scale, lr_header.height * scale) != (header.width, header.height):
            raise InputError(f"{lr}: {lr_header.width}x{lr_header.height} is not {header.width}x{header.height} "
                             f"/ {scale}")
        writers = {kind: stack.enter_context(_encoding(path, header)) for kind, path in outputs.items()}
        fps = float(header.fps)
        while True:
            target, low = hr_reader.read(), lr_reader.read()
            if target is None or low is None:
                if (target is None) != (low is None):
                    raise InputError(f"{lr}: not frame for frame with {hr} (the counts differ after {len(scores)} "
                                     "frames)")
                break
            sr, plain = upscaler.upscale(low, header), bicubic(low, header)
            scores.append(FrameScore(len(scores), round(metrics.bounded_psnr(sr.y, target.y), 4),
                                     round(metrics.bounded_psnr(plain.y, target.y), 4),
                                     round(metrics.ssim(sr.y, target.y), 6), round(metrics.ssim(plain.y, target.y), 6)))
            for kind, writer in writers.items():
                if kind == "wipe":
                    t = len(scores) / fps
                    share = 0.5 + 0.4 * math.sin(2 * math.pi * t / WIPE_PERIOD_S)
                    writer.write(wipe(plain, sr, share, ("bicubic", f"SR {upscaler.label}")))
                else:
                    writer.write(sr if kind == "sr" else plain)
            if progress is not None:
                progress(len(scores))
    if not scores:
        raise InputError(f"{hr}: no frames")
    return Evaluation(fps, [header.width, header.height], [lr_header.width, lr_header.height], scores)


def frame_count(path: str) -> int | None:
    """The number of video frames ffprobe counts in ``path`` (None when it cannot say): for a progress bar."""
    try:
        result = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                                 "stream=nb_read_packets", "-of", "csv=p=0", path], capture_output=True, text=True,
                                timeout=120)
        return int(result.stdout.strip().split(",")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
