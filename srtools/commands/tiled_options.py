"""Command-line options shared by the tiled-delivery commands (sr-cache, sr-sim, sr-proxy), defined once,
with the wording of their errors, and what turns them into objects (capacity, upscaler, profile).

Not a command (:data:`srtools.commands.COMMANDS` does not list it): the one module of this floor that
commands import, because what it shares is about the command line; the rest of tiled delivery is in
:mod:`srtools.tiled`.
"""

from __future__ import annotations

import logging
import re
from typing import Callable

import click

from .. import archs, cli, loader
from ..errors import UsageError
from ..tiled import planning
from ..tiled.manifest import Manifest
from ..tiled.profile import Profile, measure
from ..tiled.reconstruct import Reconstructor
from ..upscale import ModelUpscaler, upscaler_factory

log = logging.getLogger("srtools.tiled")

model_options = [
    cli.spool_option(required=False),
    cli.model_option("Upscaling model file for DNN tiles (else the spool's current model)."),
    cli.device_option,
    cli.precision_option,
]

profile_options = [
    click.option("--profile", "profile_path", type=click.Path(dir_okay=False), metavar="FILE",
                 help="Take the reconstruction times from this profile instead of measuring them."),
    click.option("--save-profile", type=click.Path(dir_okay=False), metavar="FILE",
                 help="Write the measured reconstruction times here (JSON) for later runs."),
    click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
                 help="Tiles the proxy reconstructs at once (its --workers): the delay model divides the "
                      "reconstruction time by the smaller of this and the CPU cores."),
    click.option("--dnn-threshold", default=planning.DEFAULT_THRESHOLD, show_default=True, metavar="BYTES|P%",
                 help="A tile goes through the DNN when its LR size is at least this many bytes, or this "
                      "percentile of all LR tile sizes; smaller tiles are upscaled bicubically."),
]


def with_options(options: list[Callable]) -> Callable:
    """Decorator applying a list of click options in order."""
    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


def parse_capacity(text: str, total_sets: int, option: str = "--capacity") -> int:
    """'90' (sets) or '25%' (of all n x M sets) -> number of sets."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", text)
    try:
        value = round(float(match.group(1)) / 100 * total_sets) if match else int(text)
    except ValueError:
        raise UsageError(f"{option} {text!r}: give a number of sets (90) or a share of all sets (25%)") from None
    if value < 0:
        raise UsageError(f"{option} must be >= 0")
    return value


def open_upscaler(spool: str | None, model_path: str | None, scale: int, device: str, precision: str,
                  purpose: str) -> ModelUpscaler | None:
    """The upscaler of --model FILE, else the spool's current model; None when neither option is given.

    Raises:
        UsageError: a spool with no model yet (``purpose`` says what it was needed for).
    """
    upscaler = loader.open_engine(upscaler_factory(cli.resolve_device(device), precision), archs.UPSCALE, scale,
                                  model_path=model_path, spool=spool)
    if upscaler is None and spool is not None and model_path is None:
        raise UsageError(f"--spool {spool}: no x{scale} upscaling model published yet (run sr-train): "
                         f"it is needed to {purpose}")
    return upscaler


def measured_profile(manifest: Manifest, profile_path: str | None, spool: str | None, model_path: str | None,
                     device: str, precision: str) -> Profile:
    """The profile from --profile, else measured now with the model (see srtools.tiled.profile)."""
    if profile_path is not None:
        return Profile.load(profile_path, manifest)
    upscaler = open_upscaler(spool, model_path, manifest.scale, device, precision, "measure reconstruction times")
    if upscaler is None:
        raise UsageError("give --profile FILE, or --spool DIR / --model FILE to measure reconstruction times")
    n_tiles = len(manifest.segments) * manifest.tiles_per_segment
    log.info("measuring reconstruction of %d tiles with %s", n_tiles, upscaler.label)
    profile = measure(manifest, Reconstructor(manifest, upscaler))
    log.info("mean per tile: DNN %.1f ms, bicubic %.1f ms (decode %.1f ms), HR decode %.1f ms; per segment: "
             "stitch + encode %.1f ms", profile.dnn_ms.mean(), profile.bicubic_ms.mean(), profile.decode_ms.mean(),
             profile.hr_decode_ms.mean(), profile.encode_ms.mean())
    return profile
