"""Upscaling frames: bicubic, or a model with bicubic chroma (colour mode ``y``) or on all planes (``yuv``)."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from .framefilter import measure_cost, warm_up_size
from .modelfile import ModelInfo
from .y4m import Frame, Header


def resize_plane(plane: np.ndarray, height: int, width: int, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Resize one 8-bit plane (OpenCV bicubic: a = -0.75, half-pixel centres, saturated)."""
    return cv2.resize(plane, (width, height), interpolation=interpolation)


def bicubic(frame: Frame, out_header: Header) -> Frame:
    """Every plane resized bicubically to ``out_header``'s plane sizes."""
    planes = [resize_plane(p, h, w) for p, (h, w) in zip(frame.planes, out_header.plane_shapes)]
    return Frame(planes, frame.params)


def network_planes(frame: Frame, color: str) -> np.ndarray:
    """(C, H, W) uint8 network input of a frame: Y alone (color ``y``), or Y with chroma resized
    to luma size (``yuv``)."""
    if color == "y":
        return frame.y[None]
    h, w = frame.y.shape
    return np.stack([frame.y] + [resize_plane(p, h, w) for p in frame.planes[1:]])


def to_unit(array: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 array -> float32 tensor of the same shape in [0, 1] (the networks' input range)."""
    return torch.from_numpy(array).to(device).float().div_(255.0)


def to_plane(tensor: torch.Tensor) -> np.ndarray:
    """Float tensor in [0, 1] -> uint8 array of the same shape, rounded and clamped."""
    return tensor.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


def native_bf16(device: str) -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively (CPU: AVX512-BF16 or AMX)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu  # private probes, absent from some builds: then assume no
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, probe, lambda: False)() for probe in probes)


def resolve_precision(precision: str, device: str) -> str:
    """'auto' -> 'bf16' where it is native to ``device``, else 'fp32'."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


class ModelUpscaler:
    """Runs an SR network on frames.

    Args:
        model: the network, (N, C, H, W) -> (N, C, sH, sW) in [0, 1].
        info: its model-file metadata (scale, colour mode).
        version: spool version, for logs and stats (None for a file given directly).
        device: torch device.
        precision: ``fp32``, or ``bf16`` to run the convolutions in bfloat16 (autocast) while the
            bicubic skip and the output stay fp32: faster where bf16 is native (the --precision option
            of sr-serve says how much, from benchmarks/bench_inference.py), for about 0.01 dB.
    """

    def __init__(self, model: torch.nn.Module, info: ModelInfo, version: int | None = None, device: str = "cpu",
                 precision: str = "fp32"):
        self.info = info
        self.version = version
        self.device = torch.device(device)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        # channels-last runs these small convolutions 2-3x faster on CPU (benchmarks/bench_inference.py).
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.cost: float | None = None  # seconds per frame, measured by warm_up()

    def warm_up(self, header: Header) -> None:
        """Run on a blank frame of ``header``'s size: first-call allocations stay out of the live
        stream, and :attr:`cost` is measured (:func:`srtools.framefilter.measure_cost`). A stream
        larger than :data:`~srtools.framefilter.WARM_UP_PIXELS` is warmed up on a frame of that size,
        its cost scaled up (:func:`~srtools.framefilter.warm_up_size`): its first frame allocates."""
        size, factor = warm_up_size(header)
        blank = Frame([np.full(shape, 128, np.uint8) for shape in size.plane_shapes])
        out_header = size.resized(size.width * self.info.scale, size.height * self.info.scale)
        self.cost = factor * measure_cost(lambda: self.upscale(blank, out_header))

    @property
    def label(self) -> str:
        return f"v{self.version}" if self.version is not None else self.info.source or "model"

    def upscale(self, frame: Frame, out_header: Header) -> Frame:
        """``frame`` upscaled to ``out_header``'s size."""
        [out] = self.upscale_batch([frame], out_header)
        return out

    @torch.inference_mode()
    def upscale_batch(self, frames: Sequence[Frame], out_header: Header) -> list[Frame]:
        """Frames of one size upscaled to ``out_header``'s size in one network call."""
        shapes = out_header.plane_shapes
        color = self.info.color if len(frames[0].planes) == 3 else "y"
        x = to_unit(np.stack([network_planes(f, color) for f in frames]), self.device)
        with self.autocast:
            out = self.model(x.contiguous(memory_format=torch.channels_last))
        results = []
        for frame, planes in zip(frames, out):
            if color == "y":
                chroma = [resize_plane(p, h, w) for p, (h, w) in zip(frame.planes[1:], shapes[1:])]
            else:  # back from luma size to the stream's chroma size
                chroma = [resize_plane(to_plane(planes[c]), h, w, cv2.INTER_AREA)
                          for c, (h, w) in zip((1, 2), shapes[1:])]
            results.append(Frame([to_plane(planes[0]), *chroma], frame.params))
        return results


def upscaler_factory(device: str, precision: str) -> Callable[..., ModelUpscaler]:
    """Builds a :class:`ModelUpscaler` from (model, info, version): what the model loader and the
    spool watcher (:mod:`srtools.loader`) call for every model they load."""
    return functools.partial(ModelUpscaler, device=device, precision=resolve_precision(precision, device))
