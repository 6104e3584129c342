"""CPU forward time per refined frame of TCSR variants, against F-EDSR at the same output size.

Each variant is a TCSR configuration (``K:CHANNELS:FLOW_CHANNELS:FLOW_BLOCKS:GRID``; grid 1 is
the design's full-resolution flow and fusion, grid 2 estimates flows from half-size frames and
fuses and reconstructs pixel-unshuffled frames); F-EDSR is the default configuration (x2, luma)
upscaling the half-size frame to the same output size, measured in the same run so that the ratio
holds on a noisy machine. One warm-up call then ``--iterations`` timed calls per point, batch 1,
fp32, channels-last, inference mode. The weights are random (the zero-initialised last convs
included), so every layer runs as it would trained.

    .venv/bin/python benchmarks/bench_tcsr.py [--threads 2] [--sizes 640x360,1280x720]
        [--variants 1:16:16:2:1,1:16:16:1:2,2:16:16:1:2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = str(Path(__file__).resolve().parents[1])
DEFAULT_VARIANTS = "1:16:16:2:1,1:16:16:1:1,1:16:16:1:2,1:8:8:1:2,2:16:16:1:2"


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode, channels-last, its zero-initialised convolutions given small weights."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and not module.weight.any():
            torch.nn.init.normal_(module.weight, std=1e-3)
    return model.eval().to(memory_format=torch.channels_last)


def seconds_per_call(model: torch.nn.Module, inputs: torch.Tensor, iterations: int) -> float:
    with torch.inference_mode():
        model(inputs)
        start = time.perf_counter()
        for _ in range(iterations):
            model(inputs)
        return (time.perf_counter() - start) / iterations


def main() -> None:
    sys.path.insert(0, ROOT)  # this checkout's srtools, before any installed one
    from srtools import archs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="K:CHANNELS:FLOW_CHANNELS:FLOW_BLOCKS:GRID, ...")
    parser.add_argument("--sizes", default="640x360,1280x720", help="output frame sizes")
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 channels-last, "
          f"{args.iterations} timed calls after 1 warm-up, {time.strftime('%Y-%m-%d %H:%M')}\n")
    print(f"{'size':>9} {'variant (k:ch:flow ch:flow blocks:grid)':>40} | {'ms/frame':>9} {'x F-EDSR':>9}")
    fedsr = randomised(archs.build("fedsr", archs.default_hparams("fedsr")))
    for size in args.sizes.split(","):
        width, height = map(int, size.split("x"))
        low_res = torch.rand(1, 1, height // 2, width // 2).to(memory_format=torch.channels_last)
        fedsr_s = seconds_per_call(fedsr, low_res, args.iterations)
        print(f"{size:>9} {'F-EDSR (default)':>40} | {1000 * fedsr_s:>9.1f} {1.0:>9.2f}", flush=True)
        for variant in args.variants.split(","):
            k, channels, flow_channels, flow_blocks, grid = map(int, variant.split(":"))
            model = randomised(archs.build("tcsr", archs.default_hparams(
                "tcsr", k=k, channels=channels, flow_channels=flow_channels, flow_blocks=flow_blocks, grid=grid)))
            # (N, T, C, H, W) whose per-frame slices are channels-last (N, C, H, W) tensors.
            frames = torch.rand(1, 2 * k + 1, height, width, 1).permute(0, 1, 4, 2, 3)
            tcsr_s = seconds_per_call(model, frames, args.iterations)
            print(f"{size:>9} {variant:>40} | {1000 * tcsr_s:>9.1f} {tcsr_s / fedsr_s:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
