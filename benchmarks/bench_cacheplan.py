"""Benchmark the cache planners and the tile partitioner.

Runs seeded random instances of the design configuration (60 segments,
6 edges, latencies uniform 1-100 ms, 24 lognormal tiles per segment,
capacity 25% of the sets) and prints plain-text tables: auction/exact
objective ratio, baseline ratios, solver runtimes, the exact solver on a
large instance, and the partition imbalance of 24 lognormal tiles in 6 sets.

Usage (from the repository root, or anywhere with srtools installed):
    PYTHONPATH=. python benchmarks/bench_cacheplan.py [--instances 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from srtools.tiled.cacheplan import (
    solve_auction,
    solve_exact,
    solve_largest_latency_first,
    solve_none,
    solve_random,
)
from srtools.tiled.partition import balanced_partition, imbalance

from instances import random_instance


def ratio_row(name: str, ratios: np.ndarray) -> str:
    p50, p95 = np.percentile(ratios, [50, 95])
    within = f"{(ratios <= 1.01).sum()}/{len(ratios)}"
    optimal = f"{(ratios <= 1 + 1e-9).sum()}/{len(ratios)}"
    return (
        f"{name:<24}{ratios.min():>9.4f}{p50:>9.4f}{p95:>9.4f}{ratios.max():>9.4f}"
        f"{within:>9}{optimal:>9}"
    )


def bench_solvers(n_instances: int, rng: np.random.Generator) -> None:
    ratios: dict[str, list[float]] = {
        "auction": [], "largest_latency_first": [], "random": [], "none": []
    }
    runtimes: dict[str, list[float]] = {"exact": [], "auction": []}
    for _ in range(n_instances):
        inst = random_instance(rng)
        exact = solve_exact(inst)
        plans = [
            solve_auction(inst),
            solve_largest_latency_first(inst),
            solve_random(inst, rng),
            solve_none(inst),
        ]
        for plan in plans:
            ratios[plan.solver].append(plan.objective / exact.objective)
        runtimes["exact"].append(exact.runtime_s)
        runtimes["auction"].append(plans[0].runtime_s)

    print(f"Objective / exact optimum on {n_instances} instances (n=60, M=6, C=90)")
    print(f"{'solver':<24}{'min':>9}{'median':>9}{'p95':>9}{'max':>9}{'<=1%':>9}{'optimal':>9}")
    for name, values in ratios.items():
        print(ratio_row(name, np.array(values)))
    print()
    print("Mean runtime per instance")
    for name, values in runtimes.items():
        print(f"{name:<24}{1e3 * statistics.fmean(values):>9.2f} ms")
    print()


def bench_large_exact(rng: np.random.Generator) -> None:
    inst = random_instance(rng, n_segments=300, n_edges=6, capacity_fraction=600 / 1800)
    runtimes = [solve_exact(inst).runtime_s for _ in range(5)]
    print(
        f"Exact solver, n=300 M=6 C={inst.capacity}: "
        f"median of 5 runs {1e3 * statistics.median(runtimes):.2f} ms"
    )
    print()


def bench_partition(rng: np.random.Generator, n_partitions: int = 1000) -> None:
    print(f"Imbalance (max-min)/mean, 24 lognormal tiles into 6 sets, {n_partitions} draws")
    print(f"{'tile size sigma':<24}{'median':>9}{'p90':>9}{'p95':>9}{'max':>9}{'<5%':>9}")
    for sigma in (0.5, 0.8):
        values = np.array([
            imbalance(sizes, balanced_partition(sizes, 6))
            for sizes in np.round(rng.lognormal(np.log(20_000), sigma, (n_partitions, 24)))
            .astype(int)
            .tolist()
        ])
        p50, p90, p95 = np.percentile(values, [50, 90, 95])
        share = (values < 0.05).mean()
        print(f"{sigma:<24}{p50:>9.4f}{p90:>9.4f}{p95:>9.4f}{values.max():>9.4f}{share:>9.1%}")
    print("(large imbalances come from draws where one tile exceeds the fair share)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    bench_solvers(args.instances, rng)
    bench_large_exact(rng)
    bench_partition(rng)


if __name__ == "__main__":
    main()
