"""Capacity: how many live streams one server carries, each through its own sr-live chain.

For each count N in --streams: N sr-live chains in listen mode (ingest, sr-serve --realtime,
sr-tcsr, sr-hls, each chain its own port, spool and HLS directory), each spool holding the same
F-EDSR model (the generic one for the scale, or --model) and, with --tcsr-model, a TCSR model;
and N publishers, ffmpeg sending testsrc2 at --size and --fps (H.264 and AAC, paced) for
--seconds. The streams share the machine's cores (or its GPU: sr-serve and sr-tcsr take CUDA when
there is one). Per stream: the frames sr-serve took, how many were late (written more than its
--latency of 2 frame intervals after their slot began), the share of blocks with network output
(selective SR, from sr-serve's statistics: frames upscaled whole count as 100%) and the frames sr-tcsr
refined. A count "carries" when no stream had a late frame.

    .venv/bin/python benchmarks/bench_capacity.py [--streams 1,2,3,4] [--seconds 60] [--size 320x180]
    .venv/bin/python benchmarks/bench_capacity.py --size 960x540 --tcsr-model tcsr.safetensors \\
        --tcsr-budget-ms 40 --threads 0            # a GPU machine: whole frames, TCSR on every frame

A benchmark, not a test: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_soak import free_port  # noqa: E402

from srtools import generic, modelfile  # noqa: E402
from srtools.live.chain import Chain, port_listening, srtools_command  # noqa: E402
from srtools.spool import Spool  # noqa: E402


def publisher_args(url: str, size: str, fps: int, seconds: float) -> list[str]:
    return ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}", "-f", "lavfi",
            "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds), "-c:v", "libx264", "-preset",
            "veryfast", "-tune", "zerolatency", "-g", str(fps), "-c:a", "aac", "-f", "flv", url]


def run(count: int, args: argparse.Namespace, work: Path) -> list[dict]:
    """``count`` streams at once; one row per stream."""
    model, info = modelfile.load(args.model)
    refiner = modelfile.load(args.tcsr_model) if args.tcsr_model else None
    streams = []
    with Chain(prefix="sr-capacity-") as chain:
        for i in range(count):
            root = work / f"n{count}-s{i}"
            spool = Spool(root / "spool", create=True)
            spool.publish(model, info)
            if refiner is not None:
                spool.publish(*refiner)
            url = f"rtmp://127.0.0.1:{free_port()}/live/s{i}"
            log = open(root / "sr-live.log", "wb")
            chain.start(f"sr-live-{i}", srtools_command(
                "sr-live", url, "--spool", spool.root, "--hls", root / "hls", "--stats-dir", root / "stats",
                "--sessions", 1, "--scale", args.scale, "--tcsr-budget-ms", args.tcsr_budget_ms,
                "--threads", args.threads, "--fps", args.fps), stderr=log)
            streams.append((root, url, log))
        deadline = time.monotonic() + 120
        for _, url, _ in streams:  # every listener up before anyone publishes
            while not port_listening(int(url.split(":")[2].split("/")[0])):
                chain.check()
                if time.monotonic() > deadline:
                    raise SystemExit(f"{url}: no listener within 120 s")
                time.sleep(0.1)
        publishers = [subprocess.Popen(publisher_args(url, args.size, args.fps, args.seconds)) for _, url, _ in streams]
        for publisher in publishers:
            publisher.wait()
        chain.wait()
    rows = []
    for root, url, log in streams:
        log.close()
        serve = json.loads((root / "stats" / "sr-serve-1.json").read_text())
        tcsr_stats = root / "stats" / "sr-tcsr-1.json"
        tcsr = json.loads(tcsr_stats.read_text()) if tcsr_stats.exists() else {}
        # Frames upscaled whole have all their blocks by the network; those in blocks, block_share of them.
        in_blocks = serve.get("block_frames", 0)
        share = (serve["frames"] - in_blocks + in_blocks * (serve.get("block_share") or 0)) / max(serve["frames"], 1)
        rows.append({"stream": url.rpartition("/")[2], "frames": serve["frames"], "late": serve["late"],
                     "worst_lag_ms": serve["worst_lag_ms"], "model_frames": serve["engine_frames"],
                     "block_share": round(100 * share),
                     "refined": tcsr.get("engine_frames"), "tcsr_late": tcsr.get("late")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,2,3,4", help="stream counts to try, comma-separated")
    parser.add_argument("--seconds", type=float, default=60, help="each publisher's stream length")
    parser.add_argument("--size", default="320x180", help="the publishers' frame size")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--model", help="F-EDSR model file (default: the generic one for --scale, y, 16x4)")
    parser.add_argument("--tcsr-model", help="TCSR model file for sr-tcsr (default: none, frames pass through)")
    parser.add_argument("--tcsr-budget-ms", type=float, default=15)
    parser.add_argument("--threads", type=int, default=1, help="sr-serve's and sr-tcsr's --threads")
    args = parser.parse_args()
    if args.model is None:
        args.model = generic.find("fedsr", {"channels": 16, "blocks": 4}, args.scale, "y")  # what sr-train starts from
        if args.model is None:
            raise SystemExit(f"no generic x{args.scale} model: give --model")
    tcsr = Path(args.tcsr_model).name if args.tcsr_model else "none"
    print(f"{args.size} -> x{args.scale} at {args.fps} fps, {args.seconds:g} s per stream, "
          f"model {Path(args.model).name}, TCSR {tcsr} ({args.tcsr_budget_ms:g} ms), --threads {args.threads}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    print(f"{'streams':>7} {'stream':>6} {'frames':>6} {'late':>5} {'worst ms':>8} {'blocks %':>8} "
          f"{'refined':>7}", flush=True)
    carried = 0
    with tempfile.TemporaryDirectory(prefix="sr-capacity-") as tmp:
        for count in (int(n) for n in args.streams.split(",")):
            rows = run(count, args, Path(tmp))
            for row in rows:
                print(f"{count:7d} {row['stream']:>6} {row['frames']:6d} {row['late']:5d} {row['worst_lag_ms']:8.0f} "
                      f"{row['block_share']:8d} {row['refined'] if row['refined'] is not None else '-':>7}", flush=True)
            if all(row["late"] == 0 for row in rows):
                carried = max(carried, count)
    print(f"carried with 0 late frames: {carried} stream(s), of the counts tried")


if __name__ == "__main__":
    main()
