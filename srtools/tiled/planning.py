"""From a manifest, a profile and edge latencies to a cache plan, and the plan file format.

The per-tile reconstruction choice e_ij: a tile is upscaled by the DNN when its LR data size is at
least the threshold, bicubically otherwise (small tiles are flat content such as sky or night,
where the network gains little). The threshold is given in bytes, or as a percentile of the
manifest's LR tile sizes (``25%``, the default: the smallest quarter of tiles skips the DNN).

Plan file (JSON, ``srtools-cacheplan/1``), written by ``sr-cache`` and read by ``sr-proxy``::

    {"format": ..., "solver": "exact", "objective": 123.4,     # sum_i v_i f_i in ms
     "objectives": {"exact": ..., "auction": ..., "none": ...},   # every solver run on the instance
     "runtimes_s": {"exact": ..., "auction": ..., "none": ...},
     "capacity": C, "cached_sets": k, "latencies_ms": [...], "dnn_threshold_bytes": B,
     "segments": [{"index": i, "cached": [m, ...], "delay_ms": f_i,
                   "modes": ["dnn", "bicubic", ...]}]}          # e_ij per tile
"""

from __future__ import annotations

import os
import re

import numpy as np

from ..errors import InputError, UsageError
from ..fsutil import read_json_document
from .cacheplan import (
    MAX_ALLOCATION_VECTORS,
    Instance,
    Plan,
    count_allocation_vectors,
    objective,
    segment_delays,
    solve_auction,
    solve_exact,
    solve_none,
)
from .manifest import Manifest
from .profile import Profile

FORMAT = "srtools-cacheplan/1"
DEFAULT_THRESHOLD = "25%"
SOLVERS = {"exact": solve_exact, "auction": solve_auction}


def parse_latencies(text: str, edges: int) -> np.ndarray:
    """'10,20,...' -> (M,) ms; one non-negative value per edge."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--latencies {text!r}: not a comma-separated list of milliseconds") from None
    if len(values) != edges:
        raise UsageError(f"--latencies: {len(values)} values for {edges} edges (one per edge)")
    if any(not np.isfinite(v) or v < 0 for v in values):
        raise UsageError("--latencies: values must be finite and >= 0")
    return np.array(values)


def threshold_bytes(spec: str | float, lr_bytes: np.ndarray) -> float:
    """A DNN threshold in bytes from '1500' (bytes) or '25%' (percentile of the LR tile sizes)."""
    text = str(spec).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)%", text)
    try:
        if match:
            percent = float(match.group(1))
            if percent > 100:
                raise ValueError
            return float(np.percentile(lr_bytes, percent)) if percent > 0 else 0.0
        value = float(text)
        if value < 0 or not np.isfinite(value):
            raise ValueError
        return value
    except ValueError:
        raise UsageError(f"--dnn-threshold {spec!r}: give bytes (1500) or a percentile of tile sizes (25%)") from None


def tile_modes(lr_bytes: np.ndarray, threshold: float) -> np.ndarray:
    """(n, J) bool: True where the tile goes through the DNN (e_ij = 1)."""
    return lr_bytes >= threshold


def parallelism(workers: int) -> int:
    """Tiles reconstructed at once by a proxy with ``workers`` threads on this machine's cores."""
    return max(1, min(workers, os.cpu_count() or 1))


def build_instance(manifest: Manifest, profile: Profile, latency_ms: np.ndarray, threshold: float,
                   capacity: int, workers: int = 1) -> Instance:
    """The cache-planning instance; ``latency_ms`` is (M,) per edge or (n, M).

    The profile times tiles one at a time; a proxy reconstructing with ``workers`` threads runs
    :func:`parallelism` tiles at once, so the reconstruction terms are divided by it.
    """
    n = len(manifest.segments)
    latency = np.broadcast_to(np.asarray(latency_ms, dtype=float), (n, manifest.edges))
    at_once = parallelism(workers)
    return Instance.from_tiles(latency, manifest.tile_sets, profile.dnn_ms / at_once, profile.bicubic_ms / at_once,
                               manifest.array("lr_bytes"), threshold, manifest.attention, capacity,
                               profile.hr_decode_ms, profile.encode_ms)


def plan_json(manifest: Manifest, inst: Instance, plan: Plan, threshold: float, others: dict[str, Plan],
              latencies: np.ndarray) -> dict:
    modes = tile_modes(manifest.array("lr_bytes"), threshold)
    delays = segment_delays(inst, plan.cached)
    return {
        "format": FORMAT, "solver": plan.solver, "objective": round(plan.objective, 4),
        "objectives": {name: round(p.objective, 4) for name, p in others.items()},
        "runtimes_s": {name: round(p.runtime_s, 6) for name, p in others.items()},
        "runtime_s": round(plan.runtime_s, 6), "capacity": inst.capacity,
        "cached_sets": int(plan.cached.sum()), "latencies_ms": [round(float(v), 3) for v in np.ravel(latencies)],
        "dnn_threshold_bytes": round(threshold, 1), "dnn_tiles": int(modes.sum()), "tiles": int(modes.size),
        "segments": [{"index": s.index, "cached": np.flatnonzero(plan.cached[i]).tolist(),
                      "delay_ms": round(float(delays[i]), 3),
                      "modes": ["dnn" if d else "bicubic" for d in modes[i]]}
                     for i, s in enumerate(manifest.segments)],
    }


def auction_fits(inst: Instance) -> bool:
    """Whether the auction's allocation vectors are few enough to enumerate (see cacheplan)."""
    slots = min(inst.capacity, inst.latency_ms.size)
    return count_allocation_vectors(inst.n_segments, inst.n_edges, slots) <= MAX_ALLOCATION_VECTORS


def solve(inst: Instance, solver: str) -> tuple[Plan, dict[str, Plan]]:
    """Run ``solver``, the other solver where it fits (the auction may not, see :func:`auction_fits`)
    and no cache; returns the chosen plan and every plan by solver name.

    Raises:
        ValueError: ``solver`` is the auction and the instance has too many allocation vectors.
    """
    plans = {name: fn(inst) for name, fn in SOLVERS.items() if name == solver or name == "exact" or auction_fits(inst)}
    plans["none"] = solve_none(inst)
    chosen = plans[solver]
    if objective(inst, chosen.cached) != chosen.objective or chosen.cached.sum() > inst.capacity:
        raise AssertionError("solver returned an infeasible plan")
    return chosen, plans


def load_plan(path: str | os.PathLike, manifest: Manifest) -> dict:
    """Read a plan and check it fits ``manifest``; returns the JSON with ``cached`` as (n, M) bool
    and ``dnn`` as (n, J) bool arrays added."""
    raw = read_json_document(path, FORMAT, "plan", "sr-cache")
    n, edges, tiles = len(manifest.segments), manifest.edges, manifest.tiles_per_segment
    cached = np.zeros((n, edges), dtype=bool)
    dnn = np.zeros((n, tiles), dtype=bool)
    try:
        segments = raw["segments"]
        if len(segments) != n:
            raise ValueError(f"{len(segments)} segments, the manifest has {n}")
        for i, s in enumerate(segments):
            sets = [int(m) for m in s["cached"]]
            if any(not 0 <= m < edges for m in sets):
                raise ValueError(f"segment {i}: cached set outside 0..{edges - 1}")
            cached[i, sets] = True
            if len(s["modes"]) != tiles or not set(s["modes"]) <= {"dnn", "bicubic"}:
                raise ValueError(f"segment {i}: modes must be {tiles} of dnn/bicubic")
            dnn[i] = [mode == "dnn" for mode in s["modes"]]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"{path}: plan does not fit the manifest ({exc})") from None
    raw["cached_array"], raw["dnn_array"] = cached, dnn
    return raw
