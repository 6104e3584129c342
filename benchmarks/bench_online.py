"""The design's headline experiment: online training in three modes on a multi-scene stream.

A multi-scene clip (scenes of --scene-seconds each: cuts of the two clips in ../shared/media when
present, and lavfi sources) is streamed in simulated time. Every stream second the push side adds
its pairs to the pool (4 per second: HR frame + the decoded default degradation), sr-monitor scores
them (adaptive mode: it writes the training requests), and the online trainer of sr-train --watch
(srtools.live.watchtrain, the same code) gets --steps-per-second training steps: a compute budget
tied to stream time, so the comparison does not depend on the machine's speed. The server-side
Y-PSNR is measured every stream second on two frames that are not in the pool, with the model
current at that moment.

    .venv/bin/python benchmarks/bench_online.py [--scene-seconds 20] [--steps-per-second 10] [--plot F.png]

Modes: once (one session at the start, then idle), continuous (back-to-back sessions of 10 stream
seconds' budget) and adaptive (sessions on requests, stopped by the design's rule, capped at 30
stream seconds' budget). Prints a table: mean Y-PSNR, its gain over bicubic, the mean over the
first --after seconds after each cut, training steps and CPU-seconds (the process's CPU time spent in
the trainer, so other load on the machine does not count; the monitor's is shown apart), their share
of continuous's, sessions and models.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srtools import archs, degrade, ffmpeg, loader, metrics, plot, video  # noqa: E402
from srtools.live.lowess import SceneChangeDetector  # noqa: E402
from srtools.live.monitor import Monitor  # noqa: E402
from srtools.live.pool import Pool  # noqa: E402
from srtools.live.stoprule import StopRule  # noqa: E402
from srtools.live.watchtrain import OnlineTrainer, WatchConfig  # noqa: E402
from srtools.spool import Spool  # noqa: E402
from srtools.training import TrainConfig  # noqa: E402
from srtools.upscale import bicubic, upscaler_factory  # noqa: E402
from srtools.y4m import Header  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"
FPS = 25
SIZE = "640x360"
PAIRS_PER_SECOND = 4
EVAL_OFFSETS = (3, 15)  # frames of each second scored on the server side (pairs are at 0, 6, 12, 18, 24)


def scene_sources(seconds: float) -> list[list[str]]:
    """ffmpeg input arguments of each scene: real footage when present, lavfi otherwise."""
    sources = []
    if (MEDIA / "bottle-detection.mp4").exists():
        sources.append(["-ss", "5", "-t", str(seconds), "-i", str(MEDIA / "bottle-detection.mp4")])
    sources.append(["-f", "lavfi", "-t", str(seconds), "-i", f"mandelbrot=size={SIZE}:rate={FPS}"])
    if (MEDIA / "one-by-one-person-detection.mp4").exists():
        sources.append(["-ss", "30", "-t", str(seconds), "-i", str(MEDIA / "one-by-one-person-detection.mp4")])
    sources.append(["-f", "lavfi", "-t", str(seconds), "-i", f"testsrc2=size={SIZE}:rate={FPS}"])
    return sources[:3]


def make_stream(path: str, seconds: float) -> list[float]:
    """Write the multi-scene HR clip; returns the cut times."""
    sources = scene_sources(seconds)
    chains = ";".join(f"[{i}:v]scale={SIZE.replace('x', ':')},fps={FPS},trim=duration={seconds},"
                      f"setpts=PTS-STARTPTS,format=yuv420p[v{i}]" for i in range(len(sources)))
    joined = "".join(f"[v{i}]" for i in range(len(sources)))
    ffmpeg.run([arg for source in sources for arg in source]
               + ["-filter_complex", f"{chains};{joined}concat=n={len(sources)}:v=1", "-c:v", "libx264",
                  "-crf", "12", "-pix_fmt", "yuv420p", path])
    return [seconds * i for i in range(1, len(sources))]


@dataclasses.dataclass
class Stream:
    pairs: list[list[tuple]]  # per stream second: (t, hr, lr) pool pairs
    evals: list[list[tuple]]  # per stream second: (hr, lr) server-side frames


def load_stream(hr_path: str, lr_path: str) -> Stream:
    pairs: list[list[tuple]] = []
    evals: list[list[tuple]] = []
    step = round(FPS / PAIRS_PER_SECOND)
    with video.open_source(hr_path, vf=degrade.crop_filter(2)) as hr, video.open_source(lr_path) as lr:
        for index, (h, lo) in enumerate(zip(hr, lr)):
            second, offset = divmod(index, FPS)
            if offset == 0:
                pairs.append([])
                evals.append([])
            if offset % step == 0 and offset // step < PAIRS_PER_SECOND:
                pairs[second].append((index / FPS, h, lo))
            if offset in EVAL_OFFSETS:
                evals[second].append((h, lo))
    return Stream(pairs, evals)


def simulate(mode: str, stream: Stream, work: Path, steps_per_second: int, stop: StopRule) -> dict:
    spool = Spool(work / mode, create=True)
    pool = Pool(spool.root, create=True)
    cap = {"once": 30, "continuous": 10, "adaptive": 30}[mode] * steps_per_second
    config = WatchConfig(mode=mode, stop=stop,
                         session=TrainConfig(max_seconds=1e9, max_steps=cap, eval_every=2.0))
    trainer = OnlineTrainer(spool, 2, config)
    monitor = Monitor(spool.root, 2, SceneChangeDetector())  # sr-monitor's defaults
    server = loader.ModelWatcher(spool, archs.UPSCALE, 2, 0.0, upscaler_factory("cpu", "fp32"))
    psnr, bicubic_psnr, versions, monitor_seconds, cpu_seconds = [], [], set(), 0.0, 0.0
    for second, new_pairs in enumerate(stream.pairs):
        for t, hr, lr in new_pairs:
            pool.add(t, hr, lr)
        if mode == "adaptive":
            start = time.process_time()
            list(monitor.new_samples())
            monitor_seconds += time.process_time() - start
        remaining = steps_per_second
        cpu_start = time.process_time()
        while remaining > 0:
            before = trainer.steps
            if not trainer.tick(steps=remaining) and trainer.steps == before:
                break
            remaining -= trainer.steps - before
        cpu_seconds += time.process_time() - cpu_start
        server.poll()
        engine = server.latest
        if engine is not None:
            versions.add(engine.version)
        scores, bases = [], []
        for hr, lr in stream.evals[second]:
            header = Header(*hr.y.shape[::-1])
            bases.append(metrics.psnr(bicubic(lr, header).y, hr.y))
            scores.append(metrics.psnr(engine.upscale(lr, header).y, hr.y) if engine else bases[-1])
        psnr.append(float(np.mean(scores)))
        bicubic_psnr.append(float(np.mean(bases)))
        print(f"  {mode:<10} t={second + 1:>3} s  Y-PSNR {psnr[-1]:6.2f}  bicubic {bicubic_psnr[-1]:6.2f}  "
              f"steps {trainer.steps}", file=sys.stderr, flush=True)
    return {"psnr": psnr, "bicubic": bicubic_psnr, "steps": trainer.steps, "cpu_seconds": cpu_seconds,
            "sessions": trainer.sessions, "models": len(spool.versions("fedsr", 2)),
            "monitor_seconds": monitor_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene-seconds", type=float, default=20)
    parser.add_argument("--steps-per-second", type=int, default=40,
                        help="training steps the trainer may run per second of stream (40: about 3 CPU-seconds "
                             "per stream second with one thread on a 2-core AVX2 machine)")
    parser.add_argument("--after", type=float, default=10, help="seconds after each cut in the 'after cuts' column")
    parser.add_argument("--modes", default="once,continuous,adaptive")
    parser.add_argument("--stop-db", type=float, default=StopRule.fixed_db)
    parser.add_argument("--horizon", type=float, default=StopRule.horizon_s)
    parser.add_argument("--plot", help="write the Y-PSNR over stream time as PNG")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one: steady on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stop = StopRule(fixed_db=args.stop_db, horizon_s=args.horizon)
    with tempfile.TemporaryDirectory() as tmp:
        hr, lr = f"{tmp}/hr.mp4", f"{tmp}/lr.mp4"
        cuts = make_stream(hr, args.scene_seconds)
        degrade.make_lr(hr, lr, 2)
        stream = load_stream(hr, lr)
        results = {mode: simulate(mode, stream, Path(tmp), args.steps_per_second, stop)
                   for mode in args.modes.split(",")}
    seconds = np.arange(1, len(stream.pairs) + 1)
    after = np.zeros(len(seconds), bool)
    for cut in cuts:
        after |= (seconds > cut) & (seconds <= cut + args.after)
    continuous = results.get("continuous")
    print(f"\n{len(seconds)} s stream, cuts at {', '.join(f'{c:g}' for c in cuts)} s, {args.steps_per_second} "
          f"steps per stream second; stop rule THs {stop.fixed_db} dB, alpha {stop.alpha}, horizon {stop.horizon_s} s")
    print(f"{'mode':<11} {'Y-PSNR':>7} {'gain':>6} {'after cuts':>10} {'vs cont.':>8} {'steps':>6} {'CPU-s':>6} "
          f"{'share':>6} {'sessions':>8} {'models':>6} {'monitor CPU-s':>13}")
    for mode, r in results.items():
        psnr, base = np.array(r["psnr"]), np.array(r["bicubic"])
        versus = f"{psnr.mean() - np.mean(continuous['psnr']):+.2f}" if continuous else "-"
        share = f"{r['cpu_seconds'] / continuous['cpu_seconds']:.0%}" if continuous else "-"
        print(f"{mode:<11} {psnr.mean():7.2f} {psnr.mean() - base.mean():+6.2f} {psnr[after].mean():10.2f} "
              f"{versus:>8} {r['steps']:>6} {r['cpu_seconds']:6.0f} {share:>6} {r['sessions']:>8} {r['models']:>6} "
              f"{r['monitor_seconds']:13.1f}")
    print(f"bicubic     {np.mean(next(iter(results.values()))['bicubic']):7.2f}; {time.strftime('%Y-%m-%d %H:%M')}")
    if args.plot:
        series = {mode: r["psnr"] for mode, r in results.items()}
        series["bicubic"] = next(iter(results.values()))["bicubic"]
        plot.line_chart(args.plot, list(seconds), series, "stream time (s)", "server-side Y-PSNR (dB)",
                        f"Online training, {args.steps_per_second} steps per stream second; cuts at "
                        + ", ".join(f"{c:g} s" for c in cuts))
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
