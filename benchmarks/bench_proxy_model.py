"""The delay model against the real proxy: f_i from sr-cache's plan vs sr-proxy's time to build segment i.

Makes a 640x360 testsrc2 clip of 4 s, tiles it (4x6 grid, 6 edges, x2), plans with a tiny F-EDSR
(sr-cache measures the profile) and edge latencies 10..60 ms, serves each edge with sr-edge
--delay-ms emulating its latency, and asks sr-proxy (--ahead 0, so only the requested segment is
built) for every segment in turn; prints a markdown table of the plan's delay_ms against the
total_ms of the proxy's /stats.json.

Usage (from the repository root):
    PYTHONPATH=. python benchmarks/bench_proxy_model.py [--workers 2] [--capacity 25%]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from srtools import archs, modelfile
from srtools.spool import Spool

ROOT = Path(__file__).resolve().parent.parent
LATENCIES = [10, 20, 30, 40, 50, 60]
HPARAMS = {"scale": 2, "channels": 4, "blocks": 1, "in_channels": 1}


def tool(name: str) -> str:
    return str(ROOT / "bin" / name)


def start(*args: str) -> tuple[subprocess.Popen, str]:
    """A server command and the URL of its first stdout line."""
    process = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return process, json.loads(process.stdout.readline())["url"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--capacity", default="25%")
    parser.add_argument("--player", type=int, metavar="AHEAD",
                        help="instead of the table: play the stream in real time (ffmpeg -re, like a player) with "
                             "sr-proxy --ahead AHEAD, and report start-up plus stall as the player sees it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as work:
        work = Path(work)
        clip = work / "clip.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-t", "4",
                        "-pix_fmt", "yuv420p", "-c:v", "libx264", "-crf", "12", str(clip)], check=True)
        tiles = work / "tiles"
        subprocess.run([tool("sr-tile"), clip, "--out", tiles, "--grid", "4x6", "--sets", "6", "--scale", "2"],
                       check=True, stdout=subprocess.DEVNULL)
        torch.manual_seed(0)
        Spool(work / "spool", create=True).publish(archs.build("fedsr", HPARAMS),
                                                   modelfile.ModelInfo("fedsr", HPARAMS, 2, source="bench"))
        plan = work / "plan.json"
        with plan.open("wb") as out:
            subprocess.run([tool("sr-cache"), tiles, "--capacity", args.capacity, "--spool", work / "spool",
                            "--workers", str(args.workers),
                            "--latencies", ",".join(map(str, LATENCIES))], check=True, stdout=out)
        servers = []
        try:
            edges = []
            for m, latency in enumerate(LATENCIES):
                process, url = start(tool("sr-edge"), tiles / "edges" / f"edge-{m}", "--delay-ms", str(latency))
                servers.append(process)
                edges.append(url)
            process, origin = start(tool("sr-edge"), tiles / "origin")
            servers.append(process)
            process, proxy = start(tool("sr-proxy"), tiles, "--plan", plan, "--edges", ",".join(edges),
                                   "--origin", origin, "--spool", work / "spool", "--ahead", str(args.player or 0),
                                   "--workers", str(args.workers))
            servers.append(process)
            segments = json.loads(plan.read_text())["segments"]
            if args.player is not None:
                started = time.monotonic()
                subprocess.run(["ffmpeg", "-v", "error", "-re", "-i", f"{proxy}/playlist.m3u8", "-f", "null", "-"],
                               check=True, timeout=600)
                wall, media = time.monotonic() - started, 4.0
                print(f"player (ffmpeg -re), --ahead {args.player}, --workers {args.workers}: {wall:.1f} s to play "
                      f"{media:.0f} s of video: start-up + stall {wall - media:.1f} s")
                return
            for i in range(len(segments)):
                urllib.request.urlopen(f"{proxy}/seg{i:05d}.ts", timeout=120).read()
            stats = json.loads(urllib.request.urlopen(f"{proxy}/stats.json").read())["segments"]
        finally:
            for process in servers:
                process.terminate()
                process.wait()
    print(f"| segment | cached sets | model f_i (ms) | proxy total (ms), --workers {args.workers} | proxy / model "
          "| proxy reconstruct, summed (ms) | proxy encode (ms) |")
    print("|---|---|---|---|---|---|---|")
    for segment, measured in zip(segments, stats):
        model, total = segment["delay_ms"], measured["total_ms"]
        print(f"| {segment['index']} | {len(segment['cached'])} | {model:.0f} | {total:.0f} | {total / model:.2f} "
              f"| {measured['reconstruct_ms']:.0f} | {measured['encode_ms']:.0f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
