"""sr-sim: the tiled-delivery experiment: stall time and quality per caching policy and capacity."""

from __future__ import annotations

import dataclasses
import logging

import click
from rich.table import Table

from .. import cli
from ..errors import UsageError
from ..fsutil import emit_json
from ..plot import line_chart
from ..tiled import cacheplan, planning, simulate
from ..tiled.manifest import Manifest
from .tiled_options import model_options, open_upscaler, parse_capacity, profile_options, with_options

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
    if spool is None and model_path is None:
        raise UsageError("give --spool DIR or --model FILE: the simulation reconstructs tiles with the model")
    plan = planning.load_plan(plan_path, m) if plan_path else None
    if plan is not None and full_segments != n:
        raise UsageError("--plan covers the whole manifest; do not combine it with --segments")
    upscaler = open_upscaler(spool, model_path, m.scale, device, precision, "reconstruct tiles")
    with cli.console.status("reconstructing tiles") as status:
        profile, quality = simulate.measure_quality(
            m, upscaler, profile_path, lambda i: status.update(f"reconstructed segment {i + 1}/{n}"))
    if save_profile:
        profile.save(save_profile)
    experiment = simulate.Experiment(capacities=slots, trials=trials, latency_range_ms=(lo, hi), buffer=buffer,
                                     threshold=threshold, workers=workers, seed=seed)
    output = simulate.run(m, experiment, profile, quality, profile_path or "measured")
    if plan is not None:
        output["plan"] = {"file": plan_path, **simulate.plan_quality(m, quality, plan)}
    print_table(output)
    if plot:
        shares, stalls = simulate.stall_curves(output["results"])
        line_chart(plot, shares, stalls, "cache capacity (% of tile sets)", "total stall (s)",
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
