"""What the low-res rendition costs the server, against the super-resolved one: CPU seconds and bytes.

sr-hls's two video renditions, run as sr-hls runs them (the command lines of srtools.hls): the SR
rendition's ffmpeg encodes the super-resolved frames (libx264, --preset veryfast, tune zerolatency,
CRF 23, a keyframe every --segment), the LR rendition's ffmpeg copies the stream the server
received into segments. The stream is testsrc2 at the LR size, pushed as sr-push pushes it
(srtools.degrade.live_x264_args, a keyframe every --segment), for --seconds; the SR frames are its
bicubic x2 upscale (the SR rendition's cost depends on its size and detail, not on how the frames
were made). Each ffmpeg's CPU time (user + system) is read from the kernel when it exits (os.wait4),
so the load of other processes changes it little; the bytes are the segments' sizes. Prints a
markdown table per LR size: CPU seconds per second of stream and bytes per second of each
rendition, and the LR rendition's share of the SR one's.

Usage (from the repository root):
    PYTHONPATH=. python benchmarks/bench_ladder.py [--seconds 30] [--sizes 320x180,640x360]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

from srtools import degrade, ffmpeg
from srtools.hls import LR, SR, Encoding, OutputDir, ffmpeg_args, lr_args


def cpu_seconds(process: subprocess.Popen) -> float:
    """Wait for ``process``; its CPU time (user + system), as the kernel counted it."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"ffmpeg failed ({process.returncode}): {' '.join(map(str, process.args))}")
    return usage.ru_utime + usage.ru_stime


def measure(size: str, seconds: float, segment: float, work: Path) -> dict:
    width, height = map(int, size.split("x"))
    lr = work / f"lr-{size}.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25", "-t",
                    str(seconds), "-pix_fmt", "yuv420p", *degrade.live_x264_args(segment=segment), str(lr)],
                   check=True)
    out = OutputDir(work / f"hls-{size}", "fresh")
    enc = Encoding(segment=segment, list_size=0, lr=str(lr))
    # The SR rendition: its encoder fed the bicubic x2 frames by a decoder whose CPU time is not counted.
    decoder = subprocess.Popen(["ffmpeg", "-v", "error", "-i", str(lr), "-vf",
                                f"scale={2 * width}:{2 * height}:flags=bicubic", "-pix_fmt", "yuv420p",
                                "-f", "yuv4mpegpipe", "-"], stdout=subprocess.PIPE)
    encoder = subprocess.Popen([ffmpeg.ffmpeg_binary(), *ffmpeg_args(enc, out, Fraction(25), {SR: (False, 0)})],
                               stdin=decoder.stdout)
    decoder.stdout.close()
    sr_cpu = cpu_seconds(encoder)
    decoder.wait()
    copier = subprocess.Popen([ffmpeg.ffmpeg_binary(), *lr_args(enc, out, False, 0)])
    lr_cpu = cpu_seconds(copier)
    sizes = {rendition: sum(p.stat().st_size for p in out.path.glob(f"*-{rendition}-*.ts")) for rendition in (SR, LR)}
    out.close()
    return {"size": size, "sr_cpu": sr_cpu / seconds, "lr_cpu": lr_cpu / seconds,
            "sr_bytes": sizes[SR] / seconds, "lr_bytes": sizes[LR] / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--segment", type=float, default=2.0)
    parser.add_argument("--sizes", default="320x180,640x360", help="LR sizes (the SR rendition is twice as large)")
    args = parser.parse_args()
    print("| LR (SR) | SR rendition CPU s/s | LR rendition CPU s/s | LR/SR CPU | SR kB/s | LR kB/s | LR/SR bytes |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-ladder-") as tmp:
        for size in args.sizes.split(","):
            r = measure(size, args.seconds, args.segment, Path(tmp))
            w, h = map(int, size.split("x"))
            print(f"| {size} ({2 * w}x{2 * h}) | {r['sr_cpu']:.3f} | {r['lr_cpu']:.4f} | "
                  f"{100 * r['lr_cpu'] / r['sr_cpu']:.1f}% | {r['sr_bytes'] / 1e3:.0f} | {r['lr_bytes'] / 1e3:.0f} | "
                  f"{100 * r['lr_bytes'] / r['sr_bytes']:.0f}% |")


if __name__ == "__main__":
    main()
