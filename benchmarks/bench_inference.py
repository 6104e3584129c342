"""Inference throughput of F-EDSR configs, x2, against the machine's own matmul peak.

For each config and input size: frames per second of the bare network in fp32, fp32
channels-last and bf16 channels-last, the achieved GFLOP/s (convolutions counted exactly) as a
fraction of the fp32 / bf16 matmul peak measured in the same run, and the whole frame path
(ModelUpscaler.upscale: luma through the network, chroma bicubic) against OpenCV bicubic.

    .venv/bin/python benchmarks/bench_inference.py [--configs 8x2,16x4] [--sizes 320x180] [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srtools import archs  # noqa: E402
from srtools.modelfile import ModelInfo  # noqa: E402
from srtools.upscale import ModelUpscaler, bicubic  # noqa: E402
from srtools.y4m import Frame, Header  # noqa: E402


def rate(fn, seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after two warm-up calls)."""
    fn()
    fn()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 3:
        fn()
        calls += 1
    return calls / elapsed


def matmul_peak_gflops(dtype: torch.dtype, seconds: float) -> float:
    n = 1024
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return rate(lambda: torch.mm(a, b), seconds) * 2 * n ** 3 / 1e9


def conv_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Multiply-adds x 2 of every convolution for one forward pass of ``x``."""
    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += 2.0 * output.numel() * module.in_channels // module.groups * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model(x)
    for h in handles:
        h.remove()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="8x2,12x4,16x4,24x4", help="CHANNELSxBLOCKS list")
    parser.add_argument("--sizes", default="320x180,640x360,960x540", help="LR input sizes")
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    peak32 = matmul_peak_gflops(torch.float32, args.seconds)
    peak16 = matmul_peak_gflops(torch.bfloat16, args.seconds)
    print(f"torch {torch.__version__}, {threads} threads; matmul peak measured now: fp32 {peak32:.0f} GFLOP/s, "
          f"bf16 {peak16:.0f} GFLOP/s\n")
    print(f"{'config':>7} {'input':>9} {'GFLOP/f':>8} | {'fp32':>6} {'fp32-CL':>8} {'bf16-CL':>8} fps | "
          f"{'%peak32':>7} {'%peak16':>7} | {'frame fps':>9} {'bicubic fps':>11} {'ratio':>6}")
    for config in args.configs.split(","):
        channels, blocks = map(int, config.split("x"))
        hparams = {"scale": 2, "channels": channels, "blocks": blocks}
        model = archs.build("fedsr", hparams).eval()
        torch.nn.init.normal_(model.tail.weight, std=1e-3)
        for size in args.sizes.split(","):
            width, height = map(int, size.split("x"))
            x = torch.rand(1, 1, height, width)
            gflop = conv_flops(model, x) / 1e9
            with torch.inference_mode():
                fps32 = rate(lambda: model(x), args.seconds)
                model_cl = model.to(memory_format=torch.channels_last)
                x_cl = x.contiguous(memory_format=torch.channels_last)
                fps_cl = rate(lambda: model_cl(x_cl), args.seconds)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    fps_bf16 = rate(lambda: model_cl(x_cl), args.seconds)
            header = Header(width, height)
            frame = Frame([np.random.default_rng(0).integers(0, 256, s, dtype=np.uint8) for s in header.plane_shapes])
            out_header = header.resized(2 * width, 2 * height)
            upscaler = ModelUpscaler(model, ModelInfo("fedsr", hparams, 2))
            frame_fps = rate(lambda: upscaler.upscale(frame, out_header), args.seconds)
            bicubic_fps = rate(lambda: bicubic(frame, out_header), args.seconds / 3)
            print(f"{config:>7} {size:>9} {gflop:>8.2f} | {fps32:>6.1f} {fps_cl:>8.1f} {fps_bf16:>8.1f}     | "
                  f"{100 * gflop * fps_cl / peak32:>6.1f}% {100 * gflop * fps_bf16 / peak16:>6.1f}% | "
                  f"{frame_fps:>9.1f} {bicubic_fps:>11.0f} {frame_fps / bicubic_fps:>6.3f}", flush=True)


if __name__ == "__main__":
    main()
