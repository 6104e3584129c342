"""sr-proxy: HLS from cached HR tiles + LR tiles fetched from real edge servers; quality = sr-sim's."""

import json
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest
from tiled_fixtures import LATENCIES

from srtools import metrics, video
from srtools.tiled.manifest import Manifest

from conftest import Server, expect_error, run_command


def get(url):
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


@pytest.mark.slow
def test_served_segments_decode_and_match_simulated_quality(tmp_path, tiled, tiled_plan, tiled_spool, simulation):
    tiles, _ = tiled
    m = Manifest.load(tiles)
    plan_path, _, plan_data = tiled_plan
    edges = [Server("sr-edge", tiles / f"edges/edge-{e}", "--delay-ms", d) for e, d in enumerate(LATENCIES.split(","))]
    try:
        with Server("sr-proxy", tiles, "--plan", plan_path, "--edges", ",".join(e.url for e in edges),
                    "--spool", tiled_spool, "--crf", "0") as proxy:
            playlist = get(proxy.info["playlist"]).decode()
            assert playlist.startswith("#EXTM3U") and playlist.count("#EXTINF:") == 2 and "#EXT-X-ENDLIST" in playlist
            out = tmp_path / "served.ts"
            # ffmpeg plays the HLS playlist through the proxy, which builds each segment on request.
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", proxy.info["playlist"], "-c", "copy", str(out)],
                           check=True, timeout=120)
            stats = json.loads(get(f"{proxy.url}/stats.json"))
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
    bad = tmp_path / "bad-plan.json"
    bad.write_text("{")
    expect_error(run_command("sr-proxy", tiles, "--plan", bad, "--edges", "http://a,http://b,http://c"), 3,
                 "unreadable plan")


def test_unreachable_edge_gives_502(tmp_path, tiled, tiled_plan):
    tiles, _ = tiled
    empty = tmp_path / "none.json"
    plan_path, _, data = tiled_plan
    # A plan caching nothing: every tile must come from the edges; edge 2 points to a closed port.
    data = {**data, "segments": [{**s, "cached": []} for s in data["segments"]]}
    empty.write_text(json.dumps(data))
    with Server("sr-edge", tiles / "edges/edge-0") as e0, Server("sr-edge", tiles / "edges/edge-1") as e1:
        with Server("sr-proxy", tiles, "--plan", empty, "--edges", e0.url, "--edges", e1.url, "--edges",
                    "http://127.0.0.1:9") as proxy:
            with pytest.raises(urllib.error.HTTPError) as info:
                get(f"{proxy.url}/seg00000.ts")
            assert info.value.code == 502
            with pytest.raises(urllib.error.HTTPError) as info:
                get(f"{proxy.url}/seg00099.ts")
            assert info.value.code == 404
