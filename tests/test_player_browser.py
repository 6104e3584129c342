"""The proxy's player page in headless Chromium: hls.js (vendored by make) plays the proxy's stream."""

import time

import pytest
from tiled_fixtures import LATENCIES

from srtools.httpserve import HLS_JS

from conftest import CHROMIUM, Chromium, Server

pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make deps installs it)"),
              pytest.mark.skipif(not HLS_JS.is_file(), reason="hls.js is not vendored (make vendor/hls.min.js)")]


@pytest.mark.slow
def test_player_page_plays_the_proxy_stream(tiled, tiled_plan, tiled_spool):
    tiles, _ = tiled
    plan_path, _, _ = tiled_plan
    edges = [Server("sr-edge", tiles / f"edges/edge-{e}", "--delay-ms", d) for e, d in enumerate(LATENCIES.split(","))]
    origin = Server("sr-edge", tiles / "origin")
    browser = None
    try:
        with Server("sr-proxy", tiles, "--plan", plan_path, "--edges", ",".join(e.url for e in edges),
                    "--origin", origin.url, "--spool", tiled_spool) as proxy:
            browser = Chromium()
            page = browser.open(f"{proxy.url}/")
            deadline, played = time.monotonic() + 60, 0.0
            while played <= 1.0 and time.monotonic() < deadline:
                time.sleep(0.25)
                # What the page itself shows (its timeupdate handler writes currentTime), once loaded.
                played = float(browser.evaluate(page, '(document.getElementById("time") || {}).textContent || "0"'))
            status = browser.evaluate(page, '(document.getElementById("status") || {}).textContent || "not loaded"')
    finally:
        if browser is not None:
            browser.close()
        for server in [*edges, origin]:
            server.stop()
    assert status.startswith("hls.js "), status  # not native HLS, not an error
    assert played > 1.0, status  # the playhead of the 2 s clip moved past the first segment
