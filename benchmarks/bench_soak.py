"""Soak: the whole live system for --minutes, --streams streams at once, with memory, disk, open files
and processes sampled, and each stream's late frames and uploads counted.

Per stream, push side: sr-push of an endless lavfi source with audio (testsrc2 and a tone) over
RTMP with the stream's token, sampling pairs into a bounded pool; sr-monitor; sr-train --watch
--mode continuous --max-seconds --upload-every (so a model comes every --upload-every seconds);
sr-upload. Server side: sr-live with sr-receive, its own port, spools and HLS directory. Every
--every seconds: the summed resident memory of every process of the run, their open file
descriptors, their number, and the disk use of the spools and HLS directories. Nothing should grow
after warm-up: pools are bounded, spools keep their newest 10 models, HLS keeps its window. At the
end, per stream: sr-serve's frames and late frames, and the models sr-receive accepted. Each
command's log is in the run's directory (kept with --keep).

    .venv/bin/python benchmarks/bench_soak.py [--minutes 60] [--every 60] [--streams 2] [--upload-every 30]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srtools.live.chain import Chain, srtools_command  # noqa: E402

SOURCE = "testsrc2=size=640x360:rate=25[out0];sine=frequency=440:sample_rate=48000[out1]"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_of(marks: list[str]) -> list[int]:
    """Processes whose command line names one of ``marks`` (the run's directory, its RTMP URL)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                if any(mark.encode() in cmdline for mark in marks):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def sample(marks: list[str], work: Path) -> dict:
    rss = fds = count = 0
    for pid in processes_of(marks):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
            fds += len(os.listdir(f"/proc/{pid}/fd"))
            count += 1
        except (OSError, StopIteration):
            continue
    disk = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
    return {"rss_mb": rss / 1024, "fds": fds, "processes": count, "disk_mb": disk / 2 ** 20}


def start_stream(chain: Chain, work: Path, name: str, upload_every: float) -> dict:
    """One stream's server side (sr-live, sr-receive) and push side, each command logging to a file."""
    root = work / name
    root.mkdir()
    token = root / "token"
    token.write_text(secrets.token_hex(16) + "\n")
    token.chmod(0o600)
    rtmp = f"rtmp://127.0.0.1:{free_port()}/live/{name}"

    def start(stage: str, *args: object, **kwargs) -> None:
        chain.start(f"{stage}-{name}", srtools_command(stage, *args), stderr=open(root / f"{stage}.log", "wb"),
                    **kwargs)

    start("sr-live", rtmp, "--spool", root / "server-spool", "--hls", root / "hls", "--receive", "127.0.0.1:0",
          "--token-file", token, "--segment", "2", "--stats-dir", root / "stats", stdout=subprocess.PIPE)
    receive = json.loads(chain.stages[-1].process.stdout.readline())["receive"]
    push = root / "push-spool"
    start("sr-train", "--watch", "--spool", push, "--mode", "continuous", "--max-seconds", upload_every,
          "--threads", "1")
    start("sr-monitor", "--spool", push, "--threads", "1", "--log", root / "monitor.jsonl")
    start("sr-upload", "--spool", push, "--to", f"{receive}/models/{name}", "--token-file", token, "--uplink", "4000")
    start("sr-push", SOURCE, "--input-format", "lavfi", "--to", rtmp, "--token-file", token, "--spool", push,
          "--max-pairs", "120", stdout=subprocess.DEVNULL)
    return {"name": name, "root": root, "rtmp": rtmp}


def stream_report(stream: dict) -> str:
    """Frames and late frames of sr-serve over the stream's sessions, and the uploads accepted."""
    frames = late = 0
    for stats in sorted((stream["root"] / "stats").glob("sr-serve-*.json")):
        counters = json.loads(stats.read_text())
        frames, late = frames + counters["frames"], late + counters["late"]
    log = (stream["root"] / "sr-live.log").read_text(errors="replace")
    uploads = len(re.findall(r"sr-receive: \S+: \S+ v\d+ is current", log))
    return f"  {stream['name']}: {frames} frames through sr-serve, {late} late; {uploads} models uploaded"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--every", type=float, default=60, help="seconds between samples")
    parser.add_argument("--streams", type=int, default=2, help="publishers, each with its own chain")
    parser.add_argument("--upload-every", type=float, default=30, help="seconds between a stream's models")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs, spools, HLS)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sr-soak-"))
    rows, streams = [], []
    try:
        with Chain(prefix="sr-soak-chain-") as chain:
            streams = [start_stream(chain, work, f"soak{i}", args.upload_every) for i in range(args.streams)]
            start = time.monotonic()
            print(f"{args.streams} streams, a model every {args.upload_every:g} s each; logs in {work}", flush=True)
            print(f"{'minute':>6} {'RSS MB':>8} {'fds':>5} {'procs':>5} {'disk MB':>8}", flush=True)
            while time.monotonic() - start < args.minutes * 60:
                time.sleep(args.every)
                chain.check()
                row = sample([str(work), *(s["rtmp"] for s in streams), "sr-soak-chain-"], work)
                rows.append(row)
                print(f"{(time.monotonic() - start) / 60:6.1f} {row['rss_mb']:8.0f} {row['fds']:5d} "
                      f"{row['processes']:5d} {row['disk_mb']:8.1f}", flush=True)
        half = len(rows) // 2
        print("\nafter warm-up (second half against the first half's end):")
        for key in ("rss_mb", "fds", "processes", "disk_mb"):
            values = np.array([r[key] for r in rows])
            print(f"  {key:<10} {values[max(half - 1, 0)]:8.1f} -> max {values[half:].max():8.1f}, "
                  f"last {values[-1]:8.1f}")
        print("per stream:")
        for stream in streams:
            print(stream_report(stream))
        print(f"{args.minutes:g} min, sampled every {args.every:g} s; {time.strftime('%Y-%m-%d %H:%M')}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
