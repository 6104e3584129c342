"""Does uploading models hurt the live video? Video and sr-upload through one emulated uplink.

The push side runs in a network namespace whose only link to the host is a veth pair; its egress
is shaped by a token bucket filter (tc tbf: --uplink kbit/s, a --queue-ms drop-tail buffer) and the
return path delayed by netem (--rtt-ms, where the kernel has sch_netem), so both flows share one
bottleneck with real kernel TCP.
In the namespace: ffmpeg publishes a testsrc2 640x360 25 fps libx264 CBR stream (--video-kbit) over
RTMP, and, in some runs, bin/sr-upload sends models (--model-channels x 4 blocks F-EDSR, about
490 KB at 32 channels) with --share of the uplink; a new version is published into the push spool
every 2 s, so the uploader is always busy. On the host: ffmpeg -listen 1 receives the stream and
writes one framecrc line per packet, timestamped on arrival, and sr-receive takes the models.

Lateness of a frame = (arrival - its timestamp) - the smallest such difference in the run: how far
behind the best-delivered frame it arrives. Prints a markdown table: video kbit/s received (over the
stream's duration, and the least that arrived in any 2 s of wall-clock time), median, p95 and max
lateness, frames later than 200 ms, packets the shaper dropped, models uploaded and their mean rate.
Needs root (ip netns, tc); run it on an otherwise idle machine.

Usage (from the repository root):
    sudo PYTHONPATH=. python benchmarks/bench_uplink.py [--seconds 30] [--shares none,0.2,1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from srtools import archs, modelfile
from srtools.spool import Spool

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-uplink-token-0123456789abcdef"
SUBNET = "10.213.77"
HOST_IP, PUSH_IP = f"{SUBNET}.1", f"{SUBNET}.2"


def sh(*args, check: bool = True) -> str:
    return subprocess.run([str(a) for a in args], check=check, capture_output=True, text=True).stdout


class Uplink:
    """A namespace for the push side behind a shaped veth pair; removed on exit."""

    def __init__(self, kbit: float, queue_ms: float, rtt_ms: float):
        tag = os.getpid() % 100000
        self.ns, self.host_if, self.push_if = f"srbench-{tag}", f"srbh{tag}", f"srbp{tag}"
        sh("ip", "netns", "add", self.ns)
        try:
            sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.push_if, "netns", self.ns)
            sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", self.host_if)
            sh("ip", "link", "set", self.host_if, "up")
            # The return path's delay, where the kernel has netem (sch_netem); else the veth's ~0.1 ms.
            self.rtt_ms = rtt_ms if rtt_ms and subprocess.run(
                ["tc", "qdisc", "add", "dev", self.host_if, "root", "netem", "delay", f"{rtt_ms}ms"],
                capture_output=True).returncode == 0 else 0.0
            self.run_in("ip", "addr", "add", f"{PUSH_IP}/30", "dev", self.push_if)
            self.run_in("ip", "link", "set", self.push_if, "up")
            self.run_in("ip", "link", "set", "lo", "up")
            # burst: 4 full packets at line rate (what a modem sends back to back).
            self.run_in("tc", "qdisc", "add", "dev", self.push_if, "root", "tbf", "rate", f"{kbit}kbit",
                        "burst", "6kb", "latency", f"{queue_ms}ms")
        except BaseException:
            self.close()
            raise

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]

    def run_in(self, *args) -> str:
        return sh(*self.prefix(), *args)

    def drops(self) -> int:
        match = re.search(r"dropped (\d+)", self.run_in("tc", "-s", "qdisc", "show", "dev", self.push_if))
        return int(match.group(1)) if match else -1

    def close(self) -> None:
        sh("ip", "netns", "del", self.ns, check=False)  # takes the veth pair with it


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(10)


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def publish(spool: Spool, channels: int) -> None:
    hparams = {"scale": 2, "channels": channels, "blocks": 4}
    model = archs.build("fedsr", hparams)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.01)  # weights that do not compress: every version is a full upload
    spool.publish(model, modelfile.ModelInfo("fedsr", hparams, 2))


def receive_video(port: int, arrivals: list[tuple[float, int, int]]) -> subprocess.Popen:
    """ffmpeg listening for the RTMP stream; a thread records (arrival, dts ms, bytes) per packet."""
    # Probe the stream for 0.1 s only (0 means the default, 5 s): probed packets come out late.
    process = subprocess.Popen(["ffmpeg", "-v", "error",
                                "-analyzeduration", "100000", "-listen", "1", "-i", f"rtmp://{HOST_IP}:{port}/live/x",
                                "-c", "copy", "-flush_packets", "1", "-f", "framecrc", "pipe:1"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def read() -> None:
        for line in process.stdout:
            now = time.monotonic()
            if not line.startswith("#"):
                fields = [f.strip() for f in line.split(",")]
                arrivals.append((now, int(fields[1]), int(fields[4])))

    threading.Thread(target=read, daemon=True).start()
    return process


def run(uplink: Uplink, work: Path, share: float | None, args: argparse.Namespace) -> dict:
    env = {**os.environ, "SRTOOLS_PYTHON": sys.executable, "SRTOOLS_UPLOAD_TOKEN": TOKEN}
    rtmp_port, http_port = free_port(HOST_IP), free_port(HOST_IP)
    arrivals: list[tuple[float, int, int]] = []
    results: list[dict] = []
    with contextlib.ExitStack() as stack:
        def stopping(process: subprocess.Popen) -> subprocess.Popen:
            stack.callback(stop, process)
            return process

        receiver = stopping(receive_video(rtmp_port, arrivals))
        drops_before = uplink.drops()
        if share is not None:
            push, served = Spool(work / f"push-{share}", create=True), work / f"server-{share}"
            publish(push, args.model_channels)
            server = stopping(subprocess.Popen(
                [ROOT / "bin" / "sr-receive", "--spool", served, "--listen", f"{HOST_IP}:{http_port}", "-q"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
            server.stdout.readline()
            uploader = stopping(subprocess.Popen(
                [*uplink.prefix(), ROOT / "bin" / "sr-upload", "--spool", push.root, "--to",
                 f"http://{HOST_IP}:{http_port}/models/default", "--uplink", str(args.uplink), "--share", str(share),
                 "--poll-interval", "0.1", "-q"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
            threading.Thread(target=lambda: results.extend(json.loads(x) for x in uploader.stdout), daemon=True).start()
            deadline = time.monotonic() + 60
            while not any((served / "tmp").glob("*")):  # wait for the first upload to be under way
                if time.monotonic() > deadline:
                    raise SystemExit("sr-upload did not start uploading within 60 s")
                time.sleep(0.05)
        time.sleep(0.5)
        publisher = stopping(subprocess.Popen(
            [*uplink.prefix(), "ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
             "-t", str(args.seconds), "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
             "-b:v", f"{args.video_kbit}k", "-minrate", f"{args.video_kbit}k", "-maxrate", f"{args.video_kbit}k",
             "-bufsize", f"{args.video_kbit // 2}k", "-x264-params", "nal-hrd=cbr", "-g", "50", "-pix_fmt", "yuv420p",
             "-f", "flv", f"rtmp://{HOST_IP}:{rtmp_port}/live/x"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        next_publish = time.monotonic() + 2
        while publisher.poll() is None:
            if share is not None and time.monotonic() >= next_publish:
                publish(push, args.model_channels)
                next_publish += 2
            time.sleep(0.05)
        if publisher.returncode != 0:
            raise SystemExit(f"the video publisher failed: {publisher.stderr.read().decode().strip()}")
        receiver.wait(30)
        drops = uplink.drops() - drops_before
    if len(arrivals) < 10:
        raise SystemExit("the video receiver got no stream")
    offsets = [arrival - dts / 1e3 for arrival, dts, _ in arrivals]
    best = min(offsets)
    late = sorted(1e3 * (o - best) for o in offsets)
    media_s = (arrivals[-1][1] - arrivals[0][1]) / 1e3 or 1
    start = arrivals[0][0]
    windows = [0] * (int((arrivals[-1][0] - start) / 2) or 1)  # bytes arriving in each whole 2 s window
    for arrival, _, size in arrivals:
        if int((arrival - start) / 2) < len(windows):
            windows[int((arrival - start) / 2)] += size
    uploaded = [r for r in results if r["status"] == "uploaded"]
    return {"uploads": "none" if share is None else f"share {share:g} ({args.uplink * share:.0f} kbit/s)",
            "video_kbit": sum(size for _, _, size in arrivals) * 8 / media_s / 1e3,
            "worst_2s_kbit": min(windows) * 8 / 2 / 1e3,
            "frames": len(arrivals), "median_ms": statistics.median(late), "p95_ms": late[int(0.95 * (len(late) - 1))],
            "max_ms": late[-1], "over_200": sum(x > 200 for x in late), "drops": drops, "models": len(uploaded),
            "model_kbit": statistics.mean(r["kbit_s"] for r in uploaded) if uploaded else None,
            "model_bytes": 0 if share is None else push.current("fedsr", 2).path.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30, help="video length per run")
    parser.add_argument("--uplink", type=int, default=1200, help="the shaped uplink, kbit/s")
    parser.add_argument("--video-kbit", type=int, default=800)
    parser.add_argument("--shares", default="none,0.2,1", help="runs: 'none' (video alone) or sr-upload's --share")
    parser.add_argument("--queue-ms", type=float, default=300, help="the shaper's buffer, in ms of the uplink")
    parser.add_argument("--rtt-ms", type=float, default=20, help="delay added on the return path")
    parser.add_argument("--model-channels", type=int, default=32)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: ip netns and tc shape the emulated uplink")
    shares = [None if s == "none" else float(s) for s in args.shares.split(",")]
    load = os.getloadavg()[0]
    uplink = Uplink(args.uplink, args.queue_ms, args.rtt_ms)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-uplink-") as work:
            rows = []
            for share in shares:
                rows.append(run(uplink, Path(work), share, args))
                print(rows[-1], file=sys.stderr)
    finally:
        uplink.close()
    rtt = f"+{uplink.rtt_ms:.0f} ms RTT" if uplink.rtt_ms else "no added RTT: netem unavailable"
    print(f"\nuplink {args.uplink} kbit/s (tbf, {args.queue_ms:.0f} ms buffer, {rtt}), "
          f"video {args.video_kbit} kbit/s CBR 640x360 25 fps, {args.seconds} s per run, "
          f"model F-EDSR {args.model_channels}x4 ({max(r['model_bytes'] for r in rows) / 1e3:.0f} KB); "
          f"load average {load:.1f} at the start\n")
    print("| uploads | video kbit/s | worst 2 s | frames | lateness median | p95 | max | frames > 200 ms "
          "| shaper drops | models uploaded | model kbit/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        model = "" if r["model_kbit"] is None else f"{r['model_kbit']:.0f}"
        cells = [r["uploads"], f"{r['video_kbit']:.0f}", f"{r['worst_2s_kbit']:.0f}", r["frames"],
                 *(f"{r[k]:.0f} ms" for k in ("median_ms", "p95_ms", "max_ms")), r["over_200"], r["drops"],
                 r["models"], model]
        print("| " + " | ".join(map(str, cells)) + " |")


if __name__ == "__main__":
    main()
