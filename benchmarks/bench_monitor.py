"""Scene-change detection on real clips: false requests per minute on single-scene content (camera
motion included) and cuts found within 2 s on a multi-scene cut, per threshold.

Each clip is sampled into a pool as the push side does (4 pairs per second, the decoded default
degradation as LR) and scored by srtools.live.monitor with the spool's model (--model) or bicubic;
the PSNR series then goes through the detector at each --thresholds value. Clips: the two in
../shared/media (skipped when absent), a moving crop panning across bottle-detection (camera
motion), and a 40 s cut of 10 s each of both clips and two lavfi sources (3 cuts).

    .venv/bin/python benchmarks/bench_monitor.py [--model FILE] [--thresholds 0.5,1,1.5,2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srtools import degrade, ffmpeg, video  # noqa: E402
from srtools.live.lowess import SceneChangeDetector  # noqa: E402
from srtools.live.monitor import Monitor  # noqa: E402
from srtools.live.pool import Pool  # noqa: E402
from srtools.spool import Spool  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"
BOTTLE, PEOPLE = MEDIA / "bottle-detection.mp4", MEDIA / "one-by-one-person-detection.mp4"


def make_clips(tmp: str) -> dict[str, tuple[str, list[float]]]:
    """name -> (640x360 clip, cut times)."""
    clips = {}
    if BOTTLE.exists():
        clips["bottle (static)"] = (str(BOTTLE), [])
        pan = f"{tmp}/pan.mp4"  # a 480x270 window panning right and back: camera motion, one scene
        ffmpeg.run(["-i", str(BOTTLE), "-t", "30", "-vf",
                    "crop=480:270:'80+80*sin(2*PI*t/15)':45,scale=640:360", "-c:v", "libx264", "-crf", "12",
                    "-pix_fmt", "yuv420p", pan])
        clips["bottle, panning crop"] = (pan, [])
    if PEOPLE.exists():
        people = f"{tmp}/people.mp4"
        ffmpeg.run(["-i", str(PEOPLE), "-t", "60", "-vf", "scale=640:360,fps=25", "-c:v", "libx264", "-crf", "12",
                    "-pix_fmt", "yuv420p", people])
        clips["one-by-one (people walking)"] = (people, [])
    if BOTTLE.exists() and PEOPLE.exists():
        cut = f"{tmp}/cut.mp4"
        ffmpeg.run(["-i", str(BOTTLE), "-i", str(PEOPLE), "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                    "-f", "lavfi", "-i", "mandelbrot=size=640x360:rate=25", "-filter_complex",
                    ";".join(f"[{i}]trim=duration=10,setpts=PTS-STARTPTS,scale=640:360,fps=25,format=yuv420p[v{i}]"
                             for i in range(4)) + ";[v0][v1][v2][v3]concat=n=4:v=1",
                    "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", cut])
        clips["4 scenes, cuts at 10/20/30 s"] = (cut, [10.0, 20.0, 30.0])
    return clips


def psnr_series(clip: str, tmp: str, model: str | None) -> list[tuple[float, float, float]]:
    """(t, model Y-PSNR, bicubic Y-PSNR) of every pair."""
    spool = Path(tmp) / "spool"
    shutil.rmtree(spool, ignore_errors=True)
    if model:
        from srtools import modelfile

        network, info = modelfile.load(model, scale=2)
        Spool(spool, create=True).publish(network, info)
    lr = f"{tmp}/lr.mp4"
    degrade.make_lr(clip, lr, 2)
    pool = Pool(spool, max_pairs=100_000, create=True)
    monitor = Monitor(spool, 2, SceneChangeDetector(threshold_db=1e9))
    series = []
    with video.open_source(clip, vf=degrade.crop_filter(2)) as hr, video.open_source(lr) as low:
        fps = float(hr.header.fps)
        step = max(1, round(fps / 4))
        for index, (h, lo) in enumerate(zip(hr, low)):
            if index % step == 0:
                pool.add(index / fps, h, lo)
                series += [(s.t, s.psnr, s.bicubic_psnr) for s in monitor.new_samples()]
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="x2 model file the server would use (else bicubic)")
    parser.add_argument("--thresholds", default="0.5,1,1.5,2")
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--persistence", type=int, default=2)
    parser.add_argument("--signal", choices=("psnr", "gain"), default="psnr",
                        help="what the detector follows: the model's Y-PSNR, or its gain over bicubic")
    args = parser.parse_args()
    thresholds = [float(v) for v in args.thresholds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        clips = make_clips(tmp)
        if not clips:
            print(f"no clips in {MEDIA}: nothing to measure", file=sys.stderr)
            return
        print(f"{'clip':<30} {'minutes':>7} " + " ".join(f"{'th ' + format(t, 'g') + ' dB':>16}" for t in thresholds))
        for name, (clip, cuts) in clips.items():
            series = psnr_series(clip, tmp, args.model)
            minutes = series[-1][0] / 60
            cells = []
            for threshold in thresholds:
                detector = SceneChangeDetector(k=args.window, threshold_db=threshold, persistence=args.persistence)
                signal = [(t, psnr - bic if args.signal == "gain" else psnr) for t, psnr, bic in series]
                requests = [t for t, value in signal if detector.update(t, value).request]
                found = sum(any(cut <= r <= cut + 2 for r in requests) for cut in cuts)
                false = [r for r in requests if not any(cut <= r <= cut + 2 for cut in cuts)]
                text = f"{len(false) / minutes:.2f}/min" + (f" {found}/{len(cuts)} cuts" if cuts else "")
                cells.append(f"{text:>16}")
            print(f"{name[:30]:<30} {minutes:>7.2f} " + " ".join(cells), flush=True)
    model = f"model {args.model}" if args.model else "bicubic"
    print(f"\nfalse requests per minute (outside the 2 s after a cut) and cuts found within 2 s; window "
          f"{args.window}, persistence {args.persistence}, signal {args.signal}, 4 pairs/s, {model}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
