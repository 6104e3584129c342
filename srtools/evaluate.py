"""Evaluation of a recorded stream (sr-eval, make demo): its low-res stream, super-resolved and bicubic,
against the recording, frame by frame.

The recording (the HR frames) is cropped as the push side crops it
(:func:`srtools.degrade.crop_filter`); the low-res stream is read beside it, frame for frame (it must
be frame-aligned: :func:`srtools.degrade.make_lr` with ``live=True`` makes it as sr-push sends it,
and the LR rendition of sr-hls is the stream the server received). Each LR frame is upscaled whole
by the model (what sr-serve computes with time to spare), or the super-resolved frames are read from
a stream of them (the SR rendition), and bicubically; the Y-PSNR and Y-SSIM (:mod:`srtools.metrics`;
identical planes count as :data:`srtools.metrics.IDENTICAL_DB`) of both against the HR frame are kept
per frame, with how much the picture changed from the frame before (scene cuts). On the way, the SR
and bicubic frames can be encoded, and a *wipe* video: bicubic on the left, SR on the right of a
divider that sweeps across the picture and back every :data:`WIPE_PERIOD_S` seconds.

Frame for frame means frame n of one is frame n of the other: :func:`best_offset` checks it.
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
CUT_LEVELS = 20.0  # a picture change (mean luma difference of 16x9 thumbnails) that is a scene cut
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
    change: float  # mean absolute luma difference of the recording's 16x9 thumbnail from the frame before


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

    def cuts(self, levels: float = CUT_LEVELS) -> list[float]:
        """Stream times (s) of the frames whose picture changed by more than ``levels``: scene cuts."""
        return [s.frame / self.fps for s in self.scores if s.change > levels]


def thumbnail(plane: np.ndarray) -> np.ndarray:
    """A luma plane averaged over a 16x9 grid (as sr-monitor compares pictures)."""
    return cv2.resize(plane, (16, 9), interpolation=cv2.INTER_AREA).astype(np.float32)


def best_offset(reference: list[np.ndarray], candidate: list[np.ndarray], scale: int = 1,
                max_offset: int = 3) -> tuple[int, dict[int, float]]:
    """By how many frames ``candidate`` (luma planes, ``scale`` times smaller, upscaled bicubically for the
    comparison) is best shifted to match ``reference``: frame n of it is frame n + offset of the reference.
    Returns (offset, mean Y-PSNR at each offset tried)."""
    scores = {}
    for offset in range(-max_offset, max_offset + 1):
        pairs = [(reference[n + offset], candidate[n]) for n in range(len(candidate))
                 if 0 <= n + offset < len(reference)]
        if pairs:
            h, w = pairs[0][0].shape
            scores[offset] = float(np.mean([metrics.bounded_psnr(ref, cv2.resize(c, (w, h),
                                                                                 interpolation=cv2.INTER_CUBIC))
                                            for ref, c in pairs]))
    return max(scores, key=scores.get), scores


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


def hr_filter(scale: int, fps: float | None = None) -> str:
    """ffmpeg's filter turning a recording into the HR frames the push side starts from (at ``fps``
    frames per second as sr-live's ingest makes them, when given)."""
    return (f"fps={fps:g}:round=down," if fps else "") + degrade.crop_filter(scale)


def evaluate(hr: str, lr: str, scale: int, upscaler: ModelUpscaler | None = None, sr_source: str | None = None,
             outputs: dict[str, Path] | None = None, progress: Callable[[int], None] | None = None,
             fps: float | None = None, strict: bool = True) -> Evaluation:
    """Score every frame of the low-res stream ``lr``, super-resolved and bicubic, against the recording ``hr``.

    Args:
        upscaler: what super-resolves each LR frame; or
        sr_source: the super-resolved frames, a stream of the recording's size (e.g. the SR rendition).
        outputs: where to encode the frames, by kind: "sr", "bicubic", "wipe" (any of them).
        progress: called with the number of frames done so far.
        fps: convert the recording to this frame rate first (as sr-live's ingest converts the stream).
        strict: the streams must have as many frames as the recording; else the shortest ends the
            evaluation.

    Raises:
        InputError: the streams are not ``scale`` apart in size, or (``strict``) not frame for frame.
        FFmpegError: decoding or encoding failed.
    """
    outputs = outputs or {}
    scores, previous = [], None
    with contextlib.ExitStack() as stack:
        hr_reader = stack.enter_context(video.open_source(hr, vf=hr_filter(scale, fps)))
        lr_reader = stack.enter_context(video.open_source(lr))
        sr_reader = stack.enter_context(video.open_source(sr_source)) if sr_source else None
        header, lr_header = hr_reader.header, lr_reader.header
        if (lr_header.width * scale, lr_header.height * scale) != (header.width, header.height):
            raise InputError(f"{lr}: {lr_header.width}x{lr_header.height} is not {header.width}x{header.height} "
                             f"/ {scale}")
        if sr_reader is not None and (sr_reader.header.width, sr_reader.header.height) != (header.width, header.height):
            raise InputError(f"{sr_source}: {sr_reader.header.width}x{sr_reader.header.height}, not "
                             f"{header.width}x{header.height}")
        label = upscaler.label if upscaler is not None else "rendition"
        writers = {kind: stack.enter_context(_encoding(path, header)) for kind, path in outputs.items()}
        rate = float(header.fps)
        while True:
            target, low = hr_reader.read(), lr_reader.read()
            sr = sr_reader.read() if sr_reader is not None else None
            if target is None or low is None or (sr_reader is not None and sr is None):
                ended = [name for name, frame in ((hr, target), (lr, low), (sr_source, sr)) if name and frame is None]
                if strict and len(ended) < (3 if sr_reader is not None else 2):
                    raise InputError(f"{', '.join(ended)}: ended after {len(scores)} frames, before the other "
                                     "stream(s): not frame for frame")
                break
            if sr is None:
                sr = upscaler.upscale(low, header)
            plain = bicubic(low, header)
            small = thumbnail(target.y)
            change = float(np.abs(small - previous).mean()) if previous is not None else 0.0
            previous = small
            scores.append(FrameScore(len(scores), round(metrics.bounded_psnr(sr.y, target.y), 4),
                                     round(metrics.bounded_psnr(plain.y, target.y), 4),
                                     round(metrics.ssim(sr.y, target.y), 6), round(metrics.ssim(plain.y, target.y), 6),
                                     round(change, 3)))
            for kind, writer in writers.items():
                if kind == "wipe":
                    share = 0.5 + 0.4 * math.sin(2 * math.pi * len(scores) / rate / WIPE_PERIOD_S)
                    writer.write(wipe(plain, sr, share, ("bicubic", f"SR {label}")))
                else:
                    writer.write(sr if kind == "sr" else plain)
            if progress is not None:
                progress(len(scores))
    if not scores:
        raise InputError(f"{hr}: no frames")
    return Evaluation(rate, [header.width, header.height], [lr_header.width, lr_header.height], scores)


def frame_count(path: str) -> int | None:
    """The number of video frames ffprobe counts in ``path`` (None when it cannot say): for a progress bar."""
    try:
        result = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                                 "stream=nb_read_packets", "-of", "csv=p=0", path], capture_output=True, text=True,
                                timeout=120)
        return int(result.stdout.strip().split(",")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
