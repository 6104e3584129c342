"""Upscaling frames: bicubic, or a model with bicubic chroma (colour mode ``y``) or on all planes (``yuv``)."""

from __future__ import annotations

import time

import cv2
import numpy as np
import torch

from .modelfile import ModelInfo
from .y4m import Frame, Header


def resize_plane(plane: np.ndarray, height: int, width: int, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Resize one 8-bit plane (OpenCV bicubic: a = -0.75, half-pixel centres, saturated)."""
    return cv2.resize(plane, (width, height), interpolation=interpolation)


def bicubic(frame: Frame, out_header: Header) -> Frame:
    """Every plane resized bicubically to ``out_header``'s plane sizes."""
    planes = [resize_plane(p, h, w) for p, (h, w) in zip(frame.planes, out_header.plane_shapes)]
    return Frame(planes, frame.params)


def to_tensor(plane: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """(H, W) uint8 -> (1, 1, H, W) float32 in [0, 1]."""
    return torch.from_numpy(plane).to(device).float().div_(255.0)[None, None]


def to_plane(tensor: torch.Tensor) -> np.ndarray:
    """(H, W) float in [0, 1] -> (H, W) uint8, rounded and clamped."""
    return tensor.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


class ModelUpscaler:
    """Runs an SR network on frames.

    Args:
        model: the network, (N, C, H, W) -> (N, C, sH, sW) in [0, 1].
        info: its model-file metadata (scale, colour mode, version for logs).
        device: torch device.
        version: spool version, for logs and stats (None for a file given directly).
    """

    def __init__(self, model: torch.nn.Module, info: ModelInfo, device: str = "cpu", version: int | None = None):
        self.info = info
        self.version = version
        self.device = torch.device(device)
        # channels-last runs these small convolutions 2-3x faster on CPU (benchmarks/bench_inference.py).
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.seconds_per_frame = 0.0  # moving average of upscale(), for real-time decisions

    def warm_up(self, header: Header) -> None:
        """Run twice on a blank frame of ``header``'s size: first-call allocations stay out of the
        live stream, and :attr:`seconds_per_frame` starts from a real measurement."""
        blank = Frame([np.full(shape, 128, np.uint8) for shape in header.plane_shapes])
        out_header = header.resized(header.width * self.info.scale, header.height * self.info.scale)
        for _ in range(2):
            self.seconds_per_frame = 0.0
            self.upscale(blank, out_header)

    @property
    def label(self) -> str:
        return f"v{self.version}" if self.version is not None else self.info.source or "model"

    def upscale(self, frame: Frame, out_header: Header) -> Frame:
        """``frame`` upscaled to ``out_header``'s size."""
        start = time.perf_counter()
        out = self._upscale(frame, out_header)
        took = time.perf_counter() - start
        self.seconds_per_frame = took if not self.seconds_per_frame else 0.8 * self.seconds_per_frame + 0.2 * took
        return out

    @torch.inference_mode()
    def _upscale(self, frame: Frame, out_header: Header) -> Frame:
        shapes = out_header.plane_shapes
        if self.info.color == "y" or len(frame.planes) == 1:
            y = self.model(to_tensor(frame.y, self.device).contiguous(memory_format=torch.channels_last))
            chroma = [resize_plane(p, h, w) for p, (h, w) in zip(frame.planes[1:], shapes[1:])]
            return Frame([to_plane(y[0, 0]), *chroma], frame.params)
        # yuv: chroma brought to luma size, the three planes through the network, chroma back down.
        h, w = frame.y.shape
        full = np.stack([frame.y] + [resize_plane(p, h, w) for p in frame.planes[1:]])
        x = torch.from_numpy(full).to(self.device).float().div_(255.0)[None]
        out = self.model(x.contiguous(memory_format=torch.channels_last))[0]
        planes = [to_plane(out[0])]
        planes += [resize_plane(to_plane(out[c]), ch, cw, cv2.INTER_AREA) for c, (ch, cw) in zip((1, 2), shapes[1:])]
        return Frame(planes, frame.params)
