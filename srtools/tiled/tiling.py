"""Cut a video into segments and tiles, encode every tile at HR and LR, group tiles into sets.

The source is decoded once (cropped to a whole number of tiles whose LR size is even, as 4:2:0
needs); each segment's frames go as Y4M to one ffmpeg process whose filter graph crops every tile
and writes two real H.264 files per tile: the HR crop (``hr_crf``) and its LR version, downscaled
with the ``area`` filter and encoded at ``lr_crf`` (the degradation srtools models are trained on,
see :mod:`srtools.degrade`). Tiles of a segment are then split into ``edges`` sets of near-equal LR
bytes with :func:`srtools.tiled.partition.balanced_partition`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from .. import ffmpeg, video, y4m
from ..errors import InputError, UsageError
from .manifest import MANIFEST_NAME, Manifest, Segment, Tile
from .partition import balanced_partition, imbalance
from .saliency import segment_attention

log = logging.getLogger("srtools.tiled")
PARTITION_ALGORITHM = "multiway Karmarkar-Karp + pairwise exchange local search (srtools.tiled.partition)"
SALIENCY_FRAMES = 3  # frames per segment fed to the saliency model (first, middle, last)


def tiled_size(width: int, height: int, rows: int, cols: int, scale: int) -> tuple[int, int]:
    """Largest top-left crop split into rows x cols tiles whose LR size (/scale) is even."""
    unit_w, unit_h = cols * scale * 2, rows * scale * 2
    return width // unit_w * unit_w, height // unit_h * unit_h


def _filter_graph(m: Manifest) -> str:
    j_count = m.tiles_per_segment
    parts = [f"[0:v]split={j_count}" + "".join(f"[c{j}]" for j in range(j_count))]
    for j in range(j_count):
        y, x, th, tw = m.tile_rect(j)
        parts.append(f"[c{j}]crop={tw}:{th}:{x}:{y},split=2[h{j}][d{j}]")
        parts.append(f"[d{j}]scale={tw // m.scale}:{th // m.scale}:flags=area[l{j}]")
    return ";".join(parts)


def _encode_segment(m: Manifest, root: Path, index: int, frames: list[y4m.Frame], header: y4m.Header,
                    graph: str) -> None:
    name = lambda j: Manifest.tile_name(index, j)  # noqa: E731
    for d in ["origin"] + [Manifest.edge_dirname(e) for e in range(m.edges)]:
        (root / d / name(0)).parent.mkdir(parents=True, exist_ok=True)
    codec = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-threads", "1", "-an"]
    args = [*ffmpeg.GLOBAL_ARGS, "-y", "-f", "yuv4mpegpipe", "-i", "pipe:",
            "-filter_complex", graph]
    for j in range(m.tiles_per_segment):
        # Written under the staging edge-0 first; moved to their set's edge after partitioning.
        args += ["-map", f"[h{j}]", *codec, "-crf", str(m.hr_crf), str(root / "origin" / name(j))]
        args += ["-map", f"[l{j}]", *codec, "-crf", str(m.lr_crf), str(root / Manifest.edge_dirname(0) / name(j))]
    process = ffmpeg.Process(args, stdin=subprocess.PIPE)
    try:
        writer = y4m.Writer(process.stdin, header)
        for frame in frames:
            writer.write(frame)
    except BrokenPipeError:
        pass  # ffmpeg died: wait() reports why
    process.wait()


def make_tiles(source: str, out_dir: str | os.PathLike, *, segment_seconds: float = 1.0, rows: int = 4,
               cols: int = 6, edges: int = 6, scale: int = 2, lr_crf: int = 23, hr_crf: int = 18,
               jobs: int | None = None) -> Manifest:
    """Tile ``source`` into ``out_dir`` (which must not exist or be empty) and return the manifest.

    Everything is written to a staging directory beside ``out_dir`` and renamed into place at the
    end, so readers never see a half-written tiled directory.

    Raises:
        UsageError: bad geometry or an existing non-empty ``out_dir``.
        InputError / FFmpegError: unreadable source, ffmpeg failures.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out}: exists and is not an empty directory")
    if edges > rows * cols:
        raise UsageError(f"--sets {edges}: more sets than the {rows * cols} tiles of a segment")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    jobs = jobs or max(1, min(4, os.cpu_count() or 1))
    try:
        with video.open_source(source) as reader:
            m = _tile_into(reader, source, staging, segment_seconds, rows, cols, edges, scale, lr_crf, hr_crf, jobs)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    m.root = out
    return m


def crop_frame(frame: y4m.Frame, header: y4m.Header) -> y4m.Frame:
    """The top-left ``header.width`` x ``header.height`` part of a frame (planes copied)."""
    return y4m.Frame([p[:h, :w].copy() for p, (h, w) in zip(frame.planes, header.plane_shapes)], frame.params)


def _tile_into(reader: y4m.Reader, source: str, staging: Path, segment_seconds: float, rows: int, cols: int,
               edges: int, scale: int, lr_crf: int, hr_crf: int, jobs: int) -> Manifest:
    src_header = reader.header
    width, height = tiled_size(src_header.width, src_header.height, rows, cols, scale)
    if width == 0 or height == 0:
        raise UsageError(f"{source}: {src_header.width}x{src_header.height} is too small for a "
                         f"{rows}x{cols} grid at x{scale} (tiles need an even LR size)")
    if (width, height) != (src_header.width, src_header.height):
        log.info("cropping %dx%d to %dx%d (whole tiles with an even LR size)", src_header.width,
                 src_header.height, width, height)
    fps = src_header.fps
    per_segment = max(1, round(float(fps) * segment_seconds))
    m = Manifest(source=os.path.abspath(source), width=width, height=height, fps=Fraction(fps), scale=scale,
                 rows=rows, cols=cols, edges=edges, segment_seconds=per_segment / float(fps), lr_crf=lr_crf,
                 hr_crf=hr_crf, segments=[], root=staging)
    graph = _filter_graph(m)
    saliency_frames: list[list[np.ndarray]] = []
    starts: list[tuple[int, int]] = []
    header = src_header.resized(width, height)
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures, batch, start = [], [], 0
        frames_iter = iter(reader)
        while True:
            frame = next(frames_iter, None)
            if frame is not None:
                batch.append(crop_frame(frame, header))
            if batch and (len(batch) == per_segment or frame is None):
                index = len(starts)
                starts.append((start, len(batch)))
                picks = sorted({0, len(batch) // 2, len(batch) - 1})[:SALIENCY_FRAMES]
                saliency_frames.append([batch[p].y.copy() for p in picks])
                futures.append(pool.submit(_encode_segment, m, staging, index, batch, header, graph))
                # Keep at most 2 * jobs segments of frames in memory.
                while sum(not f.done() for f in futures) > 2 * jobs:
                    concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
                start += len(batch)
                batch = []
            if frame is None:
                break
        for f in futures:
            f.result()
    if not starts:
        raise InputError(f"{source}: no frames")
    attention = segment_attention(saliency_frames)
    spreads = []
    for index, (start, count) in enumerate(starts):
        tiles = []
        for j in range(m.tiles_per_segment):
            row, col = divmod(j, cols)
            lr_file = staging / Manifest.edge_dirname(0) / m.tile_name(index, j)
            hr_file = staging / "origin" / m.tile_name(index, j)
            tiles.append(Tile(j, row, col, lr_bytes=lr_file.stat().st_size, hr_bytes=hr_file.stat().st_size))
        sizes = [t.lr_bytes for t in tiles]
        sets = balanced_partition(sizes, edges)
        spreads.append(imbalance(sizes, sets))
        m.segments.append(Segment(index, start, count, tiles, sets, float(attention[index])))
        for edge, members in enumerate(sets):
            if edge == 0:
                continue
            (staging / Manifest.edge_dirname(edge) / m.tile_name(index, 0)).parent.mkdir(parents=True, exist_ok=True)
            for j in members:
                os.replace(staging / Manifest.edge_dirname(0) / m.tile_name(index, j),
                           staging / Manifest.edge_dirname(edge) / m.tile_name(index, j))
    m.partition = {"algorithm": PARTITION_ALGORITHM, "sizes": "LR tile bytes",
                   "imbalance": "(max set bytes - min set bytes) / mean set bytes",
                   "imbalance_mean": round(float(np.mean(spreads)), 5),
                   "imbalance_max": round(float(np.max(spreads)), 5)}
    m.save(staging / MANIFEST_NAME)
    return m
