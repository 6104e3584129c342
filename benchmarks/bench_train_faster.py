"""Train faster: Y-PSNR gain over ffmpeg's bicubic on unseen frames, by starting point and time budget.

Each clip is cut into a training section (its first --train-seconds) and test frames (every
--test-step-th frame after it); LR is the default degradation (area + libx264 CRF 23). Clips: the
shared ones in ../shared/media (skipped when absent) and lavfi sources with texture and motion,
made here. F-EDSR (default 16x4, x2) is trained exactly as sr-train does: from scratch (bicubic,
today's recipe) and from the generic model that ships with the package (srtools.generic, trained on
photographs none of these clips is among); budget 0 is the generic model untouched.

First a throughput table: training steps/s at 1 and 2 torch threads, and the GFLOP/s achieved by
a step (forward + backward ~ 3x the forward's convolutions) against the fp32 matmul peak measured
in the same run.

    .venv/bin/python benchmarks/bench_train_faster.py [--runs scratch:180,scratch:600,generic:0,generic:60,generic:180]
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

from bench_inference import conv_flops, matmul_peak_gflops  # noqa: E402
from bench_quality import ffmpeg_bicubic, test_frames  # noqa: E402

from srtools import archs, degrade, ffmpeg, generic, metrics, modelfile, video  # noqa: E402
from srtools.modelfile import ModelInfo  # noqa: E402
from srtools.training import TrainConfig, Trainer, UpscaleRecipe, load_pairs, train  # noqa: E402
from srtools.upscale import ModelUpscaler  # noqa: E402
from srtools.y4m import Header  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"
LAVFI = {  # texture and motion, none of it in the generic model's photographs
    "lavfi-mandelbrot": "mandelbrot=size=640x360:rate=25",
    "lavfi-testsrc2": "testsrc2=size=640x360:rate=25",
}
HPARAMS = {"scale": 2, "channels": 16, "blocks": 4, "in_channels": 1}


def make_lavfi_clip(source: str, seconds: float, out: str) -> str:
    ffmpeg.run(["-f", "lavfi", "-t", str(seconds), "-i", source, "-c:v", "libx264", "-crf", "12", "-preset", "veryfast",
                "-pix_fmt", "yuv420p", out])
    return out


def throughput(pairs, seconds: float) -> None:
    train_pairs, val_pairs = pairs.split()
    peak = matmul_peak_gflops(torch.float32, 2.0)
    model = archs.build("fedsr", HPARAMS)
    flops = 3 * conv_flops(model, torch.zeros(16, 1, 32, 32))
    print(f"{'threads':>7} {'steps/s':>8} {'GFLOP/s':>8} {'of peak':>8}   (fp32 matmul peak {peak:.0f} GFLOP/s, "
          f"{torch.get_num_threads()} threads)")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        recipe = UpscaleRecipe(train_pairs, val_pairs, 32, torch.device("cpu"), np.random.default_rng(0))
        trainer = Trainer(archs.build("fedsr", HPARAMS), recipe, TrainConfig(max_seconds=1e9, eval_every=1e9))
        trainer.run(steps=20)  # warm-up
        start, first = time.monotonic(), trainer.steps
        trainer.run(seconds=seconds)
        rate = (trainer.steps - first) / (time.monotonic() - start)
        print(f"{threads:>7} {rate:>8.1f} {rate * flops / 1e9:>8.1f} {rate * flops / 1e9 / peak:>8.0%}")
    torch.set_num_threads(2)
    print()


def gain(model, tests, scale: int) -> float:
    upscaler = ModelUpscaler(model, ModelInfo("fedsr", HPARAMS, scale, "y"), precision="fp32")
    sr, bic = [], []
    for hr, lr, bicubic in tests:
        sr.append(metrics.psnr(upscaler.upscale(lr, Header(hr.y.shape[1], hr.y.shape[0])).y, hr.y))
        bic.append(metrics.psnr(bicubic.y, hr.y))
    return float(np.mean(sr) - np.mean(bic))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*",
                        default=[*sorted(str(p) for p in MEDIA.glob("*.mp4")), "lavfi-mandelbrot", "lavfi-testsrc2"])
    parser.add_argument("--runs", default="scratch:180,scratch:600,generic:0,generic:60,generic:180",
                        help="START:SECONDS list (START: scratch or generic)")
    parser.add_argument("--train-seconds", type=float, default=10)
    parser.add_argument("--test-step", type=int, default=10)
    parser.add_argument("--lavfi-seconds", type=float, default=20)
    parser.add_argument("--throughput-seconds", type=float, default=15)
    args = parser.parse_args()
    generic_path = generic.find("fedsr", HPARAMS, 2, "y")
    if generic_path is None:
        sys.exit("no generic model for 16x4 x2: run `make generic-model`")
    runs = [(start, float(budget)) for start, budget in (r.split(":") for r in args.runs.split(","))]
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        header_printed = False
        for clip in args.clips:
            name = Path(clip).name
            if clip in LAVFI:
                clip = make_lavfi_clip(LAVFI[clip], args.lavfi_seconds, f"{tmp}/{clip}.mp4")
            elif not Path(clip).exists():
                print(f"{clip}: absent, skipped", file=sys.stderr)
                continue
            lr_path, bic_path = f"{tmp}/lr.mp4", f"{tmp}/bicubic.y4m"
            degrade.make_lr(clip, lr_path, 2)
            ffmpeg_bicubic(lr_path, 2, bic_path)
            header, _ = video.read_all(lr_path, duration=0.1)
            first = int(round(args.train_seconds * float(header.fps)))
            tests = list(test_frames(clip, lr_path, bic_path, 2, first, args.test_step))
            pairs, _ = load_pairs(clip, lr_path, 2, "y", 300, {"duration": args.train_seconds},
                                  {"duration": args.train_seconds})
            if not header_printed:
                throughput(pairs, args.throughput_seconds)
                print(f"{'clip':<36} {'start':>8} {'budget':>7} {'steps':>6} {'steps/s':>7} {'val gain':>8} "
                      f"{'test gain dB':>12}", flush=True)
                header_printed = True
            train_pairs, val_pairs = pairs.split()
            for start, budget in runs:
                model = modelfile.load(generic_path)[0] if start == "generic" else archs.build("fedsr", HPARAMS)
                steps, val_gain = 0, float("nan")
                if budget > 0:
                    recipe = UpscaleRecipe(train_pairs, val_pairs, 32, torch.device("cpu"), np.random.default_rng(0))
                    fallback = archs.build("fedsr", HPARAMS) if start == "generic" else None
                    result = train(model, recipe, TrainConfig(max_seconds=budget, eval_every=max(5.0, budget / 12)),
                                   fallback=fallback)
                    steps, val_gain = result.steps, result.gain_db
                print(f"{name[:36]:<36} {start:>8} {budget:>6.0f}s {steps:>6} {steps / max(budget, 1e-9):>7.1f} "
                      f"{val_gain:>+8.2f} {gain(model, tests, 2):>+12.2f}", flush=True)
    print(f"\n{len(tests)} test frames per clip (after the first {args.train_seconds:.0f} s, every "
          f"{args.test_step}th); {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
