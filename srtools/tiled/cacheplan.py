"""Choose which high-resolution tile sets a proxy pre-caches.

Model (design "cache-assisted multi-source tiled delivery"): a video is cut
into n segments; the tiles of each segment are grouped into M sets and the
low-resolution version of set m is served by edge server m. A proxy near the
client can pre-cache the high-resolution version of some sets, x_im = 1, at
most C sets over the whole video. For segment i

    f_i(x_i) = max{l_im : x_im = 0} + sum{r_im : x_im = 0}

where l_im is the latency of edge m, r_im the reconstruction time of set m
(sum over its tiles of the DNN time d_ij or the bicubic time d'_ij, DNN iff
the tile has at least ``dnn_threshold_bytes`` bytes), and the max is 0 when
every set is cached. A cached set is neither fetched nor reconstructed.

The plan minimises sum_i v_i f_i(x_i) subject to sum x_im <= C, where v_i is
the viewer's attention to segment i. Convention: attention is normalised to
sum to 1 when an :class:`Instance` is built, so the objective is the
attention-weighted mean segment delay in milliseconds.

Because only the number k of cached sets of a segment couples the segments,
the problem reduces to choosing k_i per segment: f_i(k) is the smallest delay
over all k-subsets (``best_delays``), and sum_i k_i <= C is a multiple-choice
knapsack with unit weights, solved exactly by dynamic programming
(``solve_exact``) or by the design's greedy-plus-auction heuristic
(``solve_auction``).

The auction heuristic works on bundle values V_i(k) = v_i (f_i(0) - f_i(k)),
whose increments are the weighted delay differences
tau_ik = v_i (f_i(k-1) - f_i(k)) (gain of the k-th cached set of segment i);
the allocation vector y_ik of segment i is the best k-subset from
``best_delays``. It runs in two phases.

1. Greedy by tau. Cache slots are handed out one bid at a time. Each segment
   with k_i slots bids for the bundle of delta more slots (delta <= free
   slots) that maximises the mean tau per slot,
   (V_i(k_i + delta) - V_i(k_i)) / delta; the highest per-slot bid gets its
   bundle. When every tau_i is non-increasing in k this is exactly greedy by
   tau (delta = 1 always wins) and is optimal. When tau_i is not monotone
   (caching the highest-latency set alone gains little because the
   second-highest latency takes over, but caching both gains a lot) the
   segment bids for the pair as one bundle instead of being ignored.

2. Auction-based conflict resolution. Greedy goes wrong at the end: the last
   free slots are too few for the best bundle, and slots already given out
   may be worth more to another segment. Segments become bidders and holders
   at once. Holder j prices its slots by what it would lose by giving up q of
   them, p_j(q) = V_j(k_j) - V_j(k_j - q); free slots cost nothing. Every
   segment i bids for bundles of r more slots; its bid is its best net value
   max_r [V_i(k_i + r) - V_i(k_i) - P_-i(r)], where P_-i(r) is the cheapest
   way to buy r slots from the free pool and the other holders (a min-plus
   convolution of their price curves). The highest bid wins if it beats the
   prices by more than the bid increment epsilon: the winner takes the
   slots, the sellers re-price their smaller holdings, and bidding repeats
   until no bidder's best net value exceeds epsilon. At that point every
   segment holds a bundle within epsilon of its best net value at the
   current prices (Bertsekas' epsilon-complementary slackness); each
   accepted bid raises the total value by more than epsilon, so the auction
   ends after at most V_total / epsilon rounds, in practice a few.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True, eq=False)
class Instance:
    """One cache-planning problem.

    Attributes:
        latency_ms: (n, M) latency of edge m for segment i, >= 0.
        recon_ms: (n, M) reconstruction time of tile set m of segment i, >= 0.
        attention: (n,) viewer attention v_i, normalised here to sum to 1.
        capacity: C, the number of tile sets the proxy can cache in total.
    """

    latency_ms: np.ndarray
    recon_ms: np.ndarray
    attention: np.ndarray
    capacity: int

    def __post_init__(self) -> None:
        latency = _frozen_array(self.latency_ms, ndim=2, name="latency_ms")
        recon = _frozen_array(self.recon_ms, ndim=2, name="recon_ms")
        attention = _frozen_array(self.attention, ndim=1, name="attention")
        if recon.shape != latency.shape or attention.shape != latency.shape[:1]:
            raise ValueError(
                f"shape mismatch: latency {latency.shape}, recon {recon.shape}, "
                f"attention {attention.shape}"
            )
        if attention.sum() <= 0:
            raise ValueError("attention must have a positive sum")
        if self.capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {self.capacity}")
        attention = attention / attention.sum()
        attention.setflags(write=False)
        object.__setattr__(self, "latency_ms", latency)
        object.__setattr__(self, "recon_ms", recon)
        object.__setattr__(self, "attention", attention)
        object.__setattr__(self, "capacity", int(self.capacity))

    @property
    def n_segments(self) -> int:
        """Number of segments n."""
        return self.latency_ms.shape[0]

    @property
    def n_edges(self) -> int:
        """Number of edge servers (tile sets per segment) M."""
        return self.latency_ms.shape[1]

    @classmethod
    def from_tiles(
        cls,
        latency_ms: np.ndarray,
        tile_sets: Sequence[Sequence[Sequence[int]]],
        dnn_ms: np.ndarray,
        bicubic_ms: np.ndarray,
        tile_bytes: np.ndarray,
        dnn_threshold_bytes: float,
        attention: np.ndarray,
        capacity: int,
    ) -> Instance:
        """Build an instance from per-tile measurements.

        Tile j of segment i is reconstructed by the DNN (d_ij = ``dnn_ms``)
        when it has at least ``dnn_threshold_bytes`` bytes and by bicubic
        upscaling (d'_ij = ``bicubic_ms``) otherwise; a set's reconstruction
        time is the sum over its tiles.

        Args:
            latency_ms: (n, M) edge latency per segment.
            tile_sets: ``tile_sets[i][m]`` lists the tiles of segment i stored
                at edge m; each segment's sets must partition its J tiles.
            dnn_ms: (n, J) DNN reconstruction time per tile.
            bicubic_ms: (n, J) bicubic reconstruction time per tile.
            tile_bytes: (n, J) encoded size per tile.
            dnn_threshold_bytes: Smallest tile size that is worth the DNN.
            attention: (n,) viewer attention per segment (any positive scale).
            capacity: Number of tile sets the proxy can cache.

        Returns:
            The instance.

        Raises:
            ValueError: If shapes disagree or a segment's sets do not
                partition its tiles.
        """
        latency_ms = np.asarray(latency_ms, dtype=float)
        dnn_ms, bicubic_ms, tile_bytes = (
            np.asarray(a, dtype=float) for a in (dnn_ms, bicubic_ms, tile_bytes)
        )
        n_segments, n_edges = latency_ms.shape
        if not dnn_ms.shape == bicubic_ms.shape == tile_bytes.shape:
            raise ValueError("dnn_ms, bicubic_ms and tile_bytes must have the same shape")
        if len(tile_sets) != n_segments or dnn_ms.shape[0] != n_segments:
            raise ValueError("tile_sets and tile arrays need one entry per segment")
        membership = np.zeros((n_segments, n_edges, dnn_ms.shape[1]), dtype=bool)
        for segment, sets in enumerate(tile_sets):
            if len(sets) != n_edges:
                raise ValueError(f"segment {segment}: {len(sets)} tile sets for {n_edges} edges")
            for edge, tiles in enumerate(sets):
                membership[segment, edge, list(tiles)] = True
        if not (membership.sum(axis=1) == 1).all():
            raise ValueError("each segment's tile sets must contain every tile exactly once")
        tile_ms = np.where(tile_bytes >= dnn_threshold_bytes, dnn_ms, bicubic_ms)
        recon_ms = np.einsum("imj,ij->im", membership, tile_ms)
        return cls(latency_ms, recon_ms, np.asarray(attention, dtype=float), capacity)


@dataclass(frozen=True, eq=False)
class Plan:
    """A caching decision and how it was found.

    Attributes:
        cached: (n, M) bool, x_im = True when set m of segment i is cached.
        objective: sum_i v_i f_i, the attention-weighted mean delay in ms.
        solver: Name of the solver that produced the plan.
        runtime_s: Wall-clock time the solver took, in seconds.
    """

    cached: np.ndarray
    objective: float
    solver: str
    runtime_s: float


class SegmentOptions(NamedTuple):
    """Best caching choice per segment and number of cached sets.

    Attributes:
        delay_ms: (n, M + 1), ``delay_ms[i, k]`` = f_i(k), the smallest delay
            of segment i when exactly k of its sets are cached.
        cached: (n, M + 1, M) bool, ``cached[i, k]`` = a k-subset reaching it.
    """

    delay_ms: np.ndarray
    cached: np.ndarray


def delay_ms(latency_ms: np.ndarray, recon_ms: np.ndarray, uncached: np.ndarray) -> np.ndarray:
    """The segment delay f = max latency over the uncached sets (0 if none) + their reconstruction time.

    The one definition of f_i; broadcasts over leading axes.

    Args:
        latency_ms / recon_ms: (..., M) per set.
        uncached: (..., M) bool, True for sets fetched from their edge.

    Returns:
        (...) delays in ms.
    """
    return np.where(uncached, latency_ms, 0.0).max(axis=-1) + (recon_ms * uncached).sum(axis=-1)


def segment_delays(inst: Instance, cached: np.ndarray) -> np.ndarray:
    """(n,) f_i in ms for a plan x, (n, M) bool."""
    return delay_ms(inst.latency_ms, inst.recon_ms, ~np.asarray(cached, dtype=bool))


def objective(inst: Instance, cached: np.ndarray) -> float:
    """Attention-weighted delay sum_i v_i f_i in ms for a plan x, (n, M) bool (capacity is not checked)."""
    return float(inst.attention @ segment_delays(inst, cached))


def best_delays(inst: Instance) -> SegmentOptions:
    """f_i(k) and the subsets reaching it, by enumerating all 2^M subsets.

    Vectorised over segments; memory is O(n 2^M M), fine for M up to ~10.

    Args:
        inst: The instance.

    Returns:
        The per-segment options; f_i(k) is non-increasing in k.
    """
    n_edges = inst.n_edges
    subsets = (np.arange(2**n_edges)[:, None] >> np.arange(n_edges)) & 1 == 1
    delay = delay_ms(inst.latency_ms[:, None, :], inst.recon_ms[:, None, :], ~subsets)  # (n, 2^M)
    sizes = subsets.sum(axis=1)
    rows = np.arange(inst.n_segments)
    best_ms = np.empty((inst.n_segments, n_edges + 1))
    cached = np.empty((inst.n_segments, n_edges + 1, n_edges), dtype=bool)
    for k in range(n_edges + 1):
        columns = np.flatnonzero(sizes == k)
        best = columns[np.argmin(delay[:, columns], axis=1)]
        best_ms[:, k] = delay[rows, best]
        cached[:, k] = subsets[best]
    return SegmentOptions(best_ms, cached)


def solve_exact(inst: Instance) -> Plan:
    """Optimal plan by dynamic programming (multiple-choice knapsack).

    The state is the number of slots allowed so far; each segment chooses
    k_i in 0..M at cost v_i f_i(k_i). O(n C M) time, vectorised over C.

    Args:
        inst: The instance.

    Returns:
        An optimal plan (solver ``"exact"``).
    """
    start = time.perf_counter()
    options = best_delays(inst)
    cost = inst.attention[:, None] * options.delay_ms
    counts = _knapsack_counts(cost, inst.capacity)
    return _plan(inst, options, counts, "exact", start)


def solve_auction(inst: Instance, bid_increment: float = 1e-6) -> Plan:
    """Greedy-by-tau plan with auction-based conflict resolution.

    See the module docstring for the algorithm.

    Args:
        inst: The instance.
        bid_increment: Epsilon, the least gain a winning bid must bring, as a
            fraction of the largest bundle value.

    Returns:
        The plan (solver ``"auction"``).
    """
    start = time.perf_counter()
    options = best_delays(inst)
    value = inst.attention[:, None] * (options.delay_ms[:, :1] - options.delay_ms)
    capacity = min(inst.capacity, inst.n_segments * inst.n_edges)
    epsilon = bid_increment * max(value.max(), np.finfo(float).tiny)
    counts = _greedy_by_tau(value, capacity)
    _resolve_by_auction(value, counts, capacity, epsilon)
    return _plan(inst, options, counts, "auction", start)


def solve_none(inst: Instance) -> Plan:
    """Baseline: cache nothing."""
    start = time.perf_counter()
    cached = np.zeros(inst.latency_ms.shape, dtype=bool)
    return Plan(cached, objective(inst, cached), "none", time.perf_counter() - start)


def solve_random(inst: Instance, rng: np.random.Generator) -> Plan:
    """Baseline: cache C sets drawn uniformly without replacement."""
    start = time.perf_counter()
    cached = np.zeros(inst.latency_ms.size, dtype=bool)
    cached[rng.choice(cached.size, size=min(inst.capacity, cached.size), replace=False)] = True
    cached = cached.reshape(inst.latency_ms.shape)
    return Plan(cached, objective(inst, cached), "random", time.perf_counter() - start)


def solve_largest_latency_first(inst: Instance) -> Plan:
    """Baseline: cache the C highest-latency sets over all segments.

    Attention and reconstruction time are ignored.
    """
    start = time.perf_counter()
    cached = np.zeros(inst.latency_ms.size, dtype=bool)
    order = np.argsort(-inst.latency_ms, axis=None, kind="stable")
    cached[order[: inst.capacity]] = True
    cached = cached.reshape(inst.latency_ms.shape)
    return Plan(
        cached, objective(inst, cached), "largest_latency_first", time.perf_counter() - start
    )


def _frozen_array(values: np.ndarray, ndim: int, name: str) -> np.ndarray:
    array = np.array(values, dtype=float)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    array.setflags(write=False)
    return array


def _plan(
    inst: Instance, options: SegmentOptions, counts: np.ndarray, solver: str, start: float
) -> Plan:
    cached = options.cached[np.arange(inst.n_segments), counts]
    return Plan(cached, objective(inst, cached), solver, time.perf_counter() - start)


def _knapsack_counts(cost: np.ndarray, capacity: int) -> np.ndarray:
    """k_i minimising sum_i cost[i, k_i] subject to sum_i k_i <= capacity."""
    n_segments, n_choices = cost.shape
    max_count = n_choices - 1
    capacity = min(capacity, n_segments * max_count)
    # best[c]: least cost of the segments so far using at most c slots.
    best = np.zeros(capacity + 1)
    choice = np.empty((n_segments, capacity + 1), dtype=np.int8)
    allowance = np.arange(capacity + 1)
    padding = np.full(max_count, np.inf)
    for i in range(n_segments):
        # windows[c, k] = best[c - k] (inf where c < k).
        windows = sliding_window_view(np.concatenate([padding, best]), n_choices)[:, ::-1]
        candidates = windows + cost[i]
        choice[i] = candidates.argmin(axis=1)  # first minimum: fewest slots on ties
        best = candidates[allowance, choice[i]]
    counts = np.empty(n_segments, dtype=np.intp)
    remaining = capacity
    for i in reversed(range(n_segments)):
        counts[i] = choice[i, remaining]
        remaining -= counts[i]
    return counts


def _greedy_by_tau(value: np.ndarray, capacity: int) -> np.ndarray:
    """Phase 1 of the auction heuristic: greedy by per-slot bundle gain."""
    n_segments, n_choices = value.shape
    max_count = n_choices - 1
    counts = np.zeros(n_segments, dtype=np.intp)
    rows = np.arange(n_segments)[:, None]
    bundle = np.arange(1, n_choices)  # delta = 1..M more slots
    free = capacity
    while free > 0:
        target = counts[:, None] + bundle
        feasible = (target <= max_count) & (bundle <= free)
        gain = value[rows, np.minimum(target, max_count)] - value[rows, counts[:, None]]
        per_slot = np.where(feasible, gain / bundle, -np.inf)
        winner, delta = np.unravel_index(np.argmax(per_slot), per_slot.shape)
        if per_slot[winner, delta] <= 0:
            break
        counts[winner] += delta + 1
        free -= delta + 1
    return counts


def _resolve_by_auction(
    value: np.ndarray, counts: np.ndarray, capacity: int, epsilon: float
) -> None:
    """Phase 2 of the auction heuristic; updates ``counts`` in place."""
    n_segments, n_choices = value.shape
    rows = np.arange(n_segments)[:, None]
    bundle = np.arange(n_choices)  # r = 0..M more slots
    while True:
        free_prices = np.where(bundle <= capacity - counts.sum(), 0.0, np.inf)
        prices = _holder_prices(value, counts)
        # P_-i(r): cheapest r slots from the free pool and every holder but i.
        before = _running_min_plus(free_prices, prices)
        after = _running_min_plus(np.where(bundle == 0, 0.0, np.inf), prices[::-1])[::-1]
        cost_without = _min_plus(before[:-1], after[1:])
        target = counts[:, None] + bundle
        gain = np.where(
            target < n_choices,
            value[rows, np.minimum(target, n_choices - 1)] - value[rows, counts[:, None]],
            -np.inf,
        )
        net = gain - cost_without
        bidder, extra = np.unravel_index(np.argmax(net), net.shape)
        if net[bidder, extra] <= epsilon:
            return
        sellers = np.flatnonzero(np.arange(n_segments) != bidder)
        released = _cheapest_release(
            np.vstack([free_prices, prices[sellers]]), int(extra)
        )
        counts[sellers] -= released[1:]
        counts[bidder] += extra


def _holder_prices(value: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """p_j(q) = V_j(k_j) - V_j(k_j - q), inf when q > k_j; shape (n, M + 1)."""
    n_choices = value.shape[1]
    rows = np.arange(value.shape[0])[:, None]
    remaining = counts[:, None] - np.arange(n_choices)
    return np.where(
        remaining >= 0,
        value[rows, counts[:, None]] - value[rows, np.maximum(remaining, 0)],
        np.inf,
    )


def _min_plus(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Truncated min-plus convolution along the last axis:
    out[..., r] = min_q first[..., q] + second[..., r - q]."""
    n_choices = first.shape[-1]
    shift = np.arange(n_choices)[None, :] - np.arange(n_choices)[:, None]  # [q, r] = r - q
    pairs = first[..., :, None] + second[..., np.maximum(shift, 0)]
    return np.where(shift >= 0, pairs, np.inf).min(axis=-2)


def _running_min_plus(initial: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Prefix min-plus convolutions: row t combines ``initial`` and curves[:t]."""
    out = np.empty((len(curves) + 1, len(initial)))
    out[0] = initial
    for t, curve in enumerate(curves):
        out[t + 1] = _min_plus(out[t], curve)
    return out


def _cheapest_release(prices: np.ndarray, total: int) -> np.ndarray:
    """Slots q_s to take from each seller s so that sum q_s = ``total`` at the
    least sum of prices[s, q_s] (sellers' curves as rows)."""
    n_sellers, n_choices = prices.shape
    shift = np.arange(n_choices)[None, :] - np.arange(n_choices)[:, None]  # [q, r] = r - q
    best = np.where(np.arange(n_choices) == 0, 0.0, np.inf)
    taken = np.empty((n_sellers, n_choices), dtype=np.intp)
    for s in range(n_sellers):
        pairs = np.where(shift >= 0, prices[s][:, None] + best[np.maximum(shift, 0)], np.inf)
        taken[s] = pairs.argmin(axis=0)
        best = pairs.min(axis=0)
    released = np.empty(n_sellers, dtype=np.intp)
    for s in reversed(range(n_sellers)):
        released[s] = taken[s, total]
        total -= released[s]
    return released
