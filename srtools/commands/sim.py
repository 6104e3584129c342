"""sr-sim: the tiled-delivery experiment: stall time and quality per caching policy and capacity."""

from __future__ import annotations

import dataclasses
import logging

import click
import numpy as np
from rich.table import Table

from .. import cli
from ..errors import UsageError
from ..fsutil import emit_json
from ..plot import line_chart
from ..tiled import cacheplan, planning, simulate
from ..tiled.manifest import Manifest
from ..tiled.options import model_options, open_upscaler, parse_capacity, profile_options, with_options
from ..tiled.profile import Profile
from ..tiled.reconstruct import Reconstructor

log = logging.getLogger("srtools.sim")


@cli.command("sr-sim", epilog="See also: sr-tile(1), sr-cache(1), sr-proxy(1).")
@click.argument("manifest", metavar="MANIFEST")
@click.option("--capacities", default="0,10%,25%,50%", show_default=True, metavar="C,...",
              help="Cache capacities to simulate: numbers of sets or shares of all sets.")
@click.option("--trials", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Random latency draws per capacity (results are means over them).")
@click.option("--latency-range", default="1,100", show_default=True, metavar="LO,HI",
              help="Edge latencies are drawn uniformly in [LO, HI] ms per segment and edge.")
@click.option("--buffer", type=click.IntRange(1, 1000), default=2, show_default=True, metavar="SEGMENTS",
              help="Segments the client buffers ahead of the playhead.")
@click.option("--segments", "max_segments", type=click.IntRange(1, None), metavar="N",
              help="Use only the first N segments of the manifest.")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), metavar="PLAN",
              help="Also report the quality of this sr-cache plan (what sr-proxy --crf 0 serves).")
@click.option("--plot", type=click.Path(dir_okay=False), metavar="FILE.png",
              help="Draw total stall time against capacity per policy into this PNG.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@with_options(model_options + profile_options)
def command(manifest: str, capacities: str, trials: int, latency_range: str, buffer: int, max_segments: int | None,
            plan_path: str | None, plot: str | None, seed: int, spool: str | None, model_path: str | None,
            device: str, precision: str, profile_path: str | None, save_profile: str | None,
            workers: int, dnn_threshold: str) -> None:
    """Simulate cache-assisted tiled delivery of a tiled video and compare caching policies.

    Every LR tile of MANIFEST (sr-tile) is really reconstructed (decoded, upscaled by F-EDSR and
    bicubically) and every HR tile decoded, each segment stitched and encoded, timing each and
    measuring each tile's per-frame luma error against the original video. Then, for each
    capacity and --trials latency draws (uniform in --latency-range per segment and edge), each
    policy picks the cached sets: none, random, largest-latency-first, the auction solver and
    the exact solver. Segment delays f_i use the measured times (or --profile), which include
    the HR decode of cached tiles and each segment's stitch and encode; a client plays the
    segments in order with a --buffer segment playback buffer, and the total stall time is
    summed. Quality is the mean per-frame Y-PSNR of the reconstructed frames against the
    original.

    Also reported: the per-tile bicubic/DNN choice (--dnn-threshold) against all-DNN and
    all-bicubic reconstruction, without cache. A table goes to stderr, the results as JSON
    to stdout, and with --plot a PNG line chart of stall time against capacity.
    """
    m = Manifest.load(manifest)
    full_segments = len(m.segments)
    if max_segments is not None and max_segments < len(m.segments):
        m = dataclasses.replace(m, segments=m.segments[:max_segments])
    n, edges = len(m.segments), m.edges
    try:
        lo, hi = (float(v) for v in latency_range.split(","))
        if not 0 <= lo <= hi:
            raise ValueError
    except ValueError:
        raise UsageError(f"--latency-range {latency_range!r}: expected LO,HI with 0 <= LO <= HI") from None
    slots = [parse_capacity(c, n * edges, "--capacities") for c in capacities.split(",") if c.strip()]
    if not slots:
        raise UsageError("--capacities: give at least one capacity")
    slots = list(dict.fromkeys(slots))  # a capacity given twice is simulated once
    for capacity in slots:
        vectors = cacheplan.count_allocation_vectors(n, edges, min(capacity, n * edges))
        if vectors > cacheplan.MAX_ALLOCATION_VECTORS:
            raise UsageError(f"--capacities: {capacity} sets give the auction policy {vectors} allocation vectors, "
                             f"more than its bound of {cacheplan.MAX_ALLOCATION_VECTORS} (fewer --segments or a "
                             f"smaller capacity)")
    threshold = planning.threshold_bytes(dnn_threshold, m.array("lr_bytes"))
    dnn = planning.tile_modes(m.array("lr_bytes"), threshold)
    if spool is None and model_path is None:
        raise UsageError("give --spool DIR or --model FILE: the simulation reconstructs tiles with the model")
    plan = planning.load_plan(plan_path, m) if plan_path else None
    if plan is not None and full_segments != n:
        raise UsageError("--plan covers the whole manifest; do not combine it with --segments")
    upscaler = open_upscaler(spool, model_path, m.scale, device, precision, "reconstruct tiles")
    with cli.console.status("reconstructing tiles") as status:
        profile, quality = simulate.measure_quality(
            m, Reconstructor(m, upscaler), lambda i: status.update(f"reconstructed segment {i + 1}/{n}"))
    if profile_path:
        profile = Profile.load(profile_path, m)
    if save_profile:
        profile.save(save_profile)
    rng = np.random.default_rng(seed)
    draws = [rng.uniform(lo, hi, (n, edges)) for _ in range(trials)]
    results = simulate.compare_policies(m, profile, quality, threshold, slots, draws, buffer,
                                        np.random.default_rng([seed, 1]), workers)
    output = {
        "config": {"manifest": str(m.root / "manifest.json"), "segments": n, "edges": edges,
                   "tiles_per_segment": m.tiles_per_segment, "segment_seconds": m.segment_seconds,
                   "latency_range_ms": [lo, hi], "trials": trials, "buffer_segments": buffer, "seed": seed},
        "reconstruction": {"model": profile.model, "machine": profile.machine, "from": profile_path or "measured",
                           "dnn_ms_mean": round(float(profile.dnn_ms.mean()), 3),
                           "bicubic_ms_mean": round(float(profile.bicubic_ms.mean()), 3),
                           "decode_ms_mean": round(float(profile.decode_ms.mean()), 3),
                           "hr_decode_ms_mean": round(float(profile.hr_decode_ms.mean()), 3),
                           "encode_ms_mean": round(float(profile.encode_ms.mean()), 3)},
        "tile_choice": simulate.tile_choice(profile, quality, dnn, threshold),
        "results": results,
        "stall_cut": simulate.stall_cut(results),
    }
    if plan is not None:
        cached = simulate.cached_tiles(m.tile_sets, plan["cached_array"], m.tiles_per_segment)
        output["plan"] = {"file": plan_path, "cached_sets": int(plan["cached_array"].sum()),
                          "psnr_db": round(quality.psnr(cached, plan["dnn_array"]), 4),
                          "psnr_db_uncached": round(quality.psnr(np.zeros_like(cached), plan["dnn_array"]), 4)}
    print_table(output)
    if plot:
        shares = sorted({r["capacity_share"] for r in results})
        series = {p: [next(r["stall_s"] for r in results if r["policy"] == p and r["capacity_share"] == s)
                      for s in shares] for p in simulate.POLICIES}
        line_chart(plot, [100 * s for s in shares], series, "cache capacity (% of tile sets)", "total stall (s)",
                   f"sr-sim: {n} segments, {edges} edges, buffer {buffer}")
    emit_json(output)


def print_table(output: dict) -> None:
    table = Table(title="sr-sim: mean over latency draws", title_justify="left")
    for column in ("capacity", "policy", "stall (s)", "start-up (s)", "objective (ms)", "Y-PSNR (dB)"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in output["results"]:
        table.add_row(f"{r['capacity']} ({100 * r['capacity_share']:.0f}%)", r["policy"], f"{r['stall_s']:.3f}",
                      f"{r['startup_s']:.3f}", f"{r['objective_ms']:.1f}", f"{r['psnr_db']:.3f}")
    cli.console.print(table)
    tc = output["tile_choice"]
    cli.console.print(f"per-tile choice ({100 * tc['dnn_tile_share']:.0f}% of tiles DNN, threshold "
                      f"{tc['threshold_bytes']:.0f} B): reconstruction {tc['per_tile']['reconstruct_s']:.2f} s vs "
                      f"all-DNN {tc['all_dnn']['reconstruct_s']:.2f} s ({100 * tc['time_saving']:.1f}% less), "
                      f"Y-PSNR {tc['per_tile']['psnr_db']:.3f} vs {tc['all_dnn']['psnr_db']:.3f} dB")


main = cli.entry_point(command)
