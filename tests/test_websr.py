"""SR in the viewer's browser: sr-hls publishes the spool's F-EDSR model (/model.json, /models/NAME), and the
player page runs it in WebGL2 (headless Chromium, SwiftShader) on the low-res rendition, as sr-serve does."""

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from srtools import archs, modelfile
from srtools.fsutil import write_json_atomic
from srtools.httpserve import HLS_JS
from srtools.metrics import psnr
from srtools.spool import Spool
from srtools.video import read_all

from conftest import CHROMIUM, Chromium, Server, run_command
from test_player_browser import wait_for

browser_only = [pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make deps installs it)"),
                pytest.mark.skipif(not HLS_JS.is_file(), reason="hls.js is not vendored (make vendor/hls.min.js)")]


def tiny_model(seed: int, channels: int, blocks: int, scale: int = 2, color: str = "y") -> tuple[torch.nn.Module,
                                                                                               modelfile.ModelInfo]:
    """A randomly initialised F-EDSR whose output departs from bicubic by a few grey levels."""
    torch.manual_seed(seed)
    hparams = {"scale": scale, "channels": channels, "blocks": blocks, "in_channels": 3 if color == "yuv" else 1}
    model = archs.build("fedsr", hparams)
    torch.nn.init.normal_(model.tail.weight, std=0.05)
    torch.nn.init.normal_(model.tail.bias, std=0.01)
    return model, modelfile.ModelInfo("fedsr", hparams, scale, color=color)


def still_stream(tmp_path, size: str = "96x54", seconds: int = 40):
    """A still picture (one testsrc2 frame) as the push side would send it (lr.mp4),
    and as the SR stage's frames (hr.y4m, twice the size): every frame the same, so that whichever the
    page shows, it is the one decoded here."""
    still = tmp_path / "still.png"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25", "-frames:v", "1",
                    str(still)], check=True)
    lr, hr = tmp_path / "lr.mp4", tmp_path / "hr.y4m"
    # Every frame a keyframe: all but the first decode to the same picture (P-frames of a still drift).
    subprocess.run(["ffmpeg", "-v", "error", "-loop", "1", "-i", str(still), "-t", str(seconds), "-r", "25",
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "veryfast", "-g", "1", str(lr)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(lr), "-vf", "scale=2*iw:2*ih", "-f", "yuv4mpegpipe",
                    str(hr)], check=True)
    return still, lr, hr


def served(tmp_path, spool, hr, lr) -> Server:
    return Server("sr-hls", hr, "--out", tmp_path / "out", "--serve", "127.0.0.1:0", "--segment", 1, "--list-size",
                  0, "--lr", lr, "--endlist", "--spool", spool)


def sr_serve_y(tmp_path, model_path, y4m) -> np.ndarray:
    """The luma of sr-serve's output for the first frame of ``y4m`` through ``model_path`` (fp32)."""
    out = tmp_path / "sr-serve.y4m"
    result = run_command("sr-serve", "--model", model_path, "--precision", "fp32", y4m)
    assert result.returncode == 0, result.stderr.decode()
    out.write_bytes(result.stdout)
    return read_all(str(out))[1][0].y


def one_frame(tmp_path, source, size: str | None = None, index: int = 0) -> tuple[np.ndarray, object]:
    """Frame ``index`` of ``source`` decoded by ffmpeg (scaled to ``size``), its luma and its Y4M file."""
    y4m = tmp_path / f"frame-{size or 'same'}.y4m"
    scale = f",scale={size.replace('x', ':')}" if size else ""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-vf", f"select=eq(n\\,{index}){scale}",
                    "-frames:v", "1", "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", str(y4m)], check=True)
    return read_all(str(y4m))[1][0].y, y4m


def run_in_page(browser, page, y: np.ndarray) -> tuple[np.ndarray, int]:
    """``y`` through the page's network (srWebSR.runY): the output luma and the model version."""
    h, w = y.shape
    out = browser.evaluate(page, f'srWebSR.runY("{base64.b64encode(y.tobytes()).decode()}", {w}, {h})')
    return np.frombuffer(base64.b64decode(out["y"]), np.uint8).reshape(out["height"], out["width"]), out["version"]


def next_frame(browser, page) -> tuple[np.ndarray | None, np.ndarray, int | None]:
    """The view's next frame: its output luma as the network made it (None without the network), the luma
    of what the canvas shows (BT.709 limited range, as Chromium converts this stream to RGB), the version."""
    browser.evaluate(page, "srWebSR.captureNext()")
    shot = wait_for(browser, page, "srWebSR.captured", 20, "a frame drawn")
    size = (shot["height"], shot["width"])
    rgba = np.frombuffer(base64.b64decode(shot["rgba"]), np.uint8).reshape(*size, 4)
    rgb = rgba[::-1, :, :3].astype(np.float64) / 255  # GL's rows are bottom-up
    shown = np.round(16 + rgb @ np.array([46.559, 156.629, 15.812])).clip(0, 255).astype(np.uint8)
    y = np.frombuffer(base64.b64decode(shot["y"]), np.uint8).reshape(size) if shot["y"] else None
    assert y is None or shot["plane"]  # the luma came from the decoder's Y plane (WebCodecs)
    return y, shown, shot["version"]


def point_current(spool: Spool, version: int, data: bytes) -> None:
    """Put ``data`` into the spool as the current fedsr-x2 model ``version``, whatever it holds (damaged on disk)."""
    name = f"fedsr-x2-{version:06d}.safetensors"
    (spool.models_dir / name).write_bytes(data)
    write_json_atomic(spool.pointer_path("fedsr", 2), {"version": version, "file": f"models/{name}",
                                                       "published": "2025-01-01T00:00:00+00:00"})


def model_on_air(browser, page, version: int) -> None:
    wait_for(browser, page, f"srWebSR.model && srWebSR.model.version === {version}", 30, f"v{version} on air")


def test_sr_hls_publishes_the_spool_model_for_the_stream_scale(tmp_path):
    """/model.json names the current F-EDSR model at the stream's scale (SR over LR size) with its hparams,
    no-cache; /models/NAME serves that very file, immutable, with CORS; nothing else of the spool is served."""
    spool = Spool(tmp_path / "spool", create=True)
    _, lr, hr = still_stream(tmp_path, seconds=3)
    with served(tmp_path, tmp_path / "spool", hr, lr) as server:
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(f"{server.url}/model.json") as response:
                doc, cache = json.load(response), response.headers["Cache-Control"]
            if doc["scale"] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert doc == {"format": "sr-hls-model/1", "arch": "fedsr", "scale": 2, "model": None,
                       "reason": "no fedsr model at x2 in the spool yet"} and cache == "no-cache"
        spool.publish(*tiny_model(1, 4, 1))
        spool.publish(*tiny_model(2, 4, 1, scale=3))  # another scale: not this stream's
        with urllib.request.urlopen(f"{server.url}/model.json") as response:
            model = json.load(response)["model"]
        assert model["version"] == 1 and model["url"] == "models/fedsr-x2-000001.safetensors"
        assert model["hparams"] == {"scale": 2, "channels": 4, "blocks": 1, "in_channels": 1}
        with urllib.request.urlopen(f"{server.url}/{model['url']}") as response:
            body, headers = response.read(), response.headers
        assert body == (spool.models_dir / "fedsr-x2-000001.safetensors").read_bytes()
        assert model["bytes"] == len(body)
        assert headers["Cache-Control"] == "public, max-age=3600, immutable"
        assert headers["Access-Control-Allow-Origin"] == "*"
        for name in ("models/fedsr-x2-000009.safetensors", "models/../current/fedsr-x2.json", "current/fedsr-x2.json"):
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(f"{server.url}/{name}")
            assert error.value.code == 404, name


@pytest.mark.slow
@pytest.mark.parametrize("_", [pytest.param(None, marks=browser_only)])
def test_the_page_runs_the_stream_model_as_sr_serve_does_and_swaps_to_a_newer_one(tmp_path, _):
    """Two models of different shapes (so the weights come from the files), through the page's shaders
    and through sr-serve: Y-PSNR >= 45 dB, on an odd frame size; the second is published mid-playback
    and the view's canvas changes to its output."""
    spool = Spool(tmp_path / "spool", create=True)
    still, lr, hr = still_stream(tmp_path)
    models = [tiny_model(1, 4, 1), tiny_model(2, 8, 2)]
    spool.publish(*models[0])
    odd_y, odd_y4m = one_frame(tmp_path, still, "45x27")
    _, lr_y4m = one_frame(tmp_path, lr, index=10)  # x264 codes the first frame apart: the others are one picture
    references = {}
    for version, path in ((1, "fedsr-x2-000001.safetensors"), (2, "fedsr-x2-000002.safetensors")):
        if version == 2:
            spool.publish(*models[1])
        references[version] = [sr_serve_y(tmp_path, spool.models_dir / path, y4m) for y4m in (odd_y4m, lr_y4m)]
    # Back to v1 alone as the current model (v2's file stays, as a spool keeps older versions).
    write_json_atomic(spool.pointer_path("fedsr", 2), {"version": 1, "file": "models/fedsr-x2-000001.safetensors"})
    browser = None
    with served(tmp_path, tmp_path / "spool", hr, lr) as server:
        try:
            browser = Chromium(webgl=True)
            page = browser.open(f"{server.url}/?view=websr&websr=always")
            model_on_air(browser, page, 1)
            assert browser.played(page, beyond=1.0, timeout=30) > 1.0
            page_odd = {1: run_in_page(browser, page, odd_y)}
            shown = {1: next_frame(browser, page)}
            write_json_atomic(spool.pointer_path("fedsr", 2),
                              {"version": 2, "file": "models/fedsr-x2-000002.safetensors"})
            model_on_air(browser, page, 2)
            page_odd[2] = run_in_page(browser, page, odd_y)
            shown[2] = next_frame(browser, page)
            frames = browser.evaluate(page, "srWebSR.frames")
            # The panel is redrawn every second: the new model's timing shows at the next redraw.
            stat = wait_for(browser, page, 'document.querySelector(\'[data-stat="websr"]\').textContent.includes('
                                           '"ms/frame") && document.querySelector(\'[data-stat="websr"]\').textContent',
                            10, "the view's timing in the stats panel")
            views = browser.evaluate(page, '[...document.querySelectorAll("#views button")].map(b => b.textContent)'
                                           '.join("|")')
        finally:
            if browser is not None:
                browser.close()
    for version in (1, 2):
        out, ran = page_odd[version]
        assert ran == version and out.shape == (54, 90)
        assert psnr(out, references[version][0]) >= 45, (version, psnr(out, references[version][0]))
    # The two models' outputs differ well beyond that: the agreement is the weights', not bicubic's.
    assert psnr(references[1][0], references[2][0]) < 40
    # The view, on the video's frames: the decoder's luma through the model on air, as sr-serve computes it on
    # the same decoded frame, v1's output, then v2's once it is swapped in; and the canvas shows that model's
    # output rather than the other's (seen through RGB, which clips where the colours are saturated).
    for version in (1, 2):
        y, canvas, drawn = shown[version]
        assert drawn == version and y.shape == canvas.shape == references[version][1].shape == (108, 192)
        assert psnr(y, references[version][1]) >= 45, (version, psnr(y, references[version][1]))
        other = references[3 - version][1]
        assert psnr(canvas, references[version][1]) > psnr(canvas, other) + 3
    assert frames > 10  # the view ran the network on the video's frames
    assert stat.startswith("v2 (fedsr 8 ch, 2 blocks, x2); ") and "ms/frame" in stat, stat
    assert views == "super-resolved|low-res, scaled by the browser|SR in this browser|wipe comparison"


@pytest.mark.slow
@pytest.mark.parametrize("_", [pytest.param(None, marks=browser_only)])
def test_a_model_the_page_cannot_run_is_refused_and_the_previous_one_runs_on(tmp_path, _):
    """A damaged file and a colour model (which sr-serve would run) are refused with a message, v1 runs on; a
    page whose network cannot keep up shows the browser's scaling and says so."""
    spool = Spool(tmp_path / "spool", create=True)
    _, lr, hr = still_stream(tmp_path)
    spool.publish(*tiny_model(1, 4, 1))
    good = (spool.models_dir / "fedsr-x2-000001.safetensors").read_bytes()
    colour = tmp_path / "colour.safetensors"
    modelfile.save(colour, *tiny_model(3, 4, 1, color="yuv"))
    stat = 'document.querySelector(\'[data-stat="websr"]\').textContent'
    browser = None
    with served(tmp_path, tmp_path / "spool", hr, lr) as server:
        try:
            browser = Chromium(webgl=True)
            page = browser.open(f"{server.url}/?view=websr&websr=always")
            model_on_air(browser, page, 1)
            point_current(spool, 2, good[:len(good) - 100])  # truncated: the last tensor's data is missing
            damaged = wait_for(browser, page, f'{stat}.includes("v2 refused") && {stat}', 30, "v2 refused")
            _, _, shown = next_frame(browser, page)
            point_current(spool, 3, colour.read_bytes())
            refused = wait_for(browser, page, f'{stat}.includes("v3 refused") && {stat}', 30, "v3 refused")
            version = browser.evaluate(page, "srWebSR.model.version")
            point_current(spool, 4, good)  # a model the page runs, for a page too slow to run it
            browser.call("Page.close", page)  # one page plays at a time: a tab in the background is throttled
            slow = browser.open(f"{server.url}/?view=websr&websr-budget-ms=0.001")
            fallback = wait_for(browser, slow, f'srWebSR.fallback && {stat}', 30, "fallen back")
            drawn = next_frame(browser, slow)[::2]
        finally:
            if browser is not None:
                browser.close()
    assert "model v2 refused: " in damaged and "outside the file" in damaged and "v1 runs on" in damaged, damaged
    assert shown == 1  # still drawing through v1
    assert "model v3 refused: a colour model (color yuv, in_channels 3)" in refused and "v1 runs on" in refused
    assert version == 1
    assert "too slow for this video" in fallback and "showing the browser's scaling" in fallback, fallback
    assert drawn == (None, None)  # the frames drawn without the network
