"""Selective SR under a deadline: paced live input, what share of blocks the network covers, how much of
full-frame SR's gain it keeps, against an oracle choosing the truly best blocks at the same share.

For each clip the HR frames are the clip (cropped), the LR stream the default degradation, and the
model the default F-EDSR trained as sr-train does (--train-seconds on the first 10 s; or --model).
The LR frames after the training section are fed at --fps in real time through sr-serve's stage
(srtools.selective) in-process; its output is compared with the HR frames. Columns:

- share: blocks with network output (computed or reused) / all blocks;
- kept: (Y-PSNR of the selective output - bicubic) / (full-frame SR - bicubic), per clip;
- oracle: the same for the blocks with the largest true gain, as many per frame as selective had;
- ours/oracle: the ratio of the two; late: frames written more than --latency frame intervals after
  their slot started (srtools.framefilter.Deadline); lag: the longest any frame took, in ms; fps: output rate.

With --share S the input is not paced: every frame computes S of the blocks (no timing, so
block choices and reuse settings compare without the machine's noise; the first frame is whole).
With --input-size 640x360 the clip itself is the LR input (no HR exists at 1280x720): "kept" is
then the share of full-frame SR's correction energy (||SR - bicubic||^2) that selective output has.

    .venv/bin/python benchmarks/bench_selective.py [--clip FILE] [--frames 200] [--train-seconds 180]
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srtools import archs, degrade, framefilter, metrics, modelfile, video, y4m  # noqa: E402
from srtools.selective import BlockGrid, SelectiveUpscaleStage  # noqa: E402
from srtools.training import TrainConfig, UpscaleRecipe, load_pairs, train  # noqa: E402
from srtools.upscale import ModelUpscaler, bicubic  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"


class Recording(SelectiveUpscaleStage):
    """Keeps every output frame and how many blocks it covered; with ``block_energy`` set (one (B,) array
    per frame), takes it for the blocks' detail instead of their Laplacian energy."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outputs, self.covered = [], []
        self.block_energy: list[np.ndarray] | None = None

    def _detail(self, luma, candidates):
        if self.block_energy is None:
            return super()._detail(luma, candidates)
        return self.block_energy[len(self.outputs)][candidates]

    def process(self, frame, engine, time_left):
        before = self.counts.computed + self.counts.reused
        totals = self.counts.total
        out, ran = super().process(frame, engine, time_left)
        whole = self.counts.total == totals and ran
        self.covered.append(len(self.state.grid) if whole else self.counts.computed + self.counts.reused - before)
        self.outputs.append(out[0])
        return out, ran


def paced(frames, fps):
    start = time.monotonic()
    for i, frame in enumerate(frames):
        time.sleep(max(0.0, start + i / fps - time.monotonic()))
        yield frame


def fixed_share(stage: Recording, upscaler: ModelUpscaler, frames: list, share: float) -> None:
    """Every frame through ``stage`` computing ``share`` of its blocks, whatever the time."""
    first = upscaler.upscale(frames[0], stage.out_header)
    stage.start(upscaler, frames[0])
    stage.state.remember_full(frames[0].y, first.y)
    stage.outputs.append(first)
    stage.covered.append(len(stage.state.grid))
    costs = stage.state.costs
    for frame in frames[1:]:
        costs.block.value, costs.overhead.value = 1.0, 0.0  # blocks cost 1 "second"
        before = stage.counts.computed + stage.counts.reused
        out, _ = stage._selective(frame, upscaler, round(share * len(stage.state.grid)) + 0.5, stop_at=math.inf)
        stage.outputs.append(out)
        stage.covered.append(stage.counts.computed + stage.counts.reused - before)


def block_gain(grid: BlockGrid, hr: np.ndarray, full: np.ndarray, bic: np.ndarray) -> np.ndarray:
    """(B,) true gain (bicubic SSE - full-frame SR SSE against HR) of each x2 block of one frame."""
    gains = []
    for y0, y1, x0, x1 in grid.blocks:
        region = (slice(2 * y0, 2 * y1), slice(2 * x0, 2 * x1))
        h, f, b = (a[region].astype(np.float64) for a in (hr, full, bic))
        gains.append(((b - h) ** 2).sum() - ((f - h) ** 2).sum())
    return np.array(gains)


def correction_energy(grid: BlockGrid, full: np.ndarray, bic: np.ndarray) -> np.ndarray:
    """(B,) mean squared correction (full-frame SR - bicubic) of each x2 block of one frame."""
    difference = (full.astype(np.float64) - bic) ** 2
    return np.array([difference[2 * y0:2 * y1, 2 * x0:2 * x1].mean() for y0, y1, x0, x1 in grid.blocks])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default=str(MEDIA / "bottle-detection.mp4"))
    parser.add_argument("--model", help="a trained x2 model file (else one is trained here)")
    parser.add_argument("--train-seconds", type=float, default=180)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--start", type=float, default=10, help="second of the clip the test frames start at")
    parser.add_argument("--fps", type=float, default=25)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--latency", type=int, default=2, help="frames a frame may take until written (sr-serve's)")
    parser.add_argument("--reuse-threshold", type=float, default=2.0)
    parser.add_argument("--stale-levels", type=float, default=Recording.STALE_LEVELS,
                        help="largest change for a stale correction (set to --reuse-threshold: none)")
    parser.add_argument("--share", type=float, help="unpaced: compute this share of the blocks of every frame")
    parser.add_argument("--rank", choices=("laplacian", "correction"), default="laplacian",
                        help="block ranking: sr-serve's (Laplacian energy of the LR block) or the energy of the "
                             "correction full-frame SR makes there (known only after running it: a bound for "
                             "predictors that see no HR)")
    parser.add_argument("--input-size", default="320x180", help="320x180 (HR known) or 640x360 (no HR)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    width, height = map(int, args.input_size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model, info = modelfile.load(args.model, scale=2)
        else:
            lr_path = f"{tmp}/train-lr.mp4"
            degrade.make_lr(args.clip, lr_path, 2, duration=10)
            pairs, _ = load_pairs(args.clip, lr_path, 2, "y", 300, {"duration": 10}, {})
            train_pairs, val_pairs = pairs.split()
            hparams = {"scale": 2, "channels": 16, "blocks": 4, "in_channels": 1}
            model, info = archs.build("fedsr", hparams), modelfile.ModelInfo("fedsr", hparams, 2)
            result = train(model, UpscaleRecipe(train_pairs, val_pairs, 32, torch.device("cpu"),
                                                np.random.default_rng(0)), TrainConfig(max_seconds=args.train_seconds))
            print(f"model trained {args.train_seconds:.0f} s: {result.steps} steps, {result.gain_db:+.2f} dB held out")
        size = f"scale={2 * width}:{2 * height}:flags=area"
        if (width, height) == (320, 180):
            hr_header, hr_frames = video.read_all(args.clip, vf=size, start=args.start, duration=args.frames / 25 + 1)
            lr_path = f"{tmp}/lr.mp4"
            hr_y4m = f"{tmp}/hr.y4m"
            with open(hr_y4m, "wb") as f:
                writer = y4m.Writer(f, hr_header)
                for frame in hr_frames:
                    writer.write(frame)
            degrade.make_lr(hr_y4m, lr_path, 2)
            _, lr_frames = video.read_all(lr_path)
        else:
            _, lr_frames = video.read_all(args.clip, vf=f"scale={width}:{height}:flags=area", start=args.start,
                                          duration=args.frames / 25 + 1)
            hr_frames = None
        lr_frames = lr_frames[:args.frames]
        lr_header = y4m.Header(width, height, args.fps)
        out_header = lr_header.resized(2 * width, 2 * height)
        upscaler = ModelUpscaler(model, info, version=1)
        upscaler.warm_up(lr_header)
        full = [upscaler.upscale(f, out_header).y for f in lr_frames]
        bic = [bicubic(f, out_header).y for f in lr_frames]
        stage = Recording(out_header, block=args.block, reuse_threshold=args.reuse_threshold, latency=args.latency)
        stage.STALE_LEVELS = args.stale_levels
        if args.rank == "correction":
            grid = BlockGrid.build(height, width, args.block, model.receptive_radius())
            stage.block_energy = [correction_energy(grid, f, b) for f, b in zip(full, bic)]
        stats = framefilter.Stats()
        started = time.monotonic()
        if args.share is None:
            framefilter.run(paced(lr_frames, args.fps), args.fps, y4m.Writer(io.BytesIO(), out_header), stage, upscaler,
                            realtime=True, latency=args.latency, stats=stats)
        else:
            fixed_share(stage, upscaler, lr_frames, args.share)
        fps = len(lr_frames) / (time.monotonic() - started)
        ours = [o.y for o in stage.outputs]
        if hr_frames is not None:
            hr = [f.y for f in hr_frames[:len(ours)]]
            oracle = []
            for h, f, b, n in zip(hr, full, bic, stage.covered):
                gain = block_gain(stage.state.grid, h, f, b)
                out = b.copy()
                for index in np.argsort(-gain)[:n]:
                    y0, y1, x0, x1 = stage.state.grid.blocks[index]
                    out[2 * y0:2 * y1, 2 * x0:2 * x1] = f[2 * y0:2 * y1, 2 * x0:2 * x1]
                oracle.append(out)

            def psnr(frames):
                return np.mean([metrics.psnr(a, b) for a, b in zip(frames, hr)])

            base, top = psnr(bic), psnr(full)
            kept, oracle_kept = (psnr(ours) - base) / (top - base), (psnr(oracle) - base) / (top - base)
            detail = f"full-frame gain {top - base:+.2f} dB"
        else:
            def distance(frames, reference):
                return sum(((a.astype(np.float64) - b) ** 2).sum() for a, b in zip(frames, reference))

            kept, oracle_kept = 1 - distance(ours, full) / distance(full, bic), float("nan")
            detail = "no HR: kept = share of full-frame correction energy"
        share = float(np.mean(stage.covered)) / len(stage.state.grid)
        computed = stage.counts.computed / stage.counts.total if stage.counts.total else 1.0
        print(f"{'clip':<28} {'input':>8} {'share':>6} {'computed':>8} {'kept':>6} {'oracle':>7} {'ours/oracle':>11} "
              f"{'late':>5} {'lag':>5} {'fps':>5} {'whole':>6}")
        whole = sum(c == len(stage.state.grid) for c in stage.covered)
        print(f"{Path(args.clip).name[:28]:<28} {args.input_size:>8} {share:>6.0%} {computed:>8.0%} {kept:>6.0%} "
              f"{oracle_kept:>7.0%} {kept / oracle_kept:>11.2f} {stats.late:>5} {1e3 * stats.worst_lag:>5.0f} "
              f"{fps:>5.1f} {whole:>6}")
        pacing = (f"paced at {args.fps:g} fps, {stats.engine_frames} with network output" if args.share is None
                  else f"unpaced, {args.share:.0%} of the blocks computed")
        print(f"\n{len(lr_frames)} frames {pacing}; blocks ranked by {args.rank}, block {args.block}, "
              f"reuse threshold {args.reuse_threshold:g}, "
              f"stale corrections up to {args.stale_levels:g}; {detail}; {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
