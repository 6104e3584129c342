"""TCSR quality: Y-PSNR of F-EDSR output vs TCSR(F-EDSR output) on frames not used for training.

For each clip, the LR stream is the default degradation (srtools.degrade). F-EDSR is trained as
sr-train does on the first --train-seconds, then TCSR on F-EDSR's output of the same consecutive
frames (as sr-train --arch tcsr does); both are tested on --test-frames consecutive frames after
the training section, every frame refined (sr-tcsr --every 1). Clips: the ones in ../shared/media
(skipped when absent) and lavfi sources with motion.

    .venv/bin/python benchmarks/bench_tcsr_quality.py [--fedsr-seconds 180] [--tcsr-seconds 180]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srtools import archs, degrade, ffmpeg, metrics  # noqa: E402
from srtools.training import RefineRecipe, TrainConfig, UpscaleRecipe, load_pairs, train, upscale_planes  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"
LAVFI = {"lavfi-testsrc2": "testsrc2=size=640x360:rate=25", "lavfi-mandelbrot": "mandelbrot=size=640x360:rate=25"}


def clips(tmp: str) -> dict[str, str]:
    found = {p.name: str(p) for p in sorted(MEDIA.glob("*.mp4"))}
    for name, source in LAVFI.items():
        path = f"{tmp}/{name}.mp4"
        ffmpeg.run(["-f", "lavfi", "-i", source, "-t", "30", "-c:v", "libx264", "-crf", "10", "-pix_fmt", "yuv420p",
                    path])
        found[name] = path
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fedsr-seconds", type=float, default=180)
    parser.add_argument("--tcsr-seconds", type=float, default=180)
    parser.add_argument("--train-seconds", type=float, default=10, help="section of each clip to train on")
    parser.add_argument("--train-frames", type=int, default=150, help="consecutive frames for TCSR")
    parser.add_argument("--test-frames", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--k", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(2)
    device = torch.device("cpu")
    print(f"{'clip':<36} {'F-EDSR steps':>12} {'TCSR steps':>10} {'val gain':>8} {'F-EDSR dB':>9} {'TCSR dB':>8} "
          f"{'gain dB':>8} {'ms/frame':>8}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, clip in clips(tmp).items():
            lr_path = f"{tmp}/lr.mp4"
            degrade.make_lr(clip, lr_path, 2)
            section = {"duration": args.train_seconds}
            pairs, fps = load_pairs(clip, lr_path, 2, "y", 300, section, section)
            train_pairs, val_pairs = pairs.split()
            fedsr = archs.build("fedsr", {"scale": 2, "channels": 16, "blocks": 4, "in_channels": 1})
            rng = np.random.default_rng(0)
            fedsr_result = train(fedsr, UpscaleRecipe(train_pairs, val_pairs, 32, device, rng),
                                 TrainConfig(max_seconds=args.fedsr_seconds))
            sequence, _ = load_pairs(clip, lr_path, 2, "y", args.train_frames, section, section, consecutive=True)
            tcsr = archs.build("tcsr", {"k": args.k})
            recipe = RefineRecipe(upscale_planes(fedsr, sequence.lr, 2, device), sequence.hr, args.k, 64, device, rng)
            tcsr_result = train(tcsr, recipe, TrainConfig(max_seconds=args.tcsr_seconds,
                                                          learning_rate=args.learning_rate))
            test = {"start": args.train_seconds, "duration": (args.test_frames + 2 * args.k) / fps}
            frames, _ = load_pairs(clip, lr_path, 2, "y", args.test_frames + 2 * args.k, test, test, consecutive=True)
            upscaled = upscale_planes(fedsr, frames.lr, 2, device)
            fedsr_db, tcsr_db, seconds = [], [], []
            with torch.inference_mode():
                for t in range(args.k, len(upscaled) - args.k):
                    window = torch.from_numpy(upscaled[t - args.k:t + args.k + 1]).float().div(255)[None]
                    start = time.perf_counter()
                    out = tcsr(window)[0, 0].mul(255).round().clamp(0, 255).to(torch.uint8).numpy()
                    seconds.append(time.perf_counter() - start)
                    fedsr_db.append(metrics.psnr(upscaled[t, 0], frames.hr[t, 0]))
                    tcsr_db.append(metrics.psnr(out, frames.hr[t, 0]))
            print(f"{name[:36]:<36} {fedsr_result.steps:>12} {tcsr_result.steps:>10} {tcsr_result.gain_db:>+8.3f} "
                  f"{np.mean(fedsr_db):>9.3f} {np.mean(tcsr_db):>8.3f} {np.mean(tcsr_db) - np.mean(fedsr_db):>+8.3f} "
                  f"{1e3 * np.median(seconds):>8.0f}", flush=True)
    print(f"\nF-EDSR {args.fedsr_seconds:.0f} s, TCSR k={args.k} {args.tcsr_seconds:.0f} s at lr "
          f"{args.learning_rate:g} on the first {args.train_seconds:.0f} s; {args.test_frames} test frames after it; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
