"""sr-proxy: serve a tiled video as HLS, reconstructed from cached HR tiles and LR tiles fetched from edges."""

from __future__ import annotations

import dataclasses
import json
import logging
import re

import click

from .. import cli, prometheus
from ..errors import UsageError
from ..httpserve import ReadOnlyHandler, bind, content_type, serve_until_interrupted, server_url, serving
from ..tiled import planning
from ..tiled.manifest import Manifest
from ..tiled.proxy import FetchError, SegmentBuilder, metrics
from ..tiled.reconstruct import DEFAULT_CRF, Reconstructor
from .tiled_options import model_options, open_upscaler, with_options

log = logging.getLogger("srtools.proxy")
_SEGMENT = re.compile(r"/seg(\d{5})\.ts")


class ProxyHandler(ReadOnlyHandler):
    server_version = "sr-proxy"

    def respond(self, head_only: bool) -> None:
        builder: SegmentBuilder = self.server.builder
        path = self.url_path()
        if self.send_player(path, "playlist.m3u8", "sr-proxy", head_only):
            return
        if path in ("/playlist.m3u8", "/index.m3u8"):
            self.send_bytes(builder.playlist().encode(), content_type(path), head_only)
            return
        if path == "/stats.json":
            stats = {"precached_bytes": self.server.precached_bytes, "kept_segments": sorted(builder.segments),
                     "evicted_segments": builder.evicted,
                     "segments": [dataclasses.asdict(t) for _, t in sorted(builder.timings.items())]}
            self.send_bytes(json.dumps(stats).encode(), "application/json", head_only)
            return
        if path == "/metrics":
            text = metrics(builder, self.server.precached_bytes)
            self.send_bytes(text.encode(), prometheus.CONTENT_TYPE, head_only)
            return
        match = _SEGMENT.fullmatch(path)
        if match is None or int(match.group(1)) >= len(builder.m.segments):
            self.send_bytes(b"not found\n", "text/plain", head_only, status=404)
            return
        try:  # a HEAD builds the segment too: its length and status are the GET's
            body = builder.segment(int(match.group(1)))
        except FetchError as exc:
            log.warning("%s", exc)
            self.send_bytes(f"{exc}\n".encode(), "text/plain", head_only, status=502)
            return
        except Exception as exc:  # one bad segment must not take the server down
            log.error("segment %s: %s: %s", match.group(1), type(exc).__name__, exc)
            self.send_bytes(f"{exc}\n".encode(), "text/plain", head_only, status=500)
            return
        self.send_bytes(body, content_type(path), head_only)


def check_url(url: str) -> str:
    if not re.match(r"https?://[^/]+", url):
        raise click.BadParameter(f"{url!r} is not an http:// URL")
    return url


def split_urls(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    return [check_url(u) for value in values for u in value.split(",") if u.strip()]


@cli.command("sr-proxy", epilog="See also: sr-tile(1), sr-cache(1), sr-edge(1), sr-sim(1).")
@click.argument("manifest", metavar="MANIFEST")
@click.option("--plan", "plan_path", required=True, type=click.Path(dir_okay=False), metavar="PLAN",
              help="Cache plan written by sr-cache.")
@click.option("--edges", "edge_urls", required=True, multiple=True, callback=split_urls, metavar="URL...",
              help="Base URL of each edge server in edge order (repeat the option or separate with commas).")
@click.option("--origin", "origin_url", metavar="URL", callback=lambda ctx, param, value: value and check_url(value),
              help="Base URL of the origin's HR tiles (sr-edge TILED/origin, or any HTTP server of that tree): "
                   "the cached sets are fetched from it at start, and a tile whose edge fails from it instead. "
                   "Required when the plan caches sets.")
@click.option("--listen", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT",
              help="Address to serve on; port 0 picks a free port.")
@with_options(model_options)
@click.option("--crf", type=click.IntRange(0, 51), default=DEFAULT_CRF, show_default=True,
              help="x264 CRF of the served segments; 0 is lossless.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Tiles reconstructed at the same time.")
@click.option("--fetch-timeout", type=click.FloatRange(0.01, 600), metavar="SECONDS",
              help="Give up on a source silent for this long and fetch the tile from the origin "
                   "[default: the segment duration].")
@click.option("--cache-bytes", type=click.IntRange(0, None), default=256 << 20, show_default=True, metavar="BYTES",
              help="Built segments kept for later requests, at most this many bytes (least recent dropped first).")
@click.option("--ahead", type=click.IntRange(0, 16), default=2, show_default=True, metavar="N",
              help="After a segment is requested, build the next N in the background.")
def command(manifest: str, plan_path: str, edge_urls: list[str], origin_url: str | None, listen: str,
            spool: str | None, model_path: str | None, device: str, precision: str, crf: int, workers: int,
            fetch_timeout: float | None, cache_bytes: int, ahead: int) -> None:
    """Serve a tiled video to a player as HLS, rebuilding each segment from its tiles.

    Before serving, the proxy fetches the high-res tile sets the plan caches (sr-cache) from the
    --origin server into its cache. For each requested segment it fetches every uncached tile
    from the edge holding its set (all tiles in parallel), upscales each low-res tile with
    F-EDSR or bicubically as the plan's per-tile choice says, decodes cached tiles as they are,
    stitches the frames and encodes an MPEG-TS segment; then it builds the next --ahead segments
    in the background. Built segments are kept up to --cache-bytes.

    Faults: a tile whose edge refuses, fails, sends a truncated body or stays silent for
    --fetch-timeout is fetched from the origin in high resolution instead. Only when no source
    delivers does the segment answer 502 (its queued work is cancelled).

    Endpoints (GET and HEAD): /playlist.m3u8 (the VOD playlist: play it with ffplay or any HLS player),
    / (a player page, with hls.js at /hls.min.js where the checkout vendors it: make),
    /segNNNNN.ts, /stats.json (per-segment fetch, reconstruction and encode times,
    fallbacks, kept and evicted segments; also logged) and /metrics (the same as counters since
    the start, in the Prometheus text format: srtools_proxy_segments_built_total,
    _segment_bytes_total, _failed_segments_total, _tiles_total by kind, _seconds_total by phase,
    _evicted_segments_total, and gauges of the cache; labelled stream=the source's name). On
    start one JSON line {"url": ...} goes to stdout; the server runs until SIGINT or SIGTERM.
    """
    m = Manifest.load(manifest)
    plan = planning.load_plan(plan_path, m)
    if len(edge_urls) != m.edges:
        raise UsageError(f"--edges: {len(edge_urls)} URLs for {m.edges} edges (one per edge, in order)")
    if plan["cached_array"].any() and origin_url is None:
        raise UsageError(f"--origin: the plan caches {int(plan['cached_array'].sum())} sets; give the URL of the "
                         f"origin's HR tiles (sr-edge {m.root}/origin)")
    upscaler = open_upscaler(spool, model_path, m.scale, device, precision, "upscale the plan's DNN tiles")
    if upscaler is None and plan["dnn_array"].any():
        log.warning("no model given: the plan's DNN tiles are upscaled bicubically")
    builder = SegmentBuilder(m, plan["cached_array"], plan["dnn_array"], edge_urls, origin_url,
                             Reconstructor(m, upscaler), crf=crf, workers=workers,
                             fetch_timeout=fetch_timeout or m.segment_seconds, cache_bytes=cache_bytes, ahead=ahead)
    try:
        precached = builder.precache()
        log.info("cached %d HR tile sets (%d bytes) from %s", int(plan["cached_array"].sum()), precached, origin_url)
        server = bind(ProxyHandler, listen, builder=builder, precached_bytes=precached)
        playlist = f"{server_url(server)}/playlist.m3u8"
        with serving(server, playlist=playlist):
            log.info("serving %d segments at %s", len(m.segments), playlist)
            serve_until_interrupted()
    finally:
        builder.close()


main = cli.entry_point(command)
