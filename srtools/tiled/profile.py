"""Reconstruction times of every tile on this machine: d_ij (DNN) and d'_ij (bicubic).

A tile's reconstruction is what the proxy does with an uncached tile: decode the LR file (one
ffmpeg process) and upscale all its frames. The LR file is decoded once and both upscales are
timed on the same frames, so d_ij = decode + F-EDSR and d'_ij = decode + bicubic, in ms, measured
one tile at a time (the serial reconstruction the delay model g_i assumes). The model is warmed
up on one tile first so the first measurement carries no start-up cost.

A profile is saved as JSON (``srtools-tiled-profile/1``) with the (n, J) arrays and where they
were measured, and reused with ``sr-cache --profile`` / ``sr-sim --profile``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from typing import Callable

import numpy as np

from ..errors import InputError
from ..fsutil import read_json_document, write_json_atomic
from .manifest import Manifest
from .reconstruct import Reconstructor, decode_tile

FORMAT = "srtools-tiled-profile/1"


@dataclasses.dataclass
class Profile:
    """Measured reconstruction times, (n, J) arrays in ms."""

    dnn_ms: np.ndarray
    bicubic_ms: np.ndarray
    decode_ms: np.ndarray
    model: str
    machine: str

    def to_json(self) -> dict:
        return {"format": FORMAT, "model": self.model, "machine": self.machine,
                "dnn_ms": np.round(self.dnn_ms, 3).tolist(), "bicubic_ms": np.round(self.bicubic_ms, 3).tolist(),
                "decode_ms": np.round(self.decode_ms, 3).tolist()}

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike, manifest: Manifest) -> Profile:
        raw = read_json_document(path, FORMAT, "profile", "sr-cache --save-profile")
        try:
            profile = cls(np.array(raw["dnn_ms"], dtype=float), np.array(raw["bicubic_ms"], dtype=float),
                          np.array(raw["decode_ms"], dtype=float), str(raw.get("model", "")),
                          str(raw.get("machine", "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: unreadable profile ({exc})") from None
        shape = (len(manifest.segments), manifest.tiles_per_segment)
        for name in ("dnn_ms", "bicubic_ms", "decode_ms"):
            array = getattr(profile, name)
            if array.shape != shape or not np.isfinite(array).all() or (array < 0).any():
                raise InputError(f"{path}: {name} is not a non-negative {shape[0]}x{shape[1]} array for this manifest")
        return profile


TileCallback = Callable[[int, int, dict], None]


def measure(manifest: Manifest, reconstructor: Reconstructor, on_tile: TileCallback | None = None,
            progress: Callable[[int], None] | None = None) -> Profile:
    """Time the reconstruction of every LR tile of ``manifest``.

    Args:
        on_tile: called as ``on_tile(i, j, {"dnn": frames, "bicubic": frames})`` with the
            reconstructed HR tile frames (for quality measurements).
        progress: called with the segment index after each segment.
    """
    shape = (len(manifest.segments), manifest.tiles_per_segment)
    dnn, bic, dec = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    first = manifest.segments[0]
    header, frames = decode_tile(manifest.lr_path(0, 0), first.frames)
    reconstructor.upscale(header, frames, "dnn")  # warm-up
    for segment in manifest.segments:
        for j in range(manifest.tiles_per_segment):
            start = time.perf_counter()
            header, frames = decode_tile(manifest.lr_path(segment.index, j), segment.frames)
            t_decode = time.perf_counter() - start
            start = time.perf_counter()
            bicubic_frames = reconstructor.upscale(header, frames, "bicubic")
            t_bicubic = time.perf_counter() - start
            start = time.perf_counter()
            dnn_frames = reconstructor.upscale(header, frames, "dnn")
            t_dnn = time.perf_counter() - start
            dec[segment.index, j] = 1e3 * t_decode
            bic[segment.index, j] = 1e3 * (t_decode + t_bicubic)
            dnn[segment.index, j] = 1e3 * (t_decode + t_dnn)
            if on_tile is not None:
                on_tile(segment.index, j, {"dnn": dnn_frames, "bicubic": bicubic_frames})
        if progress is not None:
            progress(segment.index)
    upscaler = reconstructor.upscaler
    model = "none (bicubic)" if upscaler is None else f"{upscaler.info.arch} {upscaler.info.hparams} ({upscaler.label})"
    return Profile(dnn, bic, dec, model, f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus")
