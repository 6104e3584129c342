"""sr-cache: decide which high-res tile sets a proxy pre-caches."""

from __future__ import annotations

import json
import logging
import re
import sys

import click

from .. import cli
from ..errors import UsageError
from ..tiled import planning
from ..tiled.manifest import Manifest
from ..tiled.profile import Profile, measure
from ..tiled.reconstruct import Reconstructor, load_upscaler

log = logging.getLogger("srtools.cache")


def parse_capacity(text: str, total_sets: int) -> int:
    """'90' (sets) or '25%' (of all n x M sets) -> number of sets."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", text)
    try:
        value = round(float(match.group(1)) / 100 * total_sets) if match else int(text)
    except ValueError:
        raise UsageError(f"--capacity {text!r}: give a number of sets (90) or a share of all sets (25%)") from None
    if value < 0:
        raise UsageError("--capacity must be >= 0")
    return value


def measured_profile(manifest: Manifest, profile_path: str | None, spool: str | None, model_path: str | None,
                     device: str) -> Profile:
    """The profile from --profile, else measured now with the model (see srtools.tiled.profile)."""
    if profile_path is not None:
        return Profile.load(profile_path, manifest)
    if spool is None and model_path is None:
        raise UsageError("give --profile FILE, or --spool DIR / --model FILE to measure reconstruction times")
    upscaler = load_upscaler(spool, model_path, manifest.scale, cli.resolve_device(device))
    n_tiles = len(manifest.segments) * manifest.tiles_per_segment
    log.info("measuring reconstruction of %d tiles with %s", n_tiles, upscaler.label)
    profile = measure(manifest, Reconstructor(manifest, upscaler))
    log.info("mean per tile: DNN %.1f ms, bicubic %.1f ms (decode %.1f ms)", profile.dnn_ms.mean(),
             profile.bicubic_ms.mean(), profile.decode_ms.mean())
    return profile


profile_options = [
    cli.spool_option(required=False),
    click.option("--model", "model_path", type=click.Path(dir_okay=False), metavar="FILE",
                 help="F-EDSR model file (else the spool's current model)."),
    click.option("--profile", "profile_path", type=click.Path(dir_okay=False), metavar="FILE",
                 help="Take the reconstruction times from this profile instead of measuring them."),
    click.option("--save-profile", type=click.Path(dir_okay=False), metavar="FILE",
                 help="Write the measured reconstruction times here (JSON) for later runs."),
    click.option("--dnn-threshold", default=planning.DEFAULT_THRESHOLD, show_default=True, metavar="BYTES|P%",
                 help="A tile goes through the DNN when its LR size is at least this many bytes, or this "
                      "percentile of all LR tile sizes; smaller tiles are upscaled bicubically."),
    cli.device_option,
]


def with_options(options):
    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


@cli.command("sr-cache", epilog="See also: sr-tile(1), sr-proxy(1), sr-sim(1).")
@click.argument("manifest", metavar="MANIFEST")
@click.option("--capacity", required=True, metavar="C|P%",
              help="Cache capacity: a number of tile sets, or a share of all sets of the video (25%).")
@click.option("--latencies", required=True, metavar="MS,MS,...", help="Latency of each edge in ms, in edge order.")
@click.option("--solver", type=click.Choice(sorted(planning.SOLVERS)), default="auction", show_default=True,
              help="auction: the design's greedy-by-tau with auction conflict resolution; exact: dynamic "
                   "programming over segments and capacity (the optimum).")
@with_options(profile_options)
def command(manifest: str, capacity: str, latencies: str, solver: str, spool: str | None, model_path: str | None,
            profile_path: str | None, save_profile: str | None, dnn_threshold: str, device: str) -> None:
    """Plan which high-res tile sets the proxy caches before playback.

    MANIFEST is the manifest.json written by sr-tile (or its directory). For segment i with the
    uncached sets U, the delay is f_i = max latency over U + the reconstruction time of the tiles
    of U, where a tile costs its measured DNN time d_ij when its LR size reaches --dnn-threshold
    and its bicubic time d'_ij otherwise (e_ij). The plan caches at most C sets and minimises
    sum_i v_i f_i, v_i being the segment's saliency-based attention from the manifest.

    Reconstruction times (decode + upscale of each LR tile) are measured on this machine with
    the F-EDSR model (--spool or --model), or read from --profile. The plan goes to stdout as
    JSON (see srtools.tiled.planning): the cached sets and e_ij per segment, its objective
    (attention-weighted mean delay in ms) and the objectives of both solvers and of no cache.
    """
    m = Manifest.load(manifest)
    latency = planning.parse_latencies(latencies, m.edges)
    slots = parse_capacity(capacity, len(m.segments) * m.edges)
    threshold = planning.threshold_bytes(dnn_threshold, m.array("lr_bytes"))
    profile = measured_profile(m, profile_path, spool, model_path, device)
    if save_profile:
        profile.save(save_profile)
    inst = planning.build_instance(m, profile, latency, threshold, slots)
    plan, objectives = planning.solve(inst, solver)
    data = planning.plan_json(m, inst, plan, threshold, objectives, latency)
    data["manifest"] = str(m.root.resolve() / "manifest.json")
    data["profile"] = {"model": profile.model, "machine": profile.machine, "from": profile_path or "measured"}
    log.info("%s: %d of %d sets cached, objective %.2f ms (exact %.2f, no cache %.2f)", solver, data["cached_sets"],
             slots, plan.objective, objectives["exact"], objectives["none"])
    json.dump(data, sys.stdout)
    sys.stdout.write("\n")


main = cli.entry_point(command)
