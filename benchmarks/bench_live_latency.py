"""End-to-end latency of the live chain, by frame identity, against a plain ffmpeg RTMP -> HLS relay.

The publisher (ffmpeg -re, lavfi testsrc2 at 25 fps, 320x180, H.264 with a keyframe a second, AAC)
draws its frame number in the picture as 12 black/white squares (one bit each). Each time a new
segment is listed in the playlist, its last frame is decoded and its number read back: the latency
of that frame is the moment the segment was listed minus the moment the publisher sent the frame
(start + n / 25). Both chains get the same publisher: sr-live (ingest, sr-serve --realtime, sr-tcsr,
sr-hls; no model, so the figures are the plumbing's), and `ffmpeg -listen 1 -i RTMP -c copy -f hls`.

    .venv/bin/python benchmarks/bench_live_latency.py [--segment 1] [--seconds 30]

A player adds its own buffer on top (hls.js starts 3 target durations behind the live edge): the
"glass to glass" column adds that to the median.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BITS, SQUARE, FPS = 12, 20, 25


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def publisher(url: str, seconds: float) -> list[str]:
    boxes = ",".join(f"drawbox=x={i * SQUARE}:y=0:w={SQUARE}:h={SQUARE}:color=white:t=fill:"
                     f"enable='mod(floor(n/{2 ** i})\\,2)'" for i in range(BITS))
    return ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i",
            f"testsrc2=size=320x180:rate={FPS},drawbox=x=0:y=0:w={BITS * SQUARE}:h={SQUARE}:color=black:t=fill,{boxes}",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
            "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", str(FPS), "-c:a", "aac",
            "-f", "flv", url]


def frame_number(segment: Path) -> int | None:
    """The number drawn in the segment's last frame (the picture may be scaled: squares scale along)."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(segment), "-map", "0:v:0", "-vf", "format=gray",
                          "-f", "rawvideo", "-"], capture_output=True).stdout
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                            "-of", "csv=p=0", str(segment)], capture_output=True, text=True).stdout.split()
    probe = probe[0].split(",") if probe else []
    if not raw or len(probe) != 2:
        return None
    width, height = int(probe[0]), int(probe[1])
    frame = np.frombuffer(raw, np.uint8)[-width * height:].reshape(height, width)
    square = SQUARE * width // 320
    centres = [frame[square // 2, i * square + square // 2] for i in range(BITS)]
    return sum(1 << i for i, value in enumerate(centres) if value > 128)


def measure(hls: Path, start_publisher, seconds: float) -> list[float]:
    playlist = hls / "index.m3u8"
    seen: set[str] = set()
    latencies = []
    started = start_publisher()
    deadline = started + seconds + 30
    while time.monotonic() < deadline:
        if playlist.exists():
            listed_at = time.monotonic()
            names = [line for line in playlist.read_text().splitlines() if line.endswith(".ts")]
            for name in names:
                if name not in seen:
                    seen.add(name)
                    n = frame_number(hls / name)
                    if n is not None:
                        latencies.append(listed_at - (started + n / FPS))
        time.sleep(0.05)
    return latencies


def run_chain(name: str, server_args: list[str], url: str, hls: Path, seconds: float) -> list[float]:
    server = subprocess.Popen(server_args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        time.sleep(4)  # the listener is up
        holder = {}

        def start() -> float:
            holder["p"] = subprocess.Popen(publisher(url, seconds))
            return time.monotonic()

        latencies = measure(hls, start, seconds)
        holder["p"].wait()
        return latencies
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segment", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("ffmpeg relay", "sr-live"):
            work = Path(tmp) / name.replace(" ", "-")
            hls = work / "hls"
            hls.mkdir(parents=True)
            url = f"rtmp://127.0.0.1:{free_port()}/live/bench"
            if name == "sr-live":
                argv = [str(ROOT / "bin" / "sr-live"), url, "--spool", str(work / "spool"), "--hls", str(hls),
                        "--segment", str(args.segment), "--list-size", "100", "--sessions", "1"]
            else:
                argv = ["ffmpeg", "-v", "error", "-listen", "1", "-i", url, "-c", "copy", "-f", "hls",
                        "-hls_time", str(args.segment), "-hls_list_size", "100",
                        "-hls_flags", "independent_segments+temp_file", str(hls / "index.m3u8")]
            results[name] = run_chain(name, argv, url, hls, args.seconds)
            print(f"  {name}: {len(results[name])} segments", file=sys.stderr)
    print(f"| chain | segments | latency median (s) | min | max | glass to glass, median + 3 x {args.segment:g} s |")
    print("|---|---|---|---|---|---|")
    for name, values in results.items():
        v = np.array(values)
        print(f"| {name} | {len(v)} | {np.median(v):.2f} | {v.min():.2f} | {v.max():.2f} | "
              f"{np.median(v) + 3 * args.segment:.2f} |")
    print(f"\nsegment {args.segment:g} s, {args.seconds:g} s of 320x180 -> sr-live x2; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
