"""The proxy's segment builder: cached HR tiles + LR tiles fetched in parallel -> one playable segment.

For segment i the builder fetches every uncached tile from the edge holding its set (one HTTP GET
per tile, all in parallel), reconstructs each tile as soon as it arrives (LR tiles upscaled by
F-EDSR or bicubic per the plan's e_ij; cached HR tiles only decoded), stitches the frames and
encodes them with libx264 into an MPEG-TS segment whose timestamps continue the previous one, so
the segments form an HLS stream. Every built segment is kept and its timings recorded.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from .. import ffmpeg, y4m
from ..errors import InputError, SrError
from .manifest import Manifest
from .reconstruct import Reconstructor

log = logging.getLogger("srtools.proxy")


class FetchError(SrError):
    """An edge did not deliver a tile."""


@dataclasses.dataclass
class SegmentTimings:
    index: int
    fetched_tiles: int
    cached_tiles: int
    dnn_tiles: int
    fetch_ms: float  # from the start until the last tile arrived
    reconstruct_ms: float  # summed over tiles (decode + upscale), as g_i counts it
    encode_ms: float
    total_ms: float  # wall time to build the segment
    bytes: int


class SegmentBuilder:
    """Builds and keeps the HLS segments of a tiled video.

    Args:
        manifest: the tiled video (the origin's HR tiles are read from its directory).
        cached: (n, M) bool, the plan's x_im.
        dnn: (n, J) bool, the plan's e_ij.
        edge_urls: base URL of edge m's server, in edge order.
        reconstructor: decoding and upscaling.
        crf: x264 CRF of the served segments (0 = lossless).
        workers: tiles reconstructed at once.
    """

    def __init__(self, manifest: Manifest, cached: np.ndarray, dnn: np.ndarray, edge_urls: list[str],
                 reconstructor: Reconstructor, crf: int = 18, workers: int = 2, timeout: float = 30.0):
        self.m, self.cached, self.dnn = manifest, cached, dnn
        self.edge_urls = [u.rstrip("/") for u in edge_urls]
        self.reconstructor = reconstructor
        self.crf, self.timeout = crf, timeout
        self.work = Path(tempfile.mkdtemp(prefix="sr-proxy-"))
        self.cache_dir = self.work / "cache"
        self.fetch_pool = concurrent.futures.ThreadPoolExecutor(max(1, manifest.tiles_per_segment),
                                                                thread_name_prefix="fetch")
        self.recon_pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="reconstruct")
        self.segments: dict[int, bytes] = {}
        self.timings: dict[int, SegmentTimings] = {}
        self._locks = [threading.Lock() for _ in manifest.segments]

    def close(self) -> None:
        self.fetch_pool.shutdown(cancel_futures=True)
        self.recon_pool.shutdown(cancel_futures=True)
        shutil.rmtree(self.work, ignore_errors=True)

    def precache(self) -> int:
        """Copy the HR tiles of every planned set from the origin into the proxy's cache; bytes."""
        total = 0
        for i, segment in enumerate(self.m.segments):
            for edge in np.flatnonzero(self.cached[i]):
                for j in segment.sets[edge]:
                    target = self.cache_dir / self.m.tile_name(i, j)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        shutil.copyfile(self.m.hr_path(i, j), target)
                    except OSError as exc:
                        raise InputError(f"{self.m.hr_path(i, j)}: cannot read HR tile ({exc.strerror})") from None
                    total += target.stat().st_size
        return total

    def duration(self, i: int) -> float:
        return self.m.segments[i].frames / float(self.m.fps)

    def playlist(self) -> str:
        durations = [self.duration(i) for i in range(len(self.m.segments))]
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{math.ceil(max(durations))}",
                 "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD"]
        for i, d in enumerate(durations):
            lines += [f"#EXTINF:{d:.6f},", f"seg{i:05d}.ts"]
        return "\n".join(lines + ["#EXT-X-ENDLIST", ""])

    def segment(self, i: int) -> bytes:
        """The encoded segment i, built on first request."""
        with self._locks[i]:
            if i not in self.segments:
                self.segments[i] = self._build(i)
            return self.segments[i]

    def _fetch(self, i: int, j: int, edge: int) -> Path:
        url = f"{self.edge_urls[edge]}/{self.m.tile_name(i, j)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise FetchError(f"edge {edge}: {url}: {getattr(exc, 'reason', exc)}") from None
        path = self.work / "fetched" / self.m.tile_name(i, j)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return path

    def _build(self, i: int) -> bytes:
        segment = self.m.segments[i]
        start = time.perf_counter()
        fetch_done = start
        spent: list[float] = []  # per-tile decode + upscale seconds (list.append is thread-safe)
        tiles: list = [None] * self.m.tiles_per_segment

        def reconstruct(j: int, path: Path, mode: str) -> None:
            frames, decode_s, upscale_s = self.reconstructor.tile(str(path), mode, segment.frames)
            tiles[j] = frames
            spent.append(decode_s + upscale_s)

        fetches, jobs = {}, []
        for j in range(self.m.tiles_per_segment):
            edge = segment.edge_of(j)
            if self.cached[i, edge]:
                jobs.append(self.recon_pool.submit(reconstruct, j, self.cache_dir / self.m.tile_name(i, j), "hr"))
            else:
                fetches[self.fetch_pool.submit(self._fetch, i, j, edge)] = j
        for future in concurrent.futures.as_completed(fetches):
            j = fetches[future]
            jobs.append(self.recon_pool.submit(reconstruct, j, future.result(), "dnn" if self.dnn[i, j] else "bicubic"))
            fetch_done = time.perf_counter()
        for job in jobs:
            job.result()
        encode_start = time.perf_counter()
        body = self._encode(i, self.reconstructor.stitch(tiles))
        end = time.perf_counter()
        timing = SegmentTimings(i, len(fetches), self.m.tiles_per_segment - len(fetches), int(self.dnn[i].sum()),
                                round(1e3 * (fetch_done - start), 2), round(1e3 * sum(spent), 2),
                                round(1e3 * (end - encode_start), 2), round(1e3 * (end - start), 2), len(body))
        self.timings[i] = timing
        log.info("segment %d: %d tiles fetched, %d cached; fetch %.0f ms, reconstruct %.0f ms, encode %.0f ms, "
                 "total %.0f ms", i, timing.fetched_tiles, timing.cached_tiles, timing.fetch_ms,
                 timing.reconstruct_ms, timing.encode_ms, timing.total_ms)
        return body

    def _encode(self, i: int, frames: list[y4m.Frame]) -> bytes:
        output = self.work / f"seg{i:05d}.ts"
        offset = self.m.segments[i].start_frame / float(self.m.fps)
        process = ffmpeg.encode(str(output), codec_args=("-c:v", "libx264", "-preset", "veryfast",
                                                          "-crf", str(self.crf), "-pix_fmt", "yuv420p"),
                                output_args=("-f", "mpegts", "-output_ts_offset", f"{offset:.6f}"))
        try:
            writer = y4m.Writer(process.stdin, self.reconstructor.frame_header)
            for frame in frames:
                writer.write(frame)
        except BrokenPipeError:
            pass
        process.wait()
        body = output.read_bytes()
        output.unlink()
        return body
