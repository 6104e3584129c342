"""Reconstructing a segment from its tiles: decode, upscale (bicubic or F-EDSR), stitch, encode.

Shared by ``sr-proxy`` (which serves the result) and ``sr-sim`` / the profiler (which time it and
measure its quality), so the figures of one are the behaviour of the other.

A tile arrives in one of three forms, its *mode*:

- ``hr``: the cached high-res tile, decoded and used as is (no reconstruction);
- ``dnn``: the low-res tile upscaled by the model (luma through the network, all frames of the
  tile in one batch; chroma bicubic), as :class:`srtools.upscale.ModelUpscaler` does per frame;
- ``bicubic``: the low-res tile upscaled bicubically (OpenCV, every plane).

Without a model, ``dnn`` tiles fall back to bicubic.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import ffmpeg, video, y4m
from ..errors import InputError
from ..upscale import ModelUpscaler, bicubic
from .manifest import Manifest

DEFAULT_CRF = 18  # sr-proxy's, and what the profile's encode times are measured with


def decode_tile(path: str, expected_frames: int | None = None) -> tuple[y4m.Header, list[y4m.Frame]]:
    """Decode a tile file to frames (one ffmpeg process)."""
    header, frames = video.read_all(str(path))
    if expected_frames is not None and len(frames) != expected_frames:
        raise InputError(f"{path}: {len(frames)} frames, the manifest says {expected_frames}")
    return header, frames


def upscale_frames(frames: Sequence[y4m.Frame], out_header: y4m.Header,
                   upscaler: ModelUpscaler | None) -> list[y4m.Frame]:
    """Upscale a tile's frames with the model (batched over frames) or bicubically when None."""
    if upscaler is None:
        return [bicubic(f, out_header) for f in frames]
    return upscaler.upscale_batch(frames, out_header)


class Reconstructor:
    """Turns tile files into HR tile frames and stitches segments, timing each step.

    Args:
        manifest: the tiled video.
        upscaler: the F-EDSR model for ``dnn`` tiles, or None (bicubic for all).
    """

    def __init__(self, manifest: Manifest, upscaler: ModelUpscaler | None):
        self.manifest = manifest
        self.upscaler = upscaler
        self.tile_header = y4m.Header(manifest.tile_width, manifest.tile_height, manifest.fps)
        self.frame_header = y4m.Header(manifest.width, manifest.height, manifest.fps)

    def tile(self, path: str, mode: str, frames: int) -> tuple[list[y4m.Frame], float, float]:
        """Reconstruct one tile file in ``mode``.

        Returns:
            (HR tile frames, decode seconds, upscale seconds).
        """
        start = time.perf_counter()
        header, decoded = decode_tile(path, frames)
        decoded_at = time.perf_counter()
        out = self.upscale(header, decoded, mode)
        return out, decoded_at - start, time.perf_counter() - decoded_at

    def upscale(self, header: y4m.Header, frames: list[y4m.Frame], mode: str) -> list[y4m.Frame]:
        expected = (self.tile_header.width, self.tile_header.height)
        if mode == "hr":
            if (header.width, header.height) != expected:
                raise InputError(f"HR tile is {header.width}x{header.height}, expected {expected[0]}x{expected[1]}")
            return frames
        lr = (expected[0] // self.manifest.scale, expected[1] // self.manifest.scale)
        if (header.width, header.height) != lr:
            raise InputError(f"LR tile is {header.width}x{header.height}, expected {lr[0]}x{lr[1]}")
        return upscale_frames(frames, self.tile_header, self.upscaler if mode == "dnn" else None)

    def stitch(self, tiles: Sequence[Sequence[y4m.Frame]]) -> list[y4m.Frame]:
        """Place the HR frames of every tile (in tile order) into full frames."""
        m = self.manifest
        count = len(tiles[0])
        shapes = self.frame_header.plane_shapes
        out = []
        for index in range(count):
            planes = [np.empty(shape, dtype=np.uint8) for shape in shapes]
            for j, frames in enumerate(tiles):
                for p, plane in enumerate(planes):
                    sub = 1 if p == 0 else 2
                    y, x, th, tw = m.tile_rect(j, sub)
                    plane[y:y + th, x:x + tw] = frames[index].planes[p]
            out.append(y4m.Frame(planes))
        return out

    def encode(self, tiles: Sequence[Sequence[y4m.Frame]], output: Path, offset_s: float,
               crf: int = DEFAULT_CRF) -> bytes:
        """Stitch the HR tiles (tile order) and encode them with libx264 into an MPEG-TS segment whose
        timestamps start at ``offset_s`` (so consecutive segments form an HLS stream)."""
        process = ffmpeg.encode(str(output), codec_args=("-c:v", "libx264", "-preset", "veryfast",
                                                          "-crf", str(crf), "-pix_fmt", "yuv420p"),
                                output_args=("-f", "mpegts", "-output_ts_offset", f"{offset_s:.6f}"))
        try:
            writer = y4m.Writer(process.stdin, self.frame_header)
            for frame in self.stitch(tiles):
                writer.write(frame)
        except BrokenPipeError:
            pass
        process.wait()
        body = output.read_bytes()
        output.unlink()
        return body


def tile_sse(reference: np.ndarray, frames: Sequence[y4m.Frame]) -> np.ndarray:
    """Per-frame sum of squared luma errors of tile frames against (F, th, tw) reference luma."""
    got = np.stack([f.y for f in frames]).astype(np.int32)
    diff = got - reference.astype(np.int32)
    return (diff * diff).reshape(len(frames), -1).sum(axis=1).astype(np.float64)


def reference_tile(manifest: Manifest, luma: np.ndarray, j: int) -> np.ndarray:
    """(F, th, tw) luma of tile j cut from (F, H, W) original luma."""
    y, x, th, tw = manifest.tile_rect(j)
    return luma[:, y:y + th, x:x + tw]
