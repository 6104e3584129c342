"""sr-sim: the tiled-delivery experiment: stall time and quality per caching policy and capacity."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys

import click
import numpy as np
from rich.table import Table

from .. import cli, video
from ..errors import InputError, UsageError
from ..tiled import planning
from ..tiled.cacheplan import solve_auction, solve_exact, solve_largest_latency_first, solve_none, solve_random
from ..tiled.manifest import Manifest
from ..tiled.profile import Profile, measure
from ..tiled.reconstruct import Reconstructor, decode_tile, load_upscaler, reference_tile, tile_sse
from ..tiled.simulate import POLICIES, Quality, cached_tiles, line_chart, playback, segment_delays
from .cache import parse_capacity, profile_options, with_options

log = logging.getLogger("srtools.sim")


def reference_luma(m: Manifest) -> list[np.ndarray]:
    """(F_i, H, W) original luma of each segment, cropped as the tiles were."""
    out, frames = [], []
    counts = [s.frames for s in m.segments]
    with video.open_source(m.source) as reader:
        for frame in reader:
            frames.append(frame.y[:m.height, :m.width].copy())
            if len(frames) == counts[len(out)]:
                out.append(np.stack(frames))
                frames = []
                if len(out) == len(counts):
                    break
        else:
            if len(out) < len(counts):
                raise InputError(f"{m.source}: fewer frames than the manifest's segments")
    return out


def measure_quality(m: Manifest, reconstructor: Reconstructor) -> tuple[Profile, Quality]:
    """Reconstruct every tile in every form once: timings (the profile) and per-frame errors."""
    refs = reference_luma(m)
    sse = {form: [np.zeros((m.tiles_per_segment, s.frames)) for s in m.segments] for form in ("hr", "dnn", "bicubic")}

    def on_tile(i: int, j: int, forms: dict) -> None:
        reference = reference_tile(m, refs[i], j)
        for form, frames in forms.items():
            sse[form][i][j] = tile_sse(reference, frames)
        _, hr = decode_tile(m.hr_path(i, j), m.segments[i].frames)
        sse["hr"][i][j] = tile_sse(reference, hr)

    with cli.console.status("reconstructing tiles") as status:
        profile = measure(m, reconstructor, on_tile,
                          progress=lambda i: status.update(f"reconstructed segment {i + 1}/{len(m.segments)}"))
    return profile, Quality(sse, m.width * m.height)


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
@with_options(profile_options)
def command(manifest: str, capacities: str, trials: int, latency_range: str, buffer: int, max_segments: int | None,
            plan_path: str | None, plot: str | None, seed: int, spool: str | None, model_path: str | None,
            profile_path: str | None, save_profile: str | None, dnn_threshold: str, device: str) -> None:
    """Simulate cache-assisted tiled delivery of a tiled video and compare caching policies.

    Every LR tile of MANIFEST (sr-tile) is really reconstructed (decoded, upscaled by F-EDSR and
    bicubically) and every HR tile decoded, timing each and measuring its per-frame luma error
    against the original video. Then, for each capacity and --trials latency draws (uniform in
    --latency-range per segment and edge), each policy picks the cached sets: none, random,
    largest-latency-first, the auction solver and the exact solver. Segment delays f_i use the
    measured reconstruction times (or --profile); a client plays the segments in order with a
    --buffer segment playback buffer, and the total stall time is summed. Quality is the mean
    per-frame Y-PSNR of the reconstructed frames against the original.

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
    slots = [parse_capacity(c, n * edges) for c in capacities.split(",") if c.strip()]
    if not slots:
        raise UsageError("--capacities: give at least one capacity")
    lr_bytes = m.array("lr_bytes")
    threshold = planning.threshold_bytes(dnn_threshold, lr_bytes)
    dnn = planning.tile_modes(lr_bytes, threshold)
    if spool is None and model_path is None:
        raise UsageError("give --spool DIR or --model FILE: the simulation reconstructs tiles with the model")
    plan = planning.load_plan(plan_path, m) if plan_path else None
    if plan is not None and full_segments != n:
        raise UsageError("--plan covers the whole manifest; do not combine it with --segments")
    upscaler = load_upscaler(spool, model_path, m.scale, cli.resolve_device(device))
    profile, quality = measure_quality(m, Reconstructor(m, upscaler))
    if profile_path:
        profile = Profile.load(profile_path, m)
    if save_profile:
        profile.save(save_profile)
    durations = np.array([s.frames / float(m.fps) for s in m.segments])
    rng = np.random.default_rng(seed)
    # The same latency draws for every capacity (common random numbers), a separate stream for "random".
    draws = [rng.uniform(lo, hi, (n, edges)) for _ in range(trials)]
    policy_rng = np.random.default_rng([seed, 1])

    results = []
    for capacity in slots:
        sums: dict[str, dict[str, float]] = {p: {"stall_s": 0.0, "startup_s": 0.0, "objective_ms": 0.0, "psnr_db": 0.0}
                                             for p in POLICIES}
        for latency in draws:
            inst = planning.build_instance(m, profile, latency, threshold, capacity)
            plans = {"none": solve_none(inst), "random": solve_random(inst, policy_rng),
                     "largest_latency_first": solve_largest_latency_first(inst), "auction": solve_auction(inst),
                     "exact": solve_exact(inst)}
            for name, p in plans.items():
                startup, stall = playback(segment_delays(inst, p.cached) / 1e3, durations, buffer)
                acc = sums[name]
                acc["stall_s"] += stall
                acc["startup_s"] += startup
                acc["objective_ms"] += p.objective
                acc["psnr_db"] += quality.psnr(cached_tiles(m.tile_sets, p.cached, m.tiles_per_segment), dnn)
        for name in POLICIES:
            row = {k: round(v / trials, 4) for k, v in sums[name].items()}
            results.append({"capacity": capacity, "capacity_share": round(capacity / (n * edges), 4), "policy": name,
                            **row})

    # The per-tile choice against all-DNN and all-bicubic, no cache.
    all_true = np.ones_like(dnn)
    no_tiles = np.zeros_like(dnn)
    recon = {"all_dnn": profile.dnn_ms.sum(), "per_tile": np.where(dnn, profile.dnn_ms, profile.bicubic_ms).sum(),
             "all_bicubic": profile.bicubic_ms.sum()}
    psnr = {"all_dnn": quality.psnr(no_tiles, all_true), "per_tile": quality.psnr(no_tiles, dnn),
            "all_bicubic": quality.psnr(no_tiles, no_tiles)}
    tile_choice = {k: {"reconstruct_s": round(recon[k] / 1e3, 3), "psnr_db": round(psnr[k], 4)} for k in recon}
    tile_choice["threshold_bytes"] = round(threshold, 1)
    tile_choice["dnn_tile_share"] = round(float(dnn.mean()), 4)
    tile_choice["time_saving"] = round(1 - recon["per_tile"] / recon["all_dnn"], 4)
    tile_choice["psnr_loss_db"] = round(psnr["all_dnn"] - psnr["per_tile"], 4)

    output = {
        "config": {"manifest": str(m.root / "manifest.json"), "segments": n, "edges": edges,
                   "tiles_per_segment": m.tiles_per_segment, "segment_seconds": m.segment_seconds,
                   "latency_range_ms": [lo, hi], "trials": trials, "buffer_segments": buffer, "seed": seed},
        "reconstruction": {"model": profile.model, "machine": profile.machine, "from": profile_path or "measured",
                           "dnn_ms_mean": round(float(profile.dnn_ms.mean()), 3),
                           "bicubic_ms_mean": round(float(profile.bicubic_ms.mean()), 3),
                           "decode_ms_mean": round(float(profile.decode_ms.mean()), 3)},
        "tile_choice": tile_choice,
        "results": results,
        "stall_cut": stall_cut(results, n * edges),
    }
    if plan is not None:
        cached = cached_tiles(m.tile_sets, plan["cached_array"], m.tiles_per_segment)
        output["plan"] = {"file": plan_path, "cached_sets": int(plan["cached_array"].sum()),
                          "psnr_db": round(quality.psnr(cached, plan["dnn_array"]), 4),
                          "psnr_db_uncached": round(quality.psnr(np.zeros_like(cached), plan["dnn_array"]), 4)}
    print_table(output)
    if plot:
        shares = sorted({r["capacity_share"] for r in results})
        series = {p: [next(r["stall_s"] for r in results if r["policy"] == p and r["capacity_share"] == s)
                      for s in shares] for p in POLICIES}
        if not line_chart(plot, [100 * s for s in shares], series, "cache capacity (% of tile sets)",
                          "total stall (s)", f"sr-sim: {n} segments, {edges} edges, buffer {buffer}"):
            raise UsageError(f"--plot {plot}: cannot write the PNG")
    json.dump(output, sys.stdout)
    sys.stdout.write("\n")


def stall_cut(results: list[dict], total_sets: int) -> dict:
    """Stall time saved against no cache at the simulated capacity closest to 25% of the sets."""
    capacities = sorted({r["capacity"] for r in results})
    target = min(capacities, key=lambda c: abs(c / total_sets - 0.25))
    rows = {r["policy"]: r for r in results if r["capacity"] == target}
    base = rows["none"]["stall_s"]
    return {"capacity": target, "capacity_share": rows["none"]["capacity_share"], "none_stall_s": base,
            **{p: (round(1 - rows[p]["stall_s"] / base, 4) if base > 0 else 0.0) for p in POLICIES if p != "none"}}


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
