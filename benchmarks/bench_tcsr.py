"""CPU forward time per refined frame of TCSR configs (fp32, channels-last, inference mode).

One warm-up call then ``--iterations`` timed calls per point, batch 1, luma only, flow
estimation fixed at ``--flow-channels`` x ``--flow-blocks``. The weights are random (the
zero-initialised last convs included), so every layer runs as it would trained.

    .venv/bin/python benchmarks/bench_tcsr.py [--threads 2] [--sizes 640x360,1280x720] [--skip 1280x720:2:32]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = str(Path(__file__).resolve().parents[1])


def main() -> None:
    sys.path.insert(0, ROOT)  # this checkout's srtools, before any installed one
    from srtools import archs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ks", default="1,2", help="neighbours per side")
    parser.add_argument("--channels", default="16,32", help="fusion / reconstruction widths")
    parser.add_argument("--flow-channels", type=int, default=16)
    parser.add_argument("--flow-blocks", type=int, default=2)
    parser.add_argument("--sizes", default="640x360,1280x720", help="output frame sizes")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--skip", default="", help="SIZE:K:CHANNELS points to leave out, comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    skip = set(filter(None, args.skip.split(",")))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 channels-last, "
          f"flow {args.flow_channels}x{args.flow_blocks}, {args.iterations} timed calls after 1 warm-up\n")
    print(f"{'size':>9} {'k':>2} {'ch':>3} | {'ms/frame':>9} {'fps':>6}")
    for size in args.sizes.split(","):
        width, height = map(int, size.split("x"))
        for k in map(int, args.ks.split(",")):
            for channels in map(int, args.channels.split(",")):
                if f"{size}:{k}:{channels}" in skip:
                    print(f"{size:>9} {k:>2} {channels:>3} | {'skipped':>9}", flush=True)
                    continue
                model = archs.build("tcsr", {"k": k, "channels": channels, "flow_channels": args.flow_channels,
                                             "flow_blocks": args.flow_blocks}).eval()
                for module in model.modules():
                    if isinstance(module, torch.nn.Conv2d) and not module.weight.any():
                        torch.nn.init.normal_(module.weight, std=1e-3)
                model = model.to(memory_format=torch.channels_last)
                # (N, T, C, H, W) whose per-frame slices are channels-last (N, C, H, W) tensors.
                frames = torch.rand(1, 2 * k + 1, height, width, 1).permute(0, 1, 4, 2, 3)
                with torch.inference_mode():
                    model(frames)
                    start = time.perf_counter()
                    for _ in range(args.iterations):
                        model(frames)
                    seconds = (time.perf_counter() - start) / args.iterations
                print(f"{size:>9} {k:>2} {channels:>3} | {1000 * seconds:>9.1f} {1 / seconds:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
