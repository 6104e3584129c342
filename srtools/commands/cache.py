"""sr-cache: decide which high-res tile sets a proxy pre-caches."""

from __future__ import annotations

import logging

import click

from .. import cli
from ..errors import UsageError
from ..fsutil import emit_json
from ..tiled import cacheplan, planning
from ..tiled.manifest import Manifest
from .tiled_options import measured_profile, model_options, parse_capacity, profile_options, with_options

log = logging.getLogger("srtools.cache")


@cli.command("sr-cache", epilog="See also: sr-tile(1), sr-proxy(1), sr-sim(1).")
@click.argument("manifest", metavar="MANIFEST")
@click.option("--capacity", required=True, metavar="C|P%",
              help="Cache capacity: a number of tile sets, or a share of all sets of the video (25%).")
@click.option("--latencies", required=True, metavar="MS,MS,...", help="Latency of each edge in ms, in edge order.")
@click.option("--solver", type=click.Choice(sorted(planning.SOLVERS)), default="exact", show_default=True,
              help="exact: dynamic programming over segments and capacity (the optimum, in milliseconds); "
                   "auction: the design's algorithm (allocation vectors, greedy per column, auction prices), "
                   f"refused above {cacheplan.MAX_ALLOCATION_VECTORS:,} allocation vectors.")
@with_options(model_options + profile_options)
def command(manifest: str, capacity: str, latencies: str, solver: str, spool: str | None, model_path: str | None,
            device: str, precision: str, profile_path: str | None, save_profile: str | None,
            workers: int, dnn_threshold: str) -> None:
    """Plan which high-res tile sets the proxy caches before playback.

    MANIFEST is the manifest.json written by sr-tile (or its directory). For segment i with the
    uncached sets U, the delay is f_i = max latency over U + the reconstruction time of the tiles
    of U + the HR decode time of the cached tiles + the segment's stitch and encode time (what
    sr-proxy spends building it), where an uncached tile costs its measured DNN time d_ij when
    its LR size reaches --dnn-threshold and its bicubic time d'_ij otherwise (e_ij). The plan
    caches at most C sets and minimises sum_i v_i f_i, v_i being the segment's saliency-based
    attention from the manifest.

    These times (decode + upscale of each LR tile, decode of each HR tile, stitch + encode of
    each segment at sr-proxy's default CRF) are measured on this machine with the F-EDSR model
    (--spool or --model), or read from --profile. The plan goes to stdout as
    JSON (see srtools.tiled.planning): the cached sets and e_ij per segment, its objective
    (attention-weighted mean delay in ms), and the objective and run time of every solver run
    on the same instance (exact, the auction where its allocation vectors fit, and no cache),
    so the auction's gap to the optimum shows in every plan.
    """
    m = Manifest.load(manifest)
    latency = planning.parse_latencies(latencies, m.edges)
    slots = parse_capacity(capacity, len(m.segments) * m.edges)
    threshold = planning.threshold_bytes(dnn_threshold, m.array("lr_bytes"))
    profile = measured_profile(m, profile_path, spool, model_path, device, precision)
    if save_profile:
        profile.save(save_profile)
    inst = planning.build_instance(m, profile, latency, threshold, slots, workers)
    try:
        plan, plans = planning.solve(inst, solver)
    except ValueError as exc:
        raise UsageError(f"--solver {solver}: {exc}; use --solver exact") from None
    data = planning.plan_json(m, inst, plan, threshold, plans, latency)
    data["manifest"] = str(m.root.resolve() / "manifest.json")
    data["workers"] = workers
    data["profile"] = {"model": profile.model, "machine": profile.machine, "from": profile_path or "measured"}
    log.info("%s: %d of %d sets cached, objective %.2f ms (%s)", solver, data["cached_sets"], slots, plan.objective,
             ", ".join(f"{name} {value:.2f}" for name, value in data["objectives"].items()))
    emit_json(data)


main = cli.entry_point(command)
