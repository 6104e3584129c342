"""The design's experiment as a simulation: playback stalls and quality per caching policy.

Playback model. The proxy delivers segments one after another; segment i takes f_i (its delay
from the cache plan: largest uncached edge latency + reconstruction of the uncached tiles + HR
decode of the cached ones + stitch and encode, all measured on this machine). The client keeps
at most ``buffer`` segments ahead of the playhead: the proxy starts segment i once segment i-1
is delivered and segment i-buffer has started playing. Playback starts when segment 0 arrives
(the start-up delay, reported apart); afterwards every moment the playhead waits for a segment
not yet delivered is stall time.

Quality. Each tile's per-frame luma squared error against the original is measured once per form
(cached HR tile, DNN-upscaled LR tile, bicubic-upscaled LR tile); a plan's reconstructed frame
has the error of the forms it picks, so its Y-PSNR (mean of per-frame PSNR, srtools.metrics
conventions) is exact for every plan without re-running the reconstruction. sr-proxy with
``--crf 0`` serves exactly these frames.

The experiment (:func:`run`): every capacity is simulated under the same ``trials`` latency draws,
uniform in the latency range per segment and edge (common random numbers, so differences between
capacities are not noise); the results are means over the draws.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from .. import video
from ..errors import InputError
from ..upscale import ModelUpscaler
from . import planning
from .cacheplan import segment_delays, solve_auction, solve_exact, solve_largest_latency_first, solve_none, solve_random
from .manifest import Manifest
from .profile import Profile, measure
from .reconstruct import Reconstructor, reference_tile, tile_sse

POLICIES = ("none", "random", "largest_latency_first", "auction", "exact")


def playback(delays_s: np.ndarray, durations_s: np.ndarray, buffer: int) -> tuple[float, float]:
    """(start-up delay, total stall time) in seconds; see the module docstring."""
    delivered = 0.0
    play_start = np.zeros(len(delays_s))
    stall = 0.0
    for i, delay in enumerate(delays_s):
        start = delivered if i < buffer else max(delivered, play_start[i - buffer])
        delivered = start + delay
        if i == 0:
            play_start[0] = delivered
            continue
        due = play_start[i - 1] + durations_s[i - 1]
        play_start[i] = max(due, delivered)
        stall += play_start[i] - due
    return float(play_start[0]), float(stall)


@dataclasses.dataclass
class Quality:
    """Per-frame luma squared errors of every tile in every form: ``sse[form][i]`` is (J, F_i)."""

    sse: dict[str, list[np.ndarray]]
    pixels: int  # luma samples per frame

    def psnr(self, cached_tiles: np.ndarray, dnn: np.ndarray) -> float:
        """Mean per-frame Y-PSNR when tile (i, j) is HR where ``cached_tiles`` else DNN/bicubic per ``dnn``."""
        values = []
        for i in range(len(self.sse["hr"])):
            form = np.where(cached_tiles[i], 0, np.where(dnn[i], 1, 2))
            stacked = np.stack([self.sse["hr"][i], self.sse["dnn"][i], self.sse["bicubic"][i]])
            frame_sse = stacked[form, np.arange(len(form))].sum(axis=0)
            with np.errstate(divide="ignore"):
                values.append(10 * np.log10(255.0 ** 2 * self.pixels / frame_sse))
        return float(np.mean(np.concatenate(values)))


def cached_tiles(tile_sets: list[list[list[int]]], cached: np.ndarray, tiles: int) -> np.ndarray:
    """(n, M) set plan -> (n, J) bool: tile cached."""
    out = np.zeros((len(tile_sets), tiles), dtype=bool)
    for i, sets in enumerate(tile_sets):
        for m in np.flatnonzero(cached[i]):
            out[i, sets[m]] = True
    return out


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
    if len(out) < len(counts):
        raise InputError(f"{m.source}: fewer frames than the manifest's segments")
    return out


def measure_quality(m: Manifest, upscaler: ModelUpscaler, profile_path: str | None = None,
            progress: Callable[[int], None] | None = None) -> tuple[Profile, Quality]:
    """Reconstruct every tile in every form once: the per-frame errors, and the times (the profile,
    or the one at ``profile_path`` instead when given). ``progress`` gets each segment's index."""
    refs = reference_luma(m)
    sse = {form: [np.zeros((m.tiles_per_segment, s.frames)) for s in m.segments] for form in ("hr", "dnn", "bicubic")}

    def on_tile(i: int, j: int, forms: dict) -> None:
        reference = reference_tile(m, refs[i], j)
        for form, frames in forms.items():
            sse[form][i][j] = tile_sse(reference, frames)

    profile = measure(m, Reconstructor(m, upscaler), on_tile, progress)
    if profile_path is not None:
        profile = Profile.load(profile_path, m)
    return profile, Quality(sse, m.width * m.height)


@dataclasses.dataclass
class Experiment:
    """What sr-sim simulates.

    Attributes:
        capacities: cache sizes in sets.
        trials: latency draws per capacity.
        latency_range_ms: (low, high): edge latencies are uniform in it, per segment and edge.
        buffer: segments the client buffers (see :func:`playback`).
        threshold: the DNN threshold in bytes (e_ij).
        workers: the proxy's reconstruction threads (see :func:`planning.build_instance`).
        seed: of the latency draws and the random policy.
    """

    capacities: list[int]
    trials: int
    latency_range_ms: tuple[float, float]
    buffer: int
    threshold: float
    workers: int = 2
    seed: int = 0


def run(m: Manifest, experiment: Experiment, profile: Profile, quality: Quality,
        profile_from: str = "measured") -> dict:
    """The experiment on measured times and errors, as sr-sim's JSON document: ``config``,
    ``reconstruction`` (the mean times, and ``profile_from``: where they came from),
    ``tile_choice`` (:func:`tile_choice`), ``results`` (:func:`compare_policies`) and ``stall_cut``
    (:func:`stall_cut`)."""
    n, seed, threshold = len(m.segments), experiment.seed, experiment.threshold
    low, high = experiment.latency_range_ms
    rng = np.random.default_rng(seed)
    draws = [rng.uniform(low, high, (n, m.edges)) for _ in range(experiment.trials)]
    results = compare_policies(m, profile, quality, threshold, experiment.capacities, draws, experiment.buffer,
                               np.random.default_rng([seed, 1]), experiment.workers)
    dnn = planning.tile_modes(m.array("lr_bytes"), threshold)
    return {
        "config": {"manifest": str(m.root / "manifest.json"), "segments": n, "edges": m.edges,
                   "tiles_per_segment": m.tiles_per_segment, "segment_seconds": m.segment_seconds,
                   "latency_range_ms": [low, high], "trials": experiment.trials,
                   "buffer_segments": experiment.buffer, "seed": seed},
        "reconstruction": {"model": profile.model, "machine": profile.machine, "from": profile_from,
                           "dnn_ms_mean": round(float(profile.dnn_ms.mean()), 3),
                           "bicubic_ms_mean": round(float(profile.bicubic_ms.mean()), 3),
                           "decode_ms_mean": round(float(profile.decode_ms.mean()), 3),
                           "hr_decode_ms_mean": round(float(profile.hr_decode_ms.mean()), 3),
                           "encode_ms_mean": round(float(profile.encode_ms.mean()), 3)},
        "tile_choice": tile_choice(profile, quality, dnn, threshold),
        "results": results,
        "stall_cut": stall_cut(results),
    }


def plan_quality(m: Manifest, quality: Quality, plan: dict) -> dict:
    """The quality of an sr-cache plan (:func:`planning.load_plan`), as sr-proxy --crf 0 serves it."""
    cached = cached_tiles(m.tile_sets, plan["cached_array"], m.tiles_per_segment)
    return {"cached_sets": int(plan["cached_array"].sum()),
            "psnr_db": round(quality.psnr(cached, plan["dnn_array"]), 4),
            "psnr_db_uncached": round(quality.psnr(np.zeros_like(cached), plan["dnn_array"]), 4)}


def compare_policies(m: Manifest, profile: Profile, quality: Quality, threshold: float, capacities: list[int],
                     latency_draws: list[np.ndarray], buffer: int, rng: np.random.Generator,
                     workers: int = 1) -> list[dict]:
    """Mean stall, start-up delay, objective and Y-PSNR of every policy at every capacity.

    Args:
        threshold: the DNN threshold in bytes (e_ij).
        capacities: cache sizes in sets.
        latency_draws: (n, M) edge latencies in ms; the same draws for every capacity (common
            random numbers), so differences between capacities are not noise.
        buffer: segments the client buffers (see :func:`playback`).
        rng: the random policy's generator.
        workers: the proxy's reconstruction threads (see :func:`planning.build_instance`).

    Returns:
        One row per (capacity, policy).
    """
    n = len(m.segments)
    dnn = planning.tile_modes(m.array("lr_bytes"), threshold)
    durations = np.array([s.frames / float(m.fps) for s in m.segments])
    solvers = {"none": solve_none, "random": lambda inst: solve_random(inst, rng),
               "largest_latency_first": solve_largest_latency_first, "auction": solve_auction, "exact": solve_exact}
    results = []
    for capacity in capacities:
        sums = {p: np.zeros(4) for p in POLICIES}  # stall, start-up, objective, Y-PSNR
        for latency in latency_draws:
            inst = planning.build_instance(m, profile, latency, threshold, capacity, workers)
            for name in POLICIES:
                plan = solvers[name](inst)
                startup, stall = playback(segment_delays(inst, plan.cached) / 1e3, durations, buffer)
                psnr = quality.psnr(cached_tiles(m.tile_sets, plan.cached, m.tiles_per_segment), dnn)
                sums[name] += (stall, startup, plan.objective, psnr)
        for name in POLICIES:
            stall, startup, objective, psnr = np.round(sums[name] / len(latency_draws), 4).tolist()
            results.append({"capacity": capacity, "capacity_share": round(capacity / (n * m.edges), 4),
                            "policy": name, "stall_s": stall, "startup_s": startup, "objective_ms": objective,
                            "psnr_db": psnr})
    return results


def tile_choice(profile: Profile, quality: Quality, dnn: np.ndarray, threshold: float) -> dict:
    """The per-tile bicubic/DNN choice against all-DNN and all-bicubic reconstruction, without cache."""
    none = np.zeros_like(dnn)
    choices = {"all_dnn": ~none, "per_tile": dnn, "all_bicubic": none}
    seconds = {name: np.where(use_dnn, profile.dnn_ms, profile.bicubic_ms).sum() / 1e3
               for name, use_dnn in choices.items()}
    report: dict = {name: {"reconstruct_s": round(float(seconds[name]), 3),
                           "psnr_db": round(quality.psnr(none, use_dnn), 4)} for name, use_dnn in choices.items()}
    report["threshold_bytes"] = round(threshold, 1)
    report["dnn_tile_share"] = round(float(dnn.mean()), 4)
    report["time_saving"] = round(float(1 - seconds["per_tile"] / seconds["all_dnn"]), 4)
    report["psnr_loss_db"] = round(report["all_dnn"]["psnr_db"] - report["per_tile"]["psnr_db"], 4)
    return report


def stall_cut(results: list[dict]) -> dict:
    """Share of the stall time each policy saves against no cache, at the simulated capacity closest
    to 25% of the sets (0 where caching nothing does not stall)."""
    target = min({r["capacity_share"] for r in results}, key=lambda share: abs(share - 0.25))
    rows = {r["policy"]: r for r in results if r["capacity_share"] == target}
    base = rows["none"]["stall_s"]
    return {"capacity": rows["none"]["capacity"], "capacity_share": target, "none_stall_s": base,
            **{p: (round(1 - rows[p]["stall_s"] / base, 4) if base > 0 else 0.0) for p in POLICIES if p != "none"}}


def stall_curves(results: list[dict]) -> tuple[list[float], dict[str, list[float]]]:
    """(capacities in % of the sets, total stall in s per policy at each): the data of sr-sim --plot."""
    shares = sorted({r["capacity_share"] for r in results})
    series = {p: [next(r["stall_s"] for r in results if r["policy"] == p and r["capacity_share"] == share)
                  for share in shares] for p in POLICIES}
    return [100 * share for share in shares], series
