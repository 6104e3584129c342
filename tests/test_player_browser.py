"""The player pages in headless Chromium: hls.js (vendored by make) plays sr-proxy's stream and sr-hls's live one."""

import base64
import json
import os
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest

from srtools.httpserve import HLS_JS
from srtools.y4m import Header

from conftest import CHROMIUM, Chromium, Server, make_y4m
from test_sr_live import Live
from tiled_fixtures import LATENCIES

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
            played = browser.played(page, beyond=1.0, timeout=60)
            status = browser.evaluate(page, '(document.getElementById("status") || {}).textContent || "not loaded"')
    finally:
        if browser is not None:
            browser.close()
        for server in [*edges, origin]:
            server.stop()
    assert status.startswith("hls.js "), status  # not native HLS, not an error
    assert played > 1.0, status  # the playhead of the 2 s clip moved past the first segment


def _feed_in_real_time(fifo, y4m_path, fps):
    """Write a Y4M file into ``fifo`` at ``fps`` frames per second, as a live SR stage would."""
    data = y4m_path.read_bytes()
    header = data.index(b"\n") + 1
    frame_bytes = len(b"FRAME\n") + Header.parse(data[:header]).frame_bytes
    with open(fifo, "wb") as writer:
        writer.write(data[:header])
        start = time.monotonic()
        for n, offset in enumerate(range(header, len(data), frame_bytes)):
            time.sleep(max(0.0, start + n / fps - time.monotonic()))
            writer.write(data[offset:offset + frame_bytes])
            writer.flush()


@pytest.mark.slow
def test_player_page_plays_sr_hls_live_with_audio(tmp_path):
    clip, audio, fifo = tmp_path / "clip.y4m", tmp_path / "audio.aac", tmp_path / "frames.fifo"
    make_y4m(clip, seconds=10)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "10",
                    "-c:a", "aac", str(audio)], check=True)
    os.mkfifo(fifo)
    feeder = threading.Thread(target=_feed_in_real_time, args=(fifo, clip, 25), daemon=True)
    browser = None
    with Server("sr-hls", fifo, "--out", tmp_path / "out", "--serve", "127.0.0.1:0", "--segment", 1,
                "--audio", audio, "--reopen-wait", 0) as server:
        feeder.start()
        try:
            deadline = time.monotonic() + 30
            while not (tmp_path / "out/index.m3u8").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            browser = Chromium()
            page = browser.open(server.info["player"])
            played = browser.played(page, beyond=1.5, timeout=30)
            status = browser.evaluate(page, '(document.getElementById("status") || {}).textContent || "not loaded"')
            audio_bytes = browser.evaluate(page, '(document.getElementById("video") || {}).webkitAudioDecodedByteCount')
        finally:
            if browser is not None:
                browser.close()
            feeder.join(30)
    assert status.startswith("hls.js "), status
    assert played > 1.5, status  # the live playhead moves
    assert audio_bytes > 0  # and the stream's audio track is decoded


@pytest.mark.slow
def test_the_live_chain_plays_in_the_browser_with_the_source_picture(tmp_path):
    """A broadcaster's stream through sr-live (RTMP in, SR, HLS out) plays in hls.js, with audio, and a
    screenshot of the video shows the source's pattern: red left half, blue right half."""
    live = Live(tmp_path, "--serve", "127.0.0.1:0", "--segment", "1")
    publisher = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i",
         "color=red:size=320x180:rate=25,drawbox=x=160:y=0:w=160:h=180:color=blue:t=fill", "-f", "lavfi", "-i",
         "sine=frequency=440:sample_rate=48000", "-t", "20", "-c:v", "libx264", "-preset", "veryfast", "-tune",
         "zerolatency", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", live.url])
    browser = None
    try:
        deadline = time.monotonic() + 30
        while not (live.hls / "index.m3u8").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        browser = Chromium()
        page = browser.open(f"{live.info['hls']}/")
        played = browser.played(page, beyond=1.5, timeout=30)
        audio_bytes = browser.evaluate(page, 'document.getElementById("video").webkitAudioDecodedByteCount')
        box = browser.evaluate(page, 'JSON.stringify(document.getElementById("video").getBoundingClientRect())')
        shot = browser.call("Page.captureScreenshot", page, format="png")["data"]
    finally:
        if browser is not None:
            browser.close()
        publisher.kill()
        publisher.wait()
        live.process.terminate()
        live.finish()
    assert played > 1.5 and audio_bytes > 0
    rect = json.loads(box)
    image = cv2.imdecode(np.frombuffer(base64.b64decode(shot), np.uint8), cv2.IMREAD_COLOR)  # BGR
    top, height = int(rect["y"]), int(rect["height"])
    left, width = int(rect["x"]), int(rect["width"])
    # The picture is letterboxed inside the element: sample its middle row, a quarter in from each side.
    row = image[top + height // 2]
    red, blue = row[left + width // 4].astype(int), row[left + 3 * width // 4].astype(int)
    assert red[2] > 180 and red[0] < 80 and red[1] < 80, red
    assert blue[0] > 180 and blue[2] < 80 and blue[1] < 80, blue
