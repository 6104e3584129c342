"""Soak: the whole live system for --minutes, with memory, disk, open files and processes sampled.

Push side: sr-push of an endless lavfi source with audio (testsrc2 and a tone) over RTMP, sampling
pairs into a bounded pool; sr-monitor; sr-train --watch --mode continuous (so models keep coming);
sr-upload. Server side: sr-live with sr-receive. Every --every seconds: the summed resident memory
of every process of the run, their open file descriptors, their number, and the disk use of the
two spools and the HLS directory. Nothing should grow after warm-up: the pool is bounded, spools
keep their newest 10 models, HLS keeps its window.

    .venv/bin/python benchmarks/bench_soak.py [--minutes 30] [--every 30]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--every", type=float, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sr-soak-") as tmp:
        work = Path(tmp)
        token = work / "token"
        token.write_text(secrets.token_hex(16) + "\n")
        rtmp = f"rtmp://127.0.0.1:{free_port()}/live/soak"
        rows = []
        with Chain(prefix="sr-soak-chain-") as chain:
            server = chain.start("sr-live", srtools_command(
                "sr-live", rtmp, "--spool", work / "server-spool", "--hls", work / "hls", "--receive", "127.0.0.1:0",
                "--token-file", token, "--segment", "2"), stdout=subprocess.PIPE)
            receive = json.loads(server.process.stdout.readline())["receive"]
            push = work / "push-spool"
            chain.start("sr-train", srtools_command("sr-train", "--watch", "--spool", push, "--mode", "continuous",
                                                    "--max-seconds", "30", "--threads", "1"))
            chain.start("sr-monitor", srtools_command("sr-monitor", "--spool", push, "--threads", "1",
                                                      "--log", work / "monitor.jsonl"))
            chain.start("sr-upload", srtools_command("sr-upload", "--spool", push, "--to", f"{receive}/models/default",
                                                     "--token-file", token, "--uplink", "4000"))
            chain.start("sr-push", srtools_command("sr-push", SOURCE, "--input-format", "lavfi", "--to", rtmp,
                                                   "--spool", push, "--max-pairs", "120"))
            start = time.monotonic()
            print(f"{'minute':>6} {'RSS MB':>8} {'fds':>5} {'procs':>5} {'disk MB':>8}", flush=True)
            while time.monotonic() - start < args.minutes * 60:
                time.sleep(args.every)
                chain.check()
                row = sample([tmp, rtmp, "sr-soak-chain-"], work)
                rows.append(row)
                print(f"{(time.monotonic() - start) / 60:6.1f} {row['rss_mb']:8.0f} {row['fds']:5d} "
                      f"{row['processes']:5d} {row['disk_mb']:8.1f}", flush=True)
    half = len(rows) // 2
    print("\nafter warm-up (second half against the first half's end):")
    for key in ("rss_mb", "fds", "processes", "disk_mb"):
        values = np.array([r[key] for r in rows])
        print(f"  {key:<10} {values[half - 1]:8.1f} -> max {values[half:].max():8.1f}, last {values[-1]:8.1f}")
    print(f"{args.minutes:g} min, sampled every {args.every:g} s; {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
