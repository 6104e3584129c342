"""The generic start: small F-EDSR and TCSR models trained by the project, fine-tuned on each stream.

A cold start from bicubic spends its first minutes learning what all video shares (edges
sharpened, x264's blocking and ringing undone) before it learns anything about the stream. A
generic model has learnt that already, so the time budget goes to the stream's own content.

Reproducible from pinned inputs, fetched at build time, never at run time: ``make generic-model``
(``python -m srtools.generic``) downloads the scikit-image wheel (pinned; read as a zip, not
installed) for the natural photographs it ships (astronaut, coffee, moon, rocket, ...; sources
and licences in scikit-image's data documentation), pans a 192x192 window over each (and over a
half-size copy of the large ones) to make short clips, degrades them exactly as sr-train does
(area downscale + libx264 CRF 23), and trains the default F-EDSR with sr-train's recipe for a
fixed number of steps. None of the clips the project measures on is among the photographs.

``make generic-tcsr`` (``python -m srtools.generic --arch tcsr``) trains the default TCSR for the
shipped generic F-EDSR: clips of synthetic motion over the same photographs (:mod:`srtools.synthetic`:
pans, zooms, rolls and objects crossing), softened and x264-coded as a camera's stream would be
(:func:`camera_source`), degraded exactly as sr-push sends them (area downscale, then x264 with the
push side's live settings), upscaled by the generic F-EDSR fine-tuned on other clips of the same
photograph (as a stream's own F-EDSR would upscale them: :func:`upscaled_as_a_stream`), against the
clips' own frames.

The weights ship in ``srtools/generic/``, one file per configuration, named by :func:`file_name`.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch

from . import archs, degrade, ffmpeg, fsutil, modelfile, synthetic
from .training import PairSet, RefineRecipe, TrainConfig, UpscaleRecipe, load_pairs, train, upscale_planes

log = logging.getLogger("srtools.generic")

GENERIC_DIR = Path(__file__).parent / "generic"
WHEEL = "scikit-image==0.26.0"
PHOTOS = ("astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
          "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
          "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg")
WINDOW = 192  # HR pixels: fits the smallest photograph (300x451)
CLIP_SECONDS, FPS = 4, 25
CAMERA_BLUR = (0.0, 1.2)  # TCSR's synthetic clips: Gaussian sigma in HR pixels, drawn per clip
SOURCE_CRF = (14, 26)  # and the x264 CRF of the source itself (upper bound exclusive)


def file_name(arch: str, hparams: dict, scale: int, color: str) -> str:
    """The generic model file for one configuration, e.g. ``fedsr-x2-y-16x4.safetensors`` (channels x
    blocks) or ``tcsr-x2-y-k1-16x16x1-g2.safetensors`` (k, channels x flow channels x flow blocks, grid;
    the scale is that of the F-EDSR it refines)."""
    if arch == "tcsr":
        size = (f"k{hparams.get('k')}-{hparams.get('channels')}x{hparams.get('flow_channels')}x"
                f"{hparams.get('flow_blocks')}-g{hparams.get('grid', 1)}")
    else:
        size = f"{hparams.get('channels')}x{hparams.get('blocks')}"
    return f"{arch}-x{scale}-{color}-{size}.safetensors"


def find(arch: str, hparams: dict, scale: int, color: str) -> Path | None:
    """The shipped generic model of exactly this configuration, or None."""
    path = GENERIC_DIR / file_name(arch, hparams, scale, color)
    return path if path.is_file() else None


def read_photos(wheel: Path) -> dict[str, np.ndarray]:
    """The photographs of :data:`PHOTOS` from the scikit-image wheel, as BGR uint8 arrays."""
    with zipfile.ZipFile(wheel) as archive:
        return {name: cv2.imdecode(np.frombuffer(archive.read(f"skimage/data/{name}"), np.uint8), cv2.IMREAD_COLOR)
                for name in PHOTOS}


def pan_clip(photo: np.ndarray, path: Path) -> None:
    """A CLIP_SECONDS clip of a WINDOW-pixel square panned over ``photo`` on a Lissajous path (so
    x264 sees real motion, in both directions), lightly compressed like a camera's recording."""
    cv2.imwrite(str(path.with_suffix(".png")), photo)
    x = f"(iw-{WINDOW})*(0.5+0.5*sin(1.7*t))"
    y = f"(ih-{WINDOW})*(0.5+0.5*sin(1.1*t+1))"
    ffmpeg.run(["-loop", "1", "-framerate", str(FPS), "-t", str(CLIP_SECONDS), "-i", str(path.with_suffix(".png")),
                "-vf", f"crop={WINDOW}:{WINDOW}:'{x}':'{y}',format=yuv420p", "-c:v", "libx264", "-crf", "12",
                "-preset", "veryfast", str(path)])


def training_pairs(photos: dict[str, np.ndarray], workdir: Path, scale: int, frames_per_clip: int) -> PairSet:
    """(LR, HR) luma pairs from pan clips of every photograph and of half-size copies of the large ones."""
    lr_planes, hr_planes = [], []
    for name, photo in photo_variants(photos, WINDOW):
        hr_path, lr_path = workdir / f"{Path(name).stem}.mp4", workdir / f"{Path(name).stem}-lr.mp4"
        pan_clip(photo, hr_path)
        degrade.make_lr(str(hr_path), str(lr_path), scale)
        pairs, _ = load_pairs(str(hr_path), str(lr_path), scale, "y", frames_per_clip, {}, {})
        lr_planes.append(pairs.lr)
        hr_planes.append(pairs.hr)
        log.info("%s: %d pairs", name, len(pairs))
    return PairSet(np.concatenate(lr_planes), np.concatenate(hr_planes))


def photo_variants(photos: dict[str, np.ndarray], size: int) -> list[tuple[str, np.ndarray]]:
    """Every photograph, and a half-size copy of those at least twice ``size`` both ways."""
    variants = []
    for name, photo in photos.items():
        variants.append((name, photo))
        if min(photo.shape[:2]) >= 2 * size:
            half = cv2.resize(photo, (photo.shape[1] // 2, photo.shape[0] // 2), interpolation=cv2.INTER_AREA)
            variants.append((f"half-{name}", half))
    return variants


def camera_source(clip: np.ndarray, rng: np.random.Generator, path: Path) -> None:
    """Write a synthetic clip ((frames, H, W, 3) BGR) to ``path`` as a camera's stream would bring it:
    softened by a Gaussian blur of a random width per clip (:data:`CAMERA_BLUR`; lenses and sensors
    soften, and the photographs are sharper than video frames) and x264-coded at a random CRF
    (:data:`SOURCE_CRF`; a live source is a decoded stream itself). Without this, the upscaled frames
    are further from their targets than a real stream's and TCSR learns corrections too strong for one."""
    sigma = rng.uniform(*CAMERA_BLUR)
    if sigma > 0.2:  # narrower kernels change nothing
        clip = np.stack([cv2.GaussianBlur(frame, (0, 0), sigma) for frame in clip])
    raw = path.with_suffix(".y4m")
    synthetic.write_y4m(str(raw), clip, FPS)
    ffmpeg.run(["-i", str(raw), "-c:v", "libx264", "-crf", str(int(rng.integers(*SOURCE_CRF))), "-pix_fmt", "yuv420p",
                str(path)])


def motion_sequences(photos: dict[str, np.ndarray], workdir: Path, scale: int, clips: int, frames: int,
                     rng: np.random.Generator) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """TCSR's training clips: ``clips`` synthetic motion clips (:func:`srtools.synthetic.render`, over
    the photographs and their half-size copies in turn), each brought as a camera would bring it
    (:func:`camera_source`) and degraded as sr-push sends it: (photograph variant, LR, HR) luma,
    (frames, 1, H, W) uint8 each."""
    variants = photo_variants(photos, WINDOW)
    others = list(photos.values())
    hr_path, lr_path = workdir / "clip.mp4", workdir / "clip-lr.mp4"
    sequences = []
    for i in range(clips):
        name, photo = variants[i % len(variants)]
        clip, motion = synthetic.render(photo, others, rng, WINDOW, frames)
        camera_source(clip, rng, hr_path)
        degrade.make_lr(str(hr_path), str(lr_path), scale, live=True)
        pairs, _ = load_pairs(str(hr_path), str(lr_path), scale, "y", frames, {}, {}, consecutive=True)
        sequences.append((i % len(variants), pairs.lr, pairs.hr))
        log.debug("clip %d over %s: %s", i, name, motion)
    return sequences


def upscaled_as_a_stream(sequences: list[tuple[int, np.ndarray, np.ndarray]], upscaler: torch.nn.Module, scale: int,
                         steps: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """TCSR's inputs as a stream's own F-EDSR makes them: the clips over each photograph split in two
    halves, and each half upscaled by ``upscaler`` (the generic F-EDSR) fine-tuned ``steps`` steps by
    sr-train's recipe on the other half: content it was trained on, frames it was not.

    A stream's own F-EDSR is 0.4-1.6 dB nearer the truth than the generic one (docs/benchmarks.md),
    and TCSR runs on its output: trained on the generic F-EDSR's output instead, TCSR learns to make
    the single-frame corrections that the stream's F-EDSR has already made, and over-corrects there.

    Returns:
        (upscaled, HR) luma, (frames, 1, H, W) uint8 each, in the order of ``sequences``.
    """
    cpu = torch.device("cpu")
    upscaled: dict[int, np.ndarray] = {}
    for variant in sorted({v for v, _, _ in sequences}):
        clips = [i for i, (v, _, _) in enumerate(sequences) if v == variant]
        for train_on, apply_to in ((clips[::2], clips[1::2]), (clips[1::2], clips[::2])):
            if not apply_to:
                continue
            model = upscaler  # a photograph with a single clip: the generic F-EDSR upscales it
            if train_on:
                model = copy.deepcopy(upscaler)
                pairs = PairSet(np.concatenate([sequences[i][1] for i in train_on]),
                                np.concatenate([sequences[i][2] for i in train_on]))
                train_pairs, val_pairs = pairs.split(max_val=4)
                result = train(model, UpscaleRecipe(train_pairs, val_pairs, 32, cpu, rng),
                               TrainConfig(max_seconds=math.inf, max_steps=steps, eval_every=math.inf))
                model.load_state_dict(result.state_dict)
            upscaled.update((i, upscale_planes(model, sequences[i][1], scale, cpu)) for i in apply_to)
        log.info("photograph %d: %d clips upscaled as a stream's own F-EDSR would", variant, len(clips))
    return [(upscaled[i], hr) for i, (_, _, hr) in enumerate(sequences)]


def download_wheel(cache: Path, spec: str = WHEEL) -> Path:
    """The wheel of the pinned ``spec`` (``name==version``), downloaded by pip into ``cache`` once."""
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                    "--only-binary", ":all:", "-d", str(cache), spec], check=True)
    return next(cache.glob(spec.replace("-", "_").replace("==", "-") + "-*.whl"))  # scikit_image-0.26.0-...


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train a generic F-EDSR or TCSR model (see srtools.generic).")
    parser.add_argument("--arch", choices=("fedsr", "tcsr"), default="fedsr")
    parser.add_argument("--steps", type=int, help="training steps (default: 20000 for F-EDSR, 3000 for TCSR)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--frames-per-clip", type=int, help="F-EDSR: pairs kept per pan clip (default 25); "
                                                            "TCSR: frames per synthetic clip (default 12)")
    parser.add_argument("--clips", type=int, default=200, help="TCSR: synthetic motion clips")
    parser.add_argument("--upscaler-steps", type=int, default=200,
                        help="TCSR: steps of each F-EDSR fine-tuned on half the clips of a photograph")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "srtools")
    parser.add_argument("--out", type=Path, default=GENERIC_DIR)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    photos = read_photos(download_wheel(args.cache))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="srtools-generic-") as tmp:
        if args.arch == "fedsr":
            hparams = {"scale": args.scale, "channels": archs.default_hparam("fedsr", "channels"),
                       "blocks": archs.default_hparam("fedsr", "blocks"), "in_channels": 1}  # as shipped
            pairs = training_pairs(photos, Path(tmp), args.scale, args.frames_per_clip or 25)
            train_pairs, val_pairs = pairs.split(max_val=32)
            recipe = UpscaleRecipe(train_pairs, val_pairs, 32, torch.device("cpu"), rng)
            material, steps = f"{len(pairs)} pairs", args.steps or 20000
        else:
            hparams = archs.default_hparams("tcsr")
            upscaler = modelfile.load(find("fedsr", archs.default_hparams("fedsr", scale=args.scale), args.scale, "y"),
                                      scale=args.scale)[0]
            clips = motion_sequences(photos, Path(tmp), args.scale, args.clips, args.frames_per_clip or 12, rng)
            sequences = upscaled_as_a_stream(clips, upscaler, args.scale, args.upscaler_steps, rng)
            recipe = RefineRecipe(sequences, hparams["k"], 96, torch.device("cpu"), rng, max_val=16)
            material, steps = f"{len(sequences)} synthetic clips", args.steps or 3000
    model = archs.build(args.arch, hparams)
    config = TrainConfig(max_seconds=math.inf, max_steps=steps, batch=args.batch, eval_every=60.0)
    baseline = "bicubic" if args.arch == "fedsr" else "its input"
    result = train(model, recipe, config, "cpu",
                   lambda e: log.info("step %d: held-out %+.3f dB over %s", e.step, e.psnr - recipe.baseline_psnr,
                                      baseline))
    info = modelfile.ModelInfo(arch=args.arch, hparams=hparams, scale=args.scale, color="y",
                               source=f"generic: {material} from {len(PHOTOS)} photographs of {WHEEL}", created="",
                               val_psnr_db=round(result.val_psnr_db, 4), gain_db=round(result.gain_db, 4),
                               train_seconds=round(result.seconds, 1), steps=result.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / file_name(args.arch, hparams, args.scale, "y")
    fsutil.write_atomic(out, lambda tmp: modelfile.save(tmp, model, info))
    log.info("wrote %s: %s, held-out %+.3f dB over %s after %d steps (%.0f s)", out, material, result.gain_db,
             baseline, result.steps, result.seconds)


if __name__ == "__main__":
    main()
