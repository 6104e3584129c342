"""sr-proxy: HLS from cached HR tiles + LR tiles fetched from real edge servers; quality = sr-sim's; faults."""

import http.server
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from srtools import metrics, video
from srtools.tiled.manifest import Manifest

from conftest import Server, assert_head_answers_as_get, check_metrics, expect_error, run_command
from tiled_fixtures import LATENCIES


def get(url):
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def play(proxy: Server, out) -> dict:
    """ffmpeg plays the proxy's HLS playlist into ``out`` (the proxy builds each segment on request);
    returns the proxy's /stats.json."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", proxy.info["playlist"], "-c", "copy", str(out)],
                   check=True, timeout=120)
    return json.loads(get(f"{proxy.url}/stats.json"))


@pytest.mark.slow
def test_served_segments_decode_and_match_simulated_quality(tmp_path, tiled, tiled_plan, tiled_spool, simulation):
    tiles, _ = tiled
    m = Manifest.load(tiles)
    plan_path, _, plan_data = tiled_plan
    edges = [Server("sr-edge", tiles / f"edges/edge-{e}", "--delay-ms", d) for e, d in enumerate(LATENCIES.split(","))]
    edges.append(Server("sr-edge", tiles / "origin"))
    try:
        with Server("sr-proxy", tiles, "--plan", plan_path, "--edges", ",".join(e.url for e in edges[:3]),
                    "--origin", edges[3].url, "--spool", tiled_spool, "--crf", "0") as proxy:
            playlist = get(proxy.info["playlist"]).decode()
            assert playlist.startswith("#EXTM3U") and playlist.count("#EXTINF:") == 2 and "#EXT-X-ENDLIST" in playlist
            first = check_metrics(get(f"{proxy.url}/metrics").decode())
            out = tmp_path / "served.ts"
            stats = play(proxy, out)
            second = check_metrics(get(f"{proxy.url}/metrics").decode())
            code, err = proxy.stop()
    finally:
        for edge in edges:
            edge.stop()
    assert "Traceback" not in err and "segment 1:" in err
    # Uncached tiles came from the edges, cached ones from the proxy's cache.
    for timing, segment in zip(stats["segments"], plan_data["segments"]):
        cached = sum(len(m.segments[timing["index"]].sets[e]) for e in segment["cached"])
        assert (timing["cached_tiles"], timing["fetched_tiles"]) == (cached, 6 - cached)
        if timing["fetched_tiles"]:
            slowest = max(float(LATENCIES.split(",")[e]) for e in range(3) if e not in segment["cached"])
            assert timing["fetch_ms"] >= slowest
    # /metrics counts what was built as it was built.
    assert first['srtools_proxy_segments_built_total{stream="clip"}'] == 0
    assert second['srtools_proxy_segments_built_total{stream="clip"}'] == 2
    assert second['srtools_proxy_segment_bytes_total{stream="clip"}'] == sum(t["bytes"] for t in stats["segments"])
    for kind in ("fetched", "cached"):
        assert second[f'srtools_proxy_tiles_total{{stream="clip",kind="{kind}"}}'] == \
            sum(t[f"{kind}_tiles"] for t in stats["segments"])
    assert second['srtools_proxy_precached_bytes{stream="clip"}'] == stats["precached_bytes"]
    header, served = video.read_all(str(out))
    assert (header.width, header.height, len(served)) == (m.width, m.height, 24)
    _, original = video.read_all(m.source)
    psnr = np.mean([metrics.psnr(s.y, o.y[:m.height, :m.width]) for s, o in zip(served, original)])
    assert psnr == pytest.approx(simulation["plan"]["psnr_db"], abs=0.01)


def test_bad_arguments(tmp_path, tiled, tiled_plan):
    tiles, _ = tiled
    plan_path, _, _ = tiled_plan
    expect_error(run_command("sr-proxy", tiles, "--plan", plan_path, "--edges", "http://127.0.0.1:9"), 2, "3 edges")
    expect_error(run_command("sr-proxy", tiles, "--plan", plan_path, "--edges", "ftp://x,y,z"), 2, "http://")
    expect_error(run_command("sr-proxy", tiles, "--plan", plan_path, "--edges", "http://a,http://b,http://c"), 2,
                 "--origin")
    bad = tmp_path / "bad-plan.json"
    bad.write_text("{")
    expect_error(run_command("sr-proxy", tiles, "--plan", bad, "--edges", "http://a,http://b,http://c"), 3,
                 "unreadable plan")


@pytest.fixture
def dead_edge_proxy(tmp_path, tiled, tiled_plan):
    """sr-proxy with a plan caching nothing, so that every tile must come from the edges; edge 2 points
    to a closed port."""
    tiles, _ = tiled
    empty = tmp_path / "none.json"
    plan_path, _, data = tiled_plan
    data = {**data, "segments": [{**s, "cached": []} for s in data["segments"]]}
    empty.write_text(json.dumps(data))
    with Server("sr-edge", tiles / "edges/edge-0") as e0, Server("sr-edge", tiles / "edges/edge-1") as e1:
        with Server("sr-proxy", tiles, "--plan", empty, "--edges", e0.url, "--edges", e1.url, "--edges",
                    "http://127.0.0.1:9") as proxy:
            yield proxy


def test_unreachable_edge_gives_502(dead_edge_proxy):
    proxy = dead_edge_proxy
    with pytest.raises(urllib.error.HTTPError) as info:
        get(f"{proxy.url}/seg00000.ts")
    assert info.value.code == 502
    scrape = check_metrics(get(f"{proxy.url}/metrics").decode())
    assert scrape['srtools_proxy_failed_segments_total{stream="clip"}'] >= 1
    assert scrape['srtools_proxy_segments_built_total{stream="clip"}'] == 0
    with pytest.raises(urllib.error.HTTPError) as info:
        get(f"{proxy.url}/seg00099.ts")
    assert info.value.code == 404


def test_head_answers_as_get_does(dead_edge_proxy):
    # The player page, the playlist, the stats, a segment whose edge is down (502), one past the end (404).
    statuses = [assert_head_answers_as_get(dead_edge_proxy.url + path)
                for path in ("/", "/playlist.m3u8", "/stats.json", "/seg00000.ts", "/seg00099.ts")]
    assert statuses == [200, 200, 200, 502, 404]


def uncached_plan(path, manifest_dir):
    """A plan caching nothing, every tile bicubic (no model needed): every tile comes from an edge."""
    m = Manifest.load(manifest_dir)
    segments = [{"index": i, "cached": [], "modes": ["bicubic"] * m.tiles_per_segment} for i in range(len(m.segments))]
    path.write_text(json.dumps({"format": "srtools-cacheplan/1", "segments": segments}))
    return path


@pytest.fixture(scope="module")
def six_edges(tiled_workdir, tiled_clip):
    """The test clip in 2x3 tiles over 6 edges (one tile each) and a plan caching nothing."""
    out = tiled_workdir / "six-edges"
    if not out.exists():
        result = run_command("sr-tile", tiled_clip, "--out", out, "--grid", "2x3", "--sets", "6", "--scale", "2")
        assert result.returncode == 0, result.stderr.decode()
    return out, uncached_plan(tiled_workdir / "six-edges-plan.json", out)


@pytest.mark.slow
def test_one_of_six_edges_killed_mid_playback(tmp_path, six_edges):
    tiles, plan = six_edges
    m = Manifest.load(tiles)
    servers = [Server("sr-edge", tiles / f"edges/edge-{e}") for e in range(6)] + [Server("sr-edge", tiles / "origin")]
    try:
        # --ahead 0: segment 1 is built only when the player asks, after the edge is gone;
        # --cache-bytes 1: only the segment just built is kept.
        with Server("sr-proxy", tiles, "--plan", plan, "--edges", ",".join(s.url for s in servers[:6]), "--origin",
                    servers[6].url, "--ahead", "0", "--fetch-timeout", "2", "--cache-bytes", "1") as proxy:
            get(f"{proxy.url}/seg00000.ts")
            servers[3].process.kill()
            servers[3].process.wait()
            out = tmp_path / "played.ts"
            stats = play(proxy, out)
            code, err = proxy.stop()
    finally:
        for server in servers:
            server.stop()
    assert "Traceback" not in err and "fetching the HR tile from the origin" in err
    header, frames = video.read_all(str(out))
    assert (header.width, header.height, len(frames)) == (m.width, m.height, 24)
    timings = {t["index"]: t for t in stats["segments"]}
    assert timings[1]["fallback_tiles"] == 1 and timings[1]["fetched_tiles"] == 6
    assert stats["kept_segments"] == [1] and stats["evicted_segments"] >= 1


class MisbehavingEdge(http.server.BaseHTTPRequestHandler):
    """Answers every GET by announcing 100000 bytes and sending 10 ('truncated'), or not at all ('hung')."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        if self.server.mode == "truncated":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True
        else:
            self.server.release.wait(60)

    def log_message(self, *args):
        pass


@pytest.fixture(params=["truncated", "hung"])
def misbehaving_edge(request):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MisbehavingEdge)
    server.daemon_threads = True
    server.mode, server.release = request.param, threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield request.param, f"http://127.0.0.1:{server.server_address[1]}"
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.mark.parametrize("with_origin", [False, True])
def test_truncated_or_hung_edge_gives_502_or_fallback_within_timeout(tmp_path, tiled, misbehaving_edge, with_origin):
    tiles, _ = tiled
    mode, bad_url = misbehaving_edge
    plan = uncached_plan(tmp_path / "plan.json", tiles)
    timeout = 1.5
    with Server("sr-edge", tiles / "edges/edge-0") as e0, Server("sr-edge", tiles / "edges/edge-1") as e1, \
            Server("sr-edge", tiles / "origin") as origin:
        args = ["--origin", origin.url] if with_origin else []
        with Server("sr-proxy", tiles, "--plan", plan, "--edges", f"{e0.url},{e1.url},{bad_url}",
                    "--fetch-timeout", timeout, "--ahead", "1", *args) as proxy:
            start = time.monotonic()
            if with_origin:
                assert len(get(f"{proxy.url}/seg00000.ts")) > 0
            else:
                with pytest.raises(urllib.error.HTTPError) as info:
                    get(f"{proxy.url}/seg00000.ts")
                assert info.value.code == 502
            elapsed = time.monotonic() - start
            if mode == "hung":
                assert elapsed >= timeout
            assert elapsed < timeout + 10  # the timeout, the fallback and one segment's build on 2 busy cores
            if with_origin:
                # Segment 1 is built ahead of the player, also from the origin.
                for _ in range(100):
                    stats = json.loads(get(f"{proxy.url}/stats.json"))
                    if len(stats["segments"]) == 2:
                        break
                    time.sleep(0.2)
                assert [t["fallback_tiles"] for t in stats["segments"]] == [2, 2]
            code, err = proxy.stop()
    assert code == 130 and "Traceback" not in err
    assert ("IncompleteRead" if mode == "truncated" else "timed out") in err
