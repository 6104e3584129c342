"""conf/nginx-edge.conf: a real nginx, unprivileged on a free high port, serves an edge directory
byte for byte with CORS and cache headers, and sr-proxy builds segments from it."""

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from srtools.tiled.manifest import Manifest

from conftest import NGINX, Server, free_port, running_nginx
from tiled_fixtures import LATENCIES

TEMPLATE = Path(__file__).resolve().parent.parent / "conf" / "nginx-edge.conf"
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (make deps installs it)")


@pytest.fixture
def nginx_edge(tmp_path, tiled, tiled_plan):
    """nginx serving an edge that segment 0 of the plan fetches from: (base URL, edge, its directory, prefix)."""
    tiles, _ = tiled
    _, _, plan = tiled_plan
    edge = next(e for e in range(3) if e not in plan["segments"][0]["cached"])
    root = tiles / "edges" / f"edge-{edge}"
    prefix = tmp_path / "nginx"
    (prefix / "state").mkdir(parents=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(TEMPLATE.read_text().replace("@EDGE_ROOT@", str(root))
                    .replace("@EDGE_LISTEN@", f"127.0.0.1:{port}").replace("@EDGE_STATE@", str(prefix / "state")))
    # As root, workers would run as nobody and could not read pytest's private temporary directories.
    with running_nginx(conf, prefix, port):
        yield f"http://127.0.0.1:{port}", edge, root, prefix


def request(url, method="GET"):
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30) as response:
        return response.status, response.headers, response.read()


def test_nginx_serves_tiles_with_cors_and_cache_headers(tiled, nginx_edge):
    url, edge, root, _ = nginx_edge
    m = Manifest.load(tiled[0])
    name = m.tile_name(0, m.segments[0].sets[edge][0])
    status, headers, body = request(f"{url}/{name}")
    assert status == 200 and body == (root / name).read_bytes()
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Content-Type"] == "video/mp4"
    assert "max-age=31536000" in headers["Cache-Control"]
    status, headers, _ = request(f"{url}/{name}", "OPTIONS")  # a player's CORS preflight
    assert status == 204 and "GET" in headers["Access-Control-Allow-Methods"]
    with pytest.raises(urllib.error.HTTPError) as missing:
        request(f"{url}/seg99999/t00.mp4")
    assert missing.value.code == 404 and "Cache-Control" not in missing.value.headers
    with pytest.raises(urllib.error.HTTPError) as listing:
        request(f"{url}/")
    assert listing.value.code in (403, 404)  # no directory listing


@pytest.mark.slow
def test_proxy_builds_segments_from_an_nginx_edge(tiled, tiled_plan, tiled_spool, nginx_edge):
    url, edge, _, prefix = nginx_edge
    tiles, _ = tiled
    plan_path, _, _ = tiled_plan
    m = Manifest.load(tiles)
    servers = [Server("sr-edge", tiles / "edges" / f"edge-{e}", "--delay-ms", d)
               for e, d in enumerate(LATENCIES.split(",")) if e != edge]
    origin = Server("sr-edge", tiles / "origin")
    edges = [s.url for s in servers]
    edges.insert(edge, url)
    try:
        with Server("sr-proxy", tiles, "--plan", plan_path, "--edges", ",".join(edges), "--origin", origin.url,
                    "--spool", tiled_spool, "--ahead", "0") as proxy:
            segment = request(f"{proxy.url}/seg00000.ts")[2]
            stats = json.loads(request(f"{proxy.url}/stats.json")[2])
    finally:
        for server in [*servers, origin]:
            server.stop()
    assert segment[:1] == b"\x47" and len(segment) % 188 == 0  # MPEG-TS packets
    assert stats["segments"][0]["fallback_tiles"] == 0  # nothing fell back to the origin
    log = (prefix / "state" / "access.log").read_text()
    for j in m.segments[0].sets[edge]:
        assert f"GET /{m.tile_name(0, j)} " in log  # every tile of the set came from nginx
