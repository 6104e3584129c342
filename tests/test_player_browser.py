"""The player pages in headless Chromium: hls.js (vendored by make) plays sr-proxy's stream and sr-hls's live one;
sr-hls's comparison player shows its two renditions in a wipe with a draggable divider, in sync, and the live
statistics of the chain."""

import base64
import json
import os
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest

from srtools import degrade
from srtools.httpserve import HLS_JS
from srtools.y4m import Header

from conftest import CHROMIUM, Chromium, Server, make_clip, make_y4m
from test_sr_live import Live, publish
from test_sr_receive import TOKEN, model_file, put, write_token
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
        master = (live.hls / "index.m3u8").read_text()  # as the page loaded it (rewritten only as figures change)
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
    assert played > 1.5 and audio_bytes > 0, master
    rect = json.loads(box)
    image = cv2.imdecode(np.frombuffer(base64.b64decode(shot), np.uint8), cv2.IMREAD_COLOR)  # BGR
    top, height = int(rect["y"]), int(rect["height"])
    left, width = int(rect["x"]), int(rect["width"])
    # The picture is letterboxed inside the element: sample its middle row, a quarter in from each side.
    row = image[top + height // 2]
    red, blue = row[left + width // 4].astype(int), row[left + 3 * width // 4].astype(int)
    assert red[2] > 180 and red[0] < 80 and red[1] < 80, red
    assert blue[0] > 180 and blue[2] < 80 and blue[1] < 80, blue


def screenshot(browser: Chromium, page: str) -> np.ndarray:
    """The page as it shows now, BGR."""
    shot = browser.call("Page.captureScreenshot", page, format="png")["data"]
    return cv2.imdecode(np.frombuffer(base64.b64decode(shot), np.uint8), cv2.IMREAD_COLOR)


def detail(image: np.ndarray, box: dict, left: float, right: float) -> float:
    """High-frequency energy (mean squared Laplacian of the grey picture) of the stage ``box`` between the
    shares ``left`` and ``right`` of its width, its middle rows."""
    x0, y0 = round(box["x"]), round(box["y"])
    width, height = round(box["width"]), round(box["height"])
    region = image[y0 + height // 10:y0 + 9 * height // 10, x0 + round(left * width):x0 + round(right * width)]
    laplacian = cv2.Laplacian(cv2.cvtColor(region, cv2.COLOR_BGR2GRAY).astype(np.float32), cv2.CV_32F)
    return float(np.mean(laplacian * laplacian))


SYNC_STATE = ('JSON.stringify({paused: [...srPlayer.layers.values()].map((l) => l.element.paused), '
              'drift: srPlayer.drift(), frameS: srPlayer.frameS})')


def wait_for(browser: Chromium, page: str, expression: str, timeout: float, what: str, state: str | None = None):
    """Evaluate ``expression`` until it is truthy; its value. On a timeout the error shows the last value, and
    that of ``state`` where given (an expression that says why)."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = browser.evaluate(page, expression)
        if value:
            return value
        time.sleep(0.25)
    why = f"; {browser.evaluate(page, state)}" if state else ""
    raise AssertionError(f"not {what} within {timeout} s (last {value!r}{why})")


@pytest.mark.slow
def test_the_wipe_shows_the_two_renditions_either_side_of_a_divider_that_a_drag_moves(tmp_path):
    """The super-resolved rendition (here the high-res source itself, fine detail) on the right of the divider,
    the low-res one as the browser scales it on the left, in sync; a drag moves the boundary; hls.js
    switches the master playlist between the two variants."""
    hr = make_clip(tmp_path / "hr.mp4", size="640x360", seconds=30)
    lr = tmp_path / "lr.mp4"  # the push side's stream: area downscale, a keyframe every second
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(hr), "-vf", degrade.downscale_filter(2), "-pix_fmt", "yuv420p",
                    *degrade.live_x264_args(segment=1.0), str(lr)], check=True)
    frames, low = tmp_path / "frames.fifo", tmp_path / "lr.fifo"
    os.mkfifo(frames)
    os.mkfifo(low)
    feeders, browser = [], None
    with Server("sr-hls", frames, "--out", tmp_path / "out", "--serve", "127.0.0.1:0", "--segment", 1,
                "--list-size", 0, "--lr", low, "--lr-format", "nut", "--reopen-wait", 0) as server:
        try:
            feeders = [subprocess.Popen(["ffmpeg", "-v", "error", "-re", "-i", str(hr), "-f", "yuv4mpegpipe", "-y",
                                         str(frames)]),
                       subprocess.Popen(["ffmpeg", "-v", "error", "-re", "-i", str(lr), "-c", "copy", "-f", "nut", "-y",
                                         str(low)])]
            deadline = time.monotonic() + 30
            while "lr.m3u8" not in ((tmp_path / "out/index.m3u8").read_text()
                                    if (tmp_path / "out/index.m3u8").exists() else ""):
                assert time.monotonic() < deadline, "no master playlist with both renditions"
                time.sleep(0.2)
            browser = Chromium()
            page = browser.open(server.info["player"])
            assert browser.played(page, beyond=2.0, timeout=30) > 2.0
            # The fourth view, SR in this browser (tests/test_websr.py), joins where the browser has WebGL2.
            assert browser.evaluate(page, "[...srPlayer.layers.keys()].join()") in ("sr,lr", "sr,lr,websr")
            assert browser.evaluate(page, "srPlayer.view") == "wipe"
            # In sync: the follower within a frame (and a little for the moment between two checks).
            wait_for(browser, page, "Math.abs(srPlayer.drift().lr ?? 1) < 0.05", 20, "in sync", SYNC_STATE)
            labels = browser.evaluate(page, 'document.getElementById("label-left").textContent + "|" + '
                                            'document.getElementById("label-right").textContent')
            box = json.loads(browser.evaluate(page, 'JSON.stringify(document.getElementById("stage")'
                                                    '.getBoundingClientRect())'))
            # Paused (the follower too, at the leader's frame), the shots before and after the drag show one
            # frame: only the divider differs between them.
            browser.evaluate(page, 'document.getElementById("video").pause()')
            wait_for(browser, page, 'srPlayer.layers.get("lr").element.paused && '
                                    'Math.abs(srPlayer.drift().lr ?? 1) < 0.05', 20, "paused in sync", SYNC_STATE)
            before = screenshot(browser, page)
            # Drag the divider from the middle to a fifth of the width.
            y = box["y"] + box["height"] / 2
            for kind, share in (("mousePressed", 0.5), ("mouseMoved", 0.35), ("mouseMoved", 0.2),
                                ("mouseReleased", 0.2)):
                browser.call("Input.dispatchMouseEvent", page, type=kind, x=box["x"] + share * box["width"], y=y,
                             button="left", buttons=0 if kind == "mouseReleased" else 1, clickCount=1)
            divider = browser.evaluate(page, "srPlayer.divider")
            time.sleep(0.5)
            after = screenshot(browser, page)
            browser.evaluate(page, 'document.getElementById("video").play()')
            # A layer another script adds (a canvas, as SR in the browser would be) joins the views and the wipe.
            # (Each snippet in a block: the console's top-level declarations would outlive it.)
            browser.evaluate(page, '{ const c = document.createElement("canvas"); c.width = 64; c.height = 36; '
                                   'const g = c.getContext("2d"); g.fillStyle = "#f00"; g.fillRect(0, 0, 64, 36); '
                                   'srPlayer.addLayer("red", "a canvas", c); '
                                   'const s = document.getElementById("left"); s.value = "red"; '
                                   's.dispatchEvent(new Event("change")); }')
            time.sleep(0.5)
            added = screenshot(browser, page)
            buttons = browser.evaluate(page, '[...document.querySelectorAll("#views button")].map(b => b.textContent)'
                                             '.join("|")')
            # hls.js switches the master playlist's variants (the ABR ladder): to the low-res one and back.
            browser.evaluate(page, '{ const h = srPlayer.layers.get("sr").hls; '
                                   'h.currentLevel = h.levels.findIndex((level) => level.height === 180); }')
            wait_for(browser, page, 'document.getElementById("video").videoWidth === 320', 30, "switched to LR")
            position = browser.evaluate(page, 'document.getElementById("video").currentTime')
            assert browser.played(page, beyond=position + 1.5, timeout=30) > position + 1.5  # plays on, low-res
            browser.evaluate(page, '{ const h = srPlayer.layers.get("sr").hls; '
                                   'h.currentLevel = h.levels.findIndex((level) => level.height === 360); }')
            wait_for(browser, page, 'document.getElementById("video").videoWidth === 640', 30, "switched back")
        finally:
            if browser is not None:
                browser.close()
            for feeder in feeders:
                feeder.kill()
                feeder.wait()
    assert labels == "low-res, scaled by the browser|super-resolved"
    left, right = detail(before, box, 0.05, 0.45), detail(before, box, 0.55, 0.95)
    assert right > 2 * left, (left, right)  # the SR side has measurably more fine detail
    assert divider == pytest.approx(0.2, abs=0.01)
    # Between a fifth and the middle: super-resolved after the drag where it was low-res before; left of
    # the new divider, low-res still.
    band_before, band_after = detail(before, box, 0.25, 0.45), detail(after, box, 0.25, 0.45)
    assert band_after > 2 * band_before, (band_before, band_after)
    assert band_after > 2 * detail(after, box, 0.02, 0.18)
    assert buttons.replace("SR in this browser|", "") == "super-resolved|low-res, scaled by the browser|a canvas|" \
                                                       "wipe comparison"
    left_of_divider = added[round(box["y"] + box["height"] / 2), round(box["x"] + 0.1 * box["width"])].astype(int)
    assert left_of_divider[2] > 200 and left_of_divider[:2].max() < 60, left_of_divider  # the canvas: red (BGR)


@pytest.mark.slow
def test_the_stats_panel_shows_the_model_sr_receive_accepted(tmp_path):
    """Through sr-live: a model uploaded to sr-receive is on air, and the panel says so, with the upload and
    the training request the push side reported with it."""
    live = Live(tmp_path, "--serve", "127.0.0.1:0", "--receive", "127.0.0.1:0", "--token-file",
                write_token(tmp_path / "token"), "--segment", "1")
    publisher = publish(f"{live.url}?token={TOKEN}", seconds=40, wait=False)
    browser = None
    try:
        deadline = time.monotonic() + 30
        while not (live.hls / "index.m3u8").exists():
            assert time.monotonic() < deadline, "no master playlist"
            time.sleep(0.2)
        browser = Chromium()
        page = browser.open(f"{live.info['hls']}/")
        request = {"t": 2.5, "pair": 10, "psnr": 28.25, "created": "2025-01-01T00:00:00+0000"}
        status, answer = put(f"{live.info['receive']}/models/test/fedsr-x2", model_file(tmp_path / "m.safetensors"),
                             version=1, headers={"X-Srtools-Request": json.dumps(request)})
        assert status == 201, answer
        stat = 'document.querySelector(\'[data-stat="{}"]\').textContent'.format
        model = wait_for(browser, page, f'{stat("model")}.startsWith("v1") && {stat("model")}', 40, "v1 on air")
        upload, request_text = browser.evaluate(page, stat("upload")), browser.evaluate(page, stat("request"))
        fps, layers = browser.evaluate(page, stat("fps")), browser.evaluate(page, "[...srPlayer.layers.keys()].join()")
    finally:
        if browser is not None:
            browser.close()
        publisher.kill()
        publisher.wait()
        live.stop()
    assert "arrived" in model, model
    assert upload.startswith("fedsr v1: ") and "ago" in upload, upload
    assert request_text.startswith("at 2.5 s of stream, Y-PSNR 28.25 dB"), request_text
    assert "-" not in fps.split(" / ")[1], fps  # sr-hls's output frame rate is known
    assert layers in ("sr,lr", "sr,lr,websr")
