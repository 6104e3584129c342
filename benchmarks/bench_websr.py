"""SR in the viewer's browser: GFLOP per frame of F-EDSR, and the frames per second the player's WebGL2
shaders (srtools/web/websr.js) reach in headless Chromium here.

GFLOP per frame is counted from the architecture (2 x multiply-adds of every convolution; the bicubic
skip and the other passes are left out, under 1 %). The fps are those of srWebSR.runY (luma in, the
network, the bicubic skip, the output luma read back: the view's work per frame but for the frame's
copy and the canvas), on a still picture's stream that sr-hls serves with a random model of each
config. Headless Chromium renders WebGL2 through SwiftShader (software) unless --gpu is given (a
machine whose Chromium reaches its GPU through EGL/Vulkan): without a GPU the figures are a floor,
not a viewer's. Each size's frames must finish within the 30 s the tests' DevTools client waits for an
answer: in software, 1280x720 wants --frames 1. Run it on a quiet machine.

    .venv/bin/python benchmarks/bench_websr.py [--configs 16x4] [--sizes 320x180,640x360,1280x720] [--frames 5]
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from srtools.spool import Spool  # noqa: E402

from conftest import Chromium, Server  # noqa: E402
from test_player_browser import wait_for  # noqa: E402
from test_websr import still_stream, tiny_model  # noqa: E402


def gflop_per_frame(channels: int, blocks: int, scale: int, width: int, height: int) -> float:
    """2 x multiply-adds of F-EDSR's convolutions on a width x height luma input."""
    lr = width * height
    macs = lr * channels * 25  # head, 5x5, one input channel
    macs += lr * (2 * blocks + 1) * channels * channels * 9  # the body and its last conv
    if scale == 3:
        macs += lr * 9 * channels * channels * 9
    else:
        for step in range(scale.bit_length() - 1):  # x2 per upsampling conv, at the resolution reached so far
            macs += lr * 4 ** step * 4 * channels * channels * 9
    macs += lr * scale * scale * channels * 9  # the tail, to one channel
    return 2 * macs / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="16x4", help="CHANNELSxBLOCKS,... (default: 16x4, sr-train's)")
    parser.add_argument("--sizes", default="320x180,640x360,1280x720", help="input sizes WxH,...")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--frames", type=int, default=5, help="timed frames per size (after one warm-up)")
    parser.add_argument("--gpu", action="store_true", help="let Chromium use the GPU rather than SwiftShader")
    args = parser.parse_args()
    configs = [tuple(map(int, c.split("x"))) for c in args.configs.split(",")]
    sizes = [tuple(map(int, s.split("x"))) for s in args.sizes.split(",")]
    print(f"{'config':>7} {'input':>10} {'output':>10} {'GFLOP/f':>8} {'fps':>7} {'ms/f':>8} {'GFLOP/s':>8}")
    for channels, blocks in configs:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            spool = Spool(tmp_path / "spool", create=True)
            spool.publish(*tiny_model(0, channels, blocks, scale=args.scale))
            _, lr, hr = still_stream(tmp_path, seconds=5)
            with Server("sr-hls", hr, "--out", tmp_path / "out", "--serve", "127.0.0.1:0", "--segment", 1,
                        "--list-size", 0, "--lr", lr, "--endlist", "--spool", tmp_path / "spool") as server:
                browser = Chromium(webgl=not args.gpu)
                try:
                    page = browser.open(f"{server.url}/?view=websr&websr=always")
                    wait_for(browser, page, "srWebSR.model", 60, "the model on air")
                    renderer = browser.evaluate(page, '(() => { const gl = srWebSR.engine.gl, info = gl.getExtension('
                                                      '"WEBGL_debug_renderer_info"); return gl.getParameter(info ? '
                                                      'info.UNMASKED_RENDERER_WEBGL : gl.RENDERER); })()')
                    for width, height in sizes:
                        y = np.random.default_rng(0).integers(0, 256, (height, width), np.uint8)
                        plane = base64.b64encode(y.tobytes()).decode()
                        ms = browser.evaluate(page, f'(() => {{ srWebSR.runY("{plane}", {width}, {height}); '
                                                    f'const t = performance.now(); for (let i = 0; i < {args.frames}; '
                                                    f'i++) srWebSR.runY("{plane}", {width}, {height}); '
                                                    f'return (performance.now() - t) / {args.frames}; }})()')
                        gflop = gflop_per_frame(channels, blocks, args.scale, width, height)
                        print(f"{channels:>3}x{blocks:<3} {width:>4}x{height:<5} {width * args.scale:>4}x"
                              f"{height * args.scale:<5} {gflop:8.2f} {1000 / ms:7.2f} {ms:8.1f} "
                              f"{gflop * 1000 / ms:8.1f}", flush=True)
                finally:
                    browser.close()
    print(f"\nrenderer: {renderer}; {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
