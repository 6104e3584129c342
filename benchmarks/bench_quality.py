"""Quality: Y-PSNR gain over ffmpeg's bicubic after training on the first seconds of a clip.

For each clip in ../shared/media (skipped when absent) the LR stream is the default degradation
(area downscale + libx264 CRF 23, srtools.degrade), F-EDSR is trained exactly as sr-train does on
the first --train-seconds for each (config, time budget), and tested on every --test-step-th frame
of the rest of the clip against ffmpeg's own `bicubic` scaler applied to the same LR frames.

    .venv/bin/python benchmarks/bench_quality.py [--configs 16x4,12x4] [--budgets 60,180]
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

from srtools import archs, degrade, ffmpeg, metrics, video  # noqa: E402
from srtools.modelfile import ModelInfo  # noqa: E402
from srtools.training import TrainConfig, UpscaleRecipe, load_pairs, train  # noqa: E402
from srtools.upscale import ModelUpscaler  # noqa: E402
from srtools.y4m import Header  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"


def ffmpeg_bicubic(lr_path: str, scale: int, out: str) -> None:
    ffmpeg.run(["-i", lr_path, "-vf", f"scale=iw*{scale}:ih*{scale}:flags=bicubic", "-fps_mode", "passthrough",
                "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", out])


def test_frames(hr_clip: str, lr_path: str, bicubic_path: str, scale: int, first: int, step: int):
    """Yield (hr, lr, ffmpeg-bicubic) frames from frame ``first`` on, every ``step``-th."""
    with video.open_source(hr_clip, vf=degrade.crop_filter(scale)) as hr, video.open_source(lr_path) as lr, \
            video.open_source(bicubic_path) as bic:
        for index, frames in enumerate(zip(hr, lr, bic)):
            if index >= first and (index - first) % step == 0:
                yield frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*", default=sorted(str(p) for p in MEDIA.glob("*.mp4")))
    parser.add_argument("--configs", default="8x2,12x4,16x4,24x4", help="CHANNELSxBLOCKS list")
    parser.add_argument("--budgets", default="30,90", help="training seconds list")
    parser.add_argument("--colors", default="y", help="colour modes list (y,yuv)")
    parser.add_argument("--train-seconds", type=float, default=10)
    parser.add_argument("--test-step", type=int, default=10)
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args()
    if not args.clips:
        print(f"no clips in {MEDIA}: nothing to measure", file=sys.stderr)
        return
    torch.set_num_threads(2)
    configs = [tuple(map(int, c.split("x"))) for c in args.configs.split(",")]
    budgets = [float(b) for b in args.budgets.split(",")]
    print(f"{'clip':<32} {'color':>5} {'config':>7} {'budget':>7} {'steps':>6} {'val gain':>8} "
          f"{'test Y-PSNR':>11} {'ffmpeg bicubic':>14} {'gain dB':>8} {'bf16 gain':>9} {'U/V gain':>8}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for clip in args.clips:
            lr_path, bic_path = f"{tmp}/lr.mp4", f"{tmp}/bicubic.y4m"
            degrade.make_lr(clip, lr_path, args.scale)
            ffmpeg_bicubic(lr_path, args.scale, bic_path)
            header, _ = video.read_all(lr_path, duration=0.1)
            first = int(round(args.train_seconds * float(header.fps)))
            tests = list(test_frames(clip, lr_path, bic_path, args.scale, first, args.test_step))
            for color in args.colors.split(","):
                pairs, _ = load_pairs(clip, lr_path, args.scale, color, 300, {"duration": args.train_seconds},
                                      {"duration": args.train_seconds})
                train_pairs, val_pairs = pairs.split()
                for channels, blocks in configs:
                    for budget in budgets:
                        hparams = {"scale": args.scale, "channels": channels, "blocks": blocks,
                                   "in_channels": 1 if color == "y" else 3}
                        model = archs.build("fedsr", hparams)
                        recipe = UpscaleRecipe(train_pairs, val_pairs, 32, torch.device("cpu"),
                                               np.random.default_rng(0))
                        result = train(model, recipe, TrainConfig(max_seconds=budget, eval_every=max(5.0, budget / 12)))
                        info = ModelInfo("fedsr", hparams, args.scale, color)
                        fp32, bf16 = (ModelUpscaler(model, info, precision=p) for p in ("fp32", "bf16"))
                        y_sr, y_bf16, y_bic, c_sr, c_bic = [], [], [], [], []
                        for hr, lr, bic in tests:
                            out_header = Header(hr.y.shape[1], hr.y.shape[0])
                            out = fp32.upscale(lr, out_header)
                            y_sr.append(metrics.psnr(out.y, hr.y))
                            y_bf16.append(metrics.psnr(bf16.upscale(lr, out_header).y, hr.y))
                            y_bic.append(metrics.psnr(bic.y, hr.y))
                            c_sr.append(np.mean([metrics.psnr(a, b) for a, b in zip(out.planes[1:], hr.planes[1:])]))
                            c_bic.append(np.mean([metrics.psnr(a, b) for a, b in zip(bic.planes[1:], hr.planes[1:])]))
                        bicubic_db = np.mean(y_bic)
                        row = (Path(clip).name[:32], color, f"{channels}x{blocks}", budget, result.steps,
                               result.gain_db, np.mean(y_sr), bicubic_db, np.mean(y_sr) - bicubic_db,
                               np.mean(y_bf16) - bicubic_db, np.mean(c_sr) - np.mean(c_bic))
                        print(f"{row[0]:<32} {row[1]:>5} {row[2]:>7} {row[3]:>6.0f}s {row[4]:>6} {row[5]:>+8.2f} "
                              f"{row[6]:>11.2f} {row[7]:>14.2f} {row[8]:>+8.2f} {row[9]:>+9.2f} {row[10]:>+8.2f}",
                              flush=True)
    print(f"\n{len(tests)} test frames per clip (after the first {args.train_seconds:.0f} s, every "
          f"{args.test_step}th); {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
