"""What building each segment costs the proxy on this machine: d_ij (DNN), d'_ij (bicubic), the HR
decode of cached tiles and the stitch + encode of each segment.

A tile's reconstruction is what the proxy does with an uncached tile: decode the LR file (one
ffmpeg process) and upscale all its frames. The LR file is decoded once and both upscales are
timed on the same frames, so d_ij = decode + F-EDSR and d'_ij = decode + bicubic, in ms, measured
one tile at a time (the serial reconstruction the delay model g_i assumes). A cached tile costs
the proxy the decode of its HR file (one ffmpeg process), h_ij. Each segment is then stitched
from its HR tiles and encoded by the proxy's own encoder (``Reconstructor.encode``, the default
CRF), s_i. The model is warmed up on one tile first so the first measurement carries no start-up
cost.

A profile is saved as JSON (``srtools-tiled-profile/2``) with the (n, J) and (n,) arrays and where
they were measured, and reused with ``sr-cache --profile`` / ``sr-sim --profile``. Profiles of
format 1 lack h and s and are refused with a one-line error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from ..fsutil import read_json_document, write_json_atomic
from .manifest import Manifest
from .reconstruct import Reconstructor, decode_tile

FORMAT = "srtools-tiled-profile/2"
OLD_FORMAT = "srtools-tiled-profile/1"  # no HR decode or encode times


@dataclasses.dataclass
class Profile:
    """Measured times in ms: per tile (n, J) arrays, per segment ``encode_ms`` (n,)."""

    dnn_ms: np.ndarray
    bicubic_ms: np.ndarray
    decode_ms: np.ndarray  # LR decode, part of dnn_ms and bicubic_ms
    hr_decode_ms: np.ndarray  # decode of the cached HR tile
    encode_ms: np.ndarray  # stitch + encode of the segment
    model: str
    machine: str

    ARRAYS = ("dnn_ms", "bicubic_ms", "decode_ms", "hr_decode_ms", "encode_ms")
    DECIMALS = 3  # of a millisecond: what a saved profile keeps, so a measured one is rounded alike

    def to_json(self) -> dict:
        return {"format": FORMAT, "model": self.model, "machine": self.machine,
                **{name: np.round(getattr(self, name), self.DECIMALS).tolist() for name in self.ARRAYS}}

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike, manifest: Manifest) -> Profile:
        try:
            raw = read_json_document(path, FORMAT, "profile", "sr-cache --save-profile")
        except InputError:
            if _format(path) == OLD_FORMAT:
                raise InputError(f"{path}: an {OLD_FORMAT} profile lacks HR decode and encode times; measure it "
                                 f"again (sr-cache --save-profile)") from None
            raise
        try:
            profile = cls(*(np.array(raw[name], dtype=float) for name in cls.ARRAYS), str(raw.get("model", "")),
                          str(raw.get("machine", "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: unreadable profile ({exc})") from None
        n, tiles = len(manifest.segments), manifest.tiles_per_segment
        for name in cls.ARRAYS:
            array = getattr(profile, name)
            shape = (n,) if name == "encode_ms" else (n, tiles)
            if array.shape != shape or not np.isfinite(array).all() or (array < 0).any():
                raise InputError(f"{path}: {name} is not a non-negative {'x'.join(map(str, shape))} array "
                                 f"for this manifest")
        return profile


def _format(path: str | os.PathLike) -> object:
    """The ``format`` field of a JSON document, None where there is none."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return raw.get("format") if isinstance(raw, dict) else None


TileCallback = Callable[[int, int, dict], None]


def measure(manifest: Manifest, reconstructor: Reconstructor, on_tile: TileCallback | None = None,
            progress: Callable[[int], None] | None = None) -> Profile:
    """Time the reconstruction of every LR tile of ``manifest``.

    Args:
        on_tile: called as ``on_tile(i, j, {"dnn": frames, "bicubic": frames, "hr": frames})`` with
            the reconstructed tile frames and the decoded HR tile (for quality measurements).
        progress: called with the segment index after each segment.
    """
    shape = (len(manifest.segments), manifest.tiles_per_segment)
    dnn, bic, dec, hr_dec = np.zeros(shape), np.zeros(shape), np.zeros(shape), np.zeros(shape)
    encode = np.zeros(shape[0])
    first = manifest.segments[0]
    header, frames = decode_tile(manifest.lr_path(0, 0), first.frames)
    reconstructor.upscale(header, frames, "dnn")  # warm-up
    with tempfile.TemporaryDirectory(prefix="sr-profile-") as work:
        for segment in manifest.segments:
            hr_tiles = []
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
                start = time.perf_counter()
                _, hr_frames = decode_tile(manifest.hr_path(segment.index, j), segment.frames)
                hr_dec[segment.index, j] = 1e3 * (time.perf_counter() - start)
                hr_tiles.append(hr_frames)
                if on_tile is not None:
                    on_tile(segment.index, j, {"dnn": dnn_frames, "bicubic": bicubic_frames, "hr": hr_frames})
            start = time.perf_counter()
            reconstructor.encode(hr_tiles, Path(work) / "segment.ts", segment.start_frame / float(manifest.fps))
            encode[segment.index] = 1e3 * (time.perf_counter() - start)
            if progress is not None:
                progress(segment.index)
    upscaler = reconstructor.upscaler
    model = "none (bicubic)" if upscaler is None else f"{upscaler.info.arch} {upscaler.info.hparams} ({upscaler.label})"
    machine = f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus"
    # Rounded as saved: a plan made from this profile is the plan its saved copy gives.
    return Profile(*(np.round(a, Profile.DECIMALS) for a in (dnn, bic, dec, hr_dec, encode)), model, machine)
