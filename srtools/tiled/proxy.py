"""The proxy's segment builder: cached HR tiles + LR tiles fetched in parallel -> one playable segment.

For segment i the builder fetches every uncached tile from the edge holding its set (one HTTP GET
per tile, all in parallel), reconstructs each tile as soon as it arrives (LR tiles upscaled by
F-EDSR or bicubic per the plan's e_ij; cached HR tiles only decoded), stitches the frames and
encodes them with libx264 into an MPEG-TS segment whose timestamps continue the previous one, so
the segments form an HLS stream.

Faults. A fetch fails when its edge refuses, answers an error, sends less than it announced
(``http.client.IncompleteRead``) or stays silent for longer than the fetch timeout (per socket
operation). A failed tile is fetched again from the fallback source, the origin's HR tree over
HTTP (then only decoded, as a cached tile is); the segment fails only when no source delivers,
and then its queued fetches and reconstructions are cancelled.

Built segments are kept in a least-recently-used cache bounded in bytes. After a segment is
requested, the next ``ahead`` segments are built in the background, one at a time, so a player
pays the build time once at start-up where the machine keeps up with playback. What the builder
has done since it started is counted (:class:`BuildCounters`) for sr-proxy's /metrics
(:func:`metrics`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import http.client
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

from ..errors import SrError
from ..prometheus import Exposition
from .manifest import Manifest
from .reconstruct import DEFAULT_CRF, Reconstructor

log = logging.getLogger("srtools.proxy")


class FetchError(SrError):
    """No source delivered a tile."""


@dataclasses.dataclass
class SegmentTimings:
    index: int
    fetched_tiles: int
    cached_tiles: int
    dnn_tiles: int
    fallback_tiles: int  # fetched from the origin after their edge failed
    fetch_ms: float  # from the start until the last tile arrived
    reconstruct_ms: float  # summed over tiles (decode + upscale), as g_i counts it
    encode_ms: float  # stitch + encode
    total_ms: float  # wall time to build the segment
    bytes: int


@dataclasses.dataclass
class BuildCounters:
    """What a :class:`SegmentBuilder` has done since it started; times in seconds, summed."""

    segments: int = 0  # built (a segment evicted and asked for again is built again)
    bytes: int = 0
    failed: int = 0  # segments no source delivered a tile of
    fetched_tiles: int = 0
    cached_tiles: int = 0
    dnn_tiles: int = 0
    fallback_tiles: int = 0
    fetch_seconds: float = 0.0
    reconstruct_seconds: float = 0.0
    encode_seconds: float = 0.0
    build_seconds: float = 0.0


class SegmentBuilder:
    """Builds the HLS segments of a tiled video and keeps the recent ones.

    Args:
        manifest: the tiled video.
        cached: (n, M) bool, the plan's x_im.
        dnn: (n, J) bool, the plan's e_ij.
        edge_urls: base URL of edge m's server, in edge order.
        origin_url: base URL of the origin's HR tiles (``sr-edge TILED/origin``): the source of the
            cached sets and the fallback for tiles an edge fails to deliver; None for neither.
        reconstructor: decoding and upscaling.
        crf: x264 CRF of the served segments (0 = lossless).
        workers: tiles reconstructed at once.
        fetch_timeout: seconds a fetch may wait on a silent source.
        cache_bytes: the most bytes of built segments kept.
        ahead: segments built in the background after the one requested.
    """

    def __init__(self, manifest: Manifest, cached: np.ndarray, dnn: np.ndarray, edge_urls: list[str],
                 origin_url: str | None, reconstructor: Reconstructor, crf: int = DEFAULT_CRF, workers: int = 2,
                 fetch_timeout: float = 1.0, cache_bytes: int = 256 << 20, ahead: int = 2):
        self.m, self.cached, self.dnn = manifest, cached, dnn
        self.edge_urls = [u.rstrip("/") for u in edge_urls]
        self.origin_url = origin_url.rstrip("/") if origin_url else None
        self.reconstructor = reconstructor
        self.crf, self.fetch_timeout = crf, fetch_timeout
        self.cache_bytes, self.ahead = cache_bytes, ahead
        self.work = Path(tempfile.mkdtemp(prefix="sr-proxy-"))
        self.cache_dir = self.work / "cache"
        # Room for the requested segment and one built ahead, each with every tile and its fallback in flight.
        self.fetch_pool = concurrent.futures.ThreadPoolExecutor(4 * manifest.tiles_per_segment,
                                                                thread_name_prefix="fetch")
        self.recon_pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="reconstruct")
        self.ahead_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ahead")
        self.segments: collections.OrderedDict[int, bytes] = collections.OrderedDict()  # least recent first
        self.timings: dict[int, SegmentTimings] = {}
        self.counters = BuildCounters()
        self.evicted = 0
        self._segments_lock = threading.Lock()
        self._scheduled: set[int] = set()
        self._locks = [threading.Lock() for _ in manifest.segments]

    def close(self) -> None:
        for pool in (self.ahead_pool, self.fetch_pool, self.recon_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.work, ignore_errors=True)

    def precache(self) -> int:
        """Fetch the HR tiles of every planned set from the origin into the proxy's cache; bytes.

        Raises:
            FetchError: no origin URL, or the origin did not deliver a tile.
        """
        names = [self.m.tile_name(i, j) for i, segment in enumerate(self.m.segments)
                 for edge in np.flatnonzero(self.cached[i]) for j in segment.sets[edge]]
        if names and self.origin_url is None:
            raise FetchError(f"the plan caches {len(names)} HR tiles and there is no origin to fetch them from")
        total = 0
        for name in names:
            target = self.cache_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            body = self._get(f"{self.origin_url}/{name}", "origin")
            target.write_bytes(body)
            total += len(body)
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
        """The encoded segment i, built now unless kept; the next ones are then built in the background.

        Raises:
            FetchError: no source delivered one of its tiles.
        """
        body = self._ensure(i)
        for ahead in range(i + 1, min(i + 1 + self.ahead, len(self.m.segments))):
            with self._segments_lock:
                if ahead in self.segments or ahead in self._scheduled:
                    continue
                self._scheduled.add(ahead)
            self.ahead_pool.submit(self._build_ahead, ahead)
        return body

    def kept(self) -> tuple[int, int]:
        """(segments, bytes) in the cache of built segments now."""
        with self._segments_lock:
            return len(self.segments), sum(map(len, self.segments.values()))

    def _build_ahead(self, i: int) -> None:
        try:
            self._ensure(i)
        except Exception as exc:  # the player's own request builds it again and reports the failure
            log.warning("segment %d (built ahead): %s", i, exc)
        finally:
            with self._segments_lock:
                self._scheduled.discard(i)

    def _ensure(self, i: int) -> bytes:
        with self._locks[i]:
            with self._segments_lock:
                if i in self.segments:
                    self.segments.move_to_end(i)
                    return self.segments[i]
            try:
                body = self._build(i)
            except FetchError:
                with self._segments_lock:
                    self.counters.failed += 1
                raise
            with self._segments_lock:
                self.segments[i] = body
                while sum(map(len, self.segments.values())) > self.cache_bytes and len(self.segments) > 1:
                    self.segments.popitem(last=False)
                    self.evicted += 1
            return body

    def _get(self, url: str, source: str) -> bytes:
        try:
            with urllib.request.urlopen(url, timeout=self.fetch_timeout) as response:
                return response.read()
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__} {exc}".strip()
            raise FetchError(f"{source}: {url}: {reason}") from None

    def _fetch(self, i: int, j: int, edge: int, given_up: threading.Event) -> tuple[Path, str]:
        """Tile j of segment i from its edge, else the origin's HR tile: (file, reconstruction mode)."""
        name = self.m.tile_name(i, j)
        mode = "dnn" if self.dnn[i, j] else "bicubic"
        try:
            body = self._get(f"{self.edge_urls[edge]}/{name}", f"edge {edge}")
        except FetchError as exc:
            if self.origin_url is None or given_up.is_set():
                raise
            log.warning("%s; fetching the HR tile from the origin", exc)
            body = self._get(f"{self.origin_url}/{name}", f"edge {edge} failed, then the origin")
            mode = "hr"
        path = self.work / "fetched" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return path, mode

    def _build(self, i: int) -> bytes:
        segment = self.m.segments[i]
        start = time.perf_counter()
        fetch_done = start
        spent: list[float] = []  # per-tile decode + upscale seconds (list.append is thread-safe)
        tiles: list = [None] * self.m.tiles_per_segment
        given_up = threading.Event()

        def reconstruct(j: int, path: Path, mode: str) -> None:
            if not given_up.is_set():
                frames, decode_s, upscale_s = self.reconstructor.tile(str(path), mode, segment.frames)
                tiles[j] = frames
                spent.append(decode_s + upscale_s)

        fetches, jobs, fallbacks = {}, [], 0
        for j in range(self.m.tiles_per_segment):
            edge = segment.edge_of(j)
            if self.cached[i, edge]:
                jobs.append(self.recon_pool.submit(reconstruct, j, self.cache_dir / self.m.tile_name(i, j), "hr"))
            else:
                fetches[self.fetch_pool.submit(self._fetch, i, j, edge, given_up)] = j
        try:
            for future in concurrent.futures.as_completed(fetches):
                path, mode = future.result()
                fallbacks += mode == "hr"
                jobs.append(self.recon_pool.submit(reconstruct, fetches[future], path, mode))
                fetch_done = time.perf_counter()
            for job in jobs:
                job.result()
        except BaseException:
            given_up.set()  # fetches under way end at their timeout without a fallback; queued work is dropped
            for future in [*fetches, *jobs]:
                future.cancel()
            raise
        encode_start = time.perf_counter()
        body = self.reconstructor.encode(tiles, self.work / f"seg{i:05d}.ts",
                                         segment.start_frame / float(self.m.fps), self.crf)
        end = time.perf_counter()
        timing = SegmentTimings(i, len(fetches), self.m.tiles_per_segment - len(fetches), int(self.dnn[i].sum()),
                                fallbacks, round(1e3 * (fetch_done - start), 2), round(1e3 * sum(spent), 2),
                                round(1e3 * (end - encode_start), 2), round(1e3 * (end - start), 2), len(body))
        self.timings[i] = timing
        with self._segments_lock:
            c = self.counters
            c.segments += 1
            c.bytes += len(body)
            c.fetched_tiles += timing.fetched_tiles
            c.cached_tiles += timing.cached_tiles
            c.dnn_tiles += timing.dnn_tiles
            c.fallback_tiles += fallbacks
            c.fetch_seconds += timing.fetch_ms / 1e3
            c.reconstruct_seconds += timing.reconstruct_ms / 1e3
            c.encode_seconds += timing.encode_ms / 1e3
            c.build_seconds += timing.total_ms / 1e3
        log.info("segment %d: %d tiles fetched (%d from the origin), %d cached; fetch %.0f ms, reconstruct %.0f ms, "
                 "encode %.0f ms, total %.0f ms", i, timing.fetched_tiles, fallbacks, timing.cached_tiles,
                 timing.fetch_ms, timing.reconstruct_ms, timing.encode_ms, timing.total_ms)
        return body


def metrics(builder: SegmentBuilder, precached_bytes: int) -> str:
    """sr-proxy's /metrics (the Prometheus text format, :mod:`srtools.prometheus`), labelled with the
    stream's name (its source's file name without the extension)."""
    with builder._segments_lock:
        c = dataclasses.replace(builder.counters)
        evicted = builder.evicted
    kept, kept_bytes = builder.kept()
    out = Exposition(stream=Path(builder.m.source).stem)
    out.counter("srtools_proxy_segments_built_total", "Segments built (again when evicted and asked for).",
                c.segments)
    out.counter("srtools_proxy_segment_bytes_total", "Bytes of the segments built.", c.bytes)
    out.counter("srtools_proxy_failed_segments_total", "Segments no source delivered a tile of (502).", c.failed)
    for kind, value in (("fetched", c.fetched_tiles), ("cached", c.cached_tiles), ("dnn", c.dnn_tiles),
                        ("fallback", c.fallback_tiles)):
        out.counter("srtools_proxy_tiles_total", "Tiles of the segments built: fetched from an edge, cached "
                    "(high-res, from the origin at start), upscaled by the network, fetched from the origin after "
                    "their edge failed.", value, kind=kind)
    for phase, value in (("fetch", c.fetch_seconds), ("reconstruct", c.reconstruct_seconds),
                         ("encode", c.encode_seconds), ("build", c.build_seconds)):
        out.counter("srtools_proxy_seconds_total", "Time building segments, by phase (fetch: until the last "
                    "tile arrived; reconstruct: summed over tiles; build: the whole).", round(value, 6), phase=phase)
    out.counter("srtools_proxy_evicted_segments_total", "Built segments dropped from the cache.", evicted)
    out.gauge("srtools_proxy_kept_segments", "Built segments in the cache.", kept)
    out.gauge("srtools_proxy_kept_bytes", "Bytes of the built segments in the cache.", kept_bytes)
    out.gauge("srtools_proxy_precached_bytes", "Bytes of the high-res tiles cached at start.", precached_bytes)
    return out.text()
