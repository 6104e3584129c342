"""Choose which high-resolution tile sets a proxy pre-caches.

Model (design "cache-assisted multi-source tiled delivery"): a video is cut
into n segments; the tiles of each segment are grouped into M sets and the
low-resolution version of set m is served by edge server m. A proxy near the
client can pre-cache the high-resolution version of some sets, x_im = 1, at
most C sets over the whole video. For segment i

    f_i(x_i) = max{l_im : x_im = 0} + sum{r_im : x_im = 0}
               + sum{h_im : x_im = 1} + s_i

where l_im is the latency of edge m, r_im the reconstruction time of set m
(sum over its tiles of the DNN time d_ij or the bicubic time d'_ij, DNN iff
the tile has at least ``dnn_threshold_bytes`` bytes), and the max is 0 when
every set is cached. A cached set is not fetched or reconstructed, but the
proxy still decodes its HR tiles: h_im, the sum of their decode times. Every
segment is then stitched and encoded: s_i, a constant per segment that does
not move the optimum but makes f_i the proxy's time to build the segment.
The terms are summed, as the proxy does them one after another, except that
it reconstructs ``--workers`` tiles at once: the reconstruction times of the
profile (measured one tile at a time) are divided by min(workers, CPU
cores) where the instance is built (``planning.build_instance``), so r_im is
the proxy's time on this machine (docs/benchmarks.md: the delay model against the real proxy).

The plan minimises sum_i v_i f_i(x_i) subject to sum x_im <= C, where v_i is
the viewer's attention to segment i. Convention: attention is normalised to
sum to 1 when an :class:`Instance` is built, so the objective is the
attention-weighted mean segment delay in milliseconds.

Because only the number k of cached sets of a segment couples the segments,
the problem reduces to choosing k_i per segment: f_i(k) is the smallest delay
over all subsets of at most k sets (``best_delays``) and sum_i k_i <= C is a multiple-choice
knapsack with unit weights, solved exactly by dynamic programming
(``solve_exact``, the oracle) or by the design's auction (``solve_auction``).

f_i(k) without enumerating the 2^M subsets: sort the sets by latency,
slowest first. The uncached sets U of a k-subset have a slowest member t;
every set slower than t is cached, and the other M - k - 1 members of U are
best the ones with the smallest r - h among the sets after t. So
f_i(k) = s_i + sum_m h_m + min over t <= k of [l_t + r_t - h_t + (sum of
the M - k - 1 smallest r - h after t)], O(M^2 log M) per segment. Where
decoding an HR set costs more than reconstructing it (h > r) caching can
raise a delay, so f_i(k) is the least delay caching at most k sets. The design's own rule "caching k sets
caches the k slowest" is the case t = k (``slowest_delays``); it is the best
k-subset when reconstruction costs nothing, not in general.

The design's auction (``solve_auction``):

1. Values. tau_{i,k} = v_i (f_i(0) - f_i(k)), the weighted delay saved by
   caching k sets of segment i against caching none (tau_{i,0} = 0). With
   the k slowest cached this is the design's
   [l_i1 + g_i(0) - l_{i,k+1} - g_i(k)] v_i.
2. Allocation vectors. y = (y_1..y_M), y_k = number of segments caching
   exactly k sets, with sum_k k y_k = C (C capped at n M), sum_k y_k <= n,
   enumerated by the design's odometer: start at (C, 0, ..., 0), step y_2,
   carry into y_3.., set y_1 from the rest (``allocation_vectors``).
3. Per y, greedy then auction (``auction_assignment``): column k goes to the
   y_k segments with the largest tau_{i,k}, and column 0 (cache nothing,
   tau = 0) to n - sum_k y_k segments, so there are as many slots as
   segments. A segment that got two columns is resolved by prices. Prices
   p_i start at 0, bids are tau_{i,k} - p_i; a conflicted segment's price
   rises by the least, over its columns, of the difference between v_k
   (the sum of the column's top y_k bids) with and without its bid, plus
   epsilon: it leaves that column to the best bidder outside it and keeps
   the others. Repeat until no segment holds two columns, and score the
   assignment by sum_i tau_{i,k_i}. (The design clamps bids at 0; ranking
   by the unclamped value keeps the order strict once a price passes a
   segment's value.) This is Bertsekas' auction for assigning segments to
   the slots of y: every column holds bids within epsilon of the best
   outside it, so the score is within n epsilon of the best assignment for
   that y. Small increments alone start price wars (two segments outbidding
   each other by epsilon for thousands of rounds), so the auction runs with
   increments of tau_max / 100, then 100 times smaller from the prices
   reached, down to epsilon (epsilon-scaling).
4. Keep the best y. For any prices p, sum_i p_i + sum_k (top y_k values
   of tau_{:,k} - p) bounds the score of every y from above (a Lagrangian
   relaxation of "one column per segment"; with p = 0 it is the greedy's
   score ignoring conflicts). The search takes the vector with the highest
   bound, runs the auction on it, tightens every bound with the prices it
   ended with, and stops when no bound beats the best score: the best y is
   the one evaluating them all would find, after 5 to 12 auctions
   instead of 10^5 on the design's configuration.

Since f_i(k) allows caching fewer than k sets, it never increases with k, so using exactly C slots loses
nothing, and the best y with exact f_i(k) is the knapsack optimum (to within
n epsilon). The enumeration is the cost: 113,136 vectors for n = 60, M = 6,
C = 90; ``MAX_ALLOCATION_VECTORS`` bounds it.
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
        hr_ms: (n, M) h_im, decoding set m of segment i when cached; zeros when None.
        segment_ms: (n,) s_i, stitching and encoding segment i; zeros when None.
    """

    latency_ms: np.ndarray
    recon_ms: np.ndarray
    attention: np.ndarray
    capacity: int
    hr_ms: np.ndarray | None = None
    segment_ms: np.ndarray | None = None

    def __post_init__(self) -> None:
        latency = _frozen_array(self.latency_ms, ndim=2, name="latency_ms")
        recon = _frozen_array(self.recon_ms, ndim=2, name="recon_ms")
        attention = _frozen_array(self.attention, ndim=1, name="attention")
        hr = _frozen_array(np.zeros(latency.shape) if self.hr_ms is None else self.hr_ms, ndim=2, name="hr_ms")
        fixed = _frozen_array(np.zeros(latency.shape[:1]) if self.segment_ms is None else self.segment_ms,
                              ndim=1, name="segment_ms")
        if (recon.shape != latency.shape or hr.shape != latency.shape or attention.shape != latency.shape[:1]
                or fixed.shape != attention.shape):
            raise ValueError(
                f"shape mismatch: latency {latency.shape}, recon {recon.shape}, hr {hr.shape}, "
                f"attention {attention.shape}, segment {fixed.shape}"
            )
        if attention.sum() <= 0:
            raise ValueError("attention must have a positive sum")
        if self.capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {self.capacity}")
        attention = attention / attention.sum()
        attention.setflags(write=False)
        object.__setattr__(self, "latency_ms", latency)
        object.__setattr__(self, "recon_ms", recon)
        object.__setattr__(self, "hr_ms", hr)
        object.__setattr__(self, "segment_ms", fixed)
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
        hr_ms: np.ndarray | None = None,
        segment_ms: np.ndarray | None = None,
    ) -> Instance:
        """Build an instance from per-tile measurements.

        Tile j of segment i is reconstructed by the DNN (d_ij = ``dnn_ms``)
        when it has at least ``dnn_threshold_bytes`` bytes and by bicubic
        upscaling (d'_ij = ``bicubic_ms``) otherwise; a set's reconstruction
        time, and its decode time when cached, are sums over its tiles.

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
            hr_ms: (n, J) decode time of each cached HR tile; zeros when None.
            segment_ms: (n,) stitch and encode time per segment; zeros when None.

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
        set_hr_ms = None if hr_ms is None else np.einsum("imj,ij->im", membership, np.asarray(hr_ms, dtype=float))
        return cls(latency_ms, recon_ms, np.asarray(attention, dtype=float), capacity, set_hr_ms, segment_ms)


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
            of segment i when at most k of its sets are cached.
        cached: (n, M + 1, M) bool, ``cached[i, k]`` = a subset of at most k sets reaching it.
    """

    delay_ms: np.ndarray
    cached: np.ndarray


def delay_ms(latency_ms: np.ndarray, recon_ms: np.ndarray, uncached: np.ndarray,
             hr_ms: np.ndarray | float = 0.0) -> np.ndarray:
    """The segment delay without s_i: max latency over the uncached sets (0 if none) + their
    reconstruction time + the HR decode time of the cached sets.

    The one definition of f_i - s_i; broadcasts over leading axes.

    Args:
        latency_ms / recon_ms / hr_ms: (..., M) per set.
        uncached: (..., M) bool, True for sets fetched from their edge.

    Returns:
        (...) delays in ms.
    """
    return (np.where(uncached, latency_ms, 0.0).max(axis=-1) + (recon_ms * uncached).sum(axis=-1)
            + (hr_ms * ~uncached).sum(axis=-1))


def segment_delays(inst: Instance, cached: np.ndarray) -> np.ndarray:
    """(n,) f_i in ms for a plan x, (n, M) bool."""
    return delay_ms(inst.latency_ms, inst.recon_ms, ~np.asarray(cached, dtype=bool), inst.hr_ms) + inst.segment_ms


def objective(inst: Instance, cached: np.ndarray) -> float:
    """Attention-weighted delay sum_i v_i f_i in ms for a plan x, (n, M) bool (capacity is not checked)."""
    return float(inst.attention @ segment_delays(inst, cached))


def best_delays(inst: Instance) -> SegmentOptions:
    """f_i(k), the least delay over all subsets of at most k sets, and a subset reaching it (see the
    module docstring).

    O(n M^2 log M) time without enumerating subsets, vectorised over segments.

    Args:
        inst: The instance.

    Returns:
        The per-segment options; f_i(k) is non-increasing in k.
    """
    n_segments, n_edges = inst.latency_ms.shape
    order, latency, recon, hr = _by_latency(inst)
    recon = recon - hr  # what leaving a set uncached costs over caching it
    best_ms = np.full((n_segments, n_edges + 1), np.inf)
    best_ms[:, n_edges] = 0.0
    uncached = np.zeros((n_segments, n_edges + 1, n_edges), dtype=bool)  # in latency order
    for slowest in range(n_edges):
        # The sets after `slowest`, cheapest reconstruction first, and prefix sums of their r.
        rest = np.argsort(recon[:, slowest + 1:], axis=1, kind="stable") + slowest + 1
        rest_ms = np.cumsum(np.take_along_axis(recon, rest, axis=1), axis=1)
        rest_ms = np.concatenate([np.zeros((n_segments, 1)), rest_ms], axis=1)
        for k in range(slowest, n_edges):
            others = n_edges - k - 1  # uncached sets besides `slowest`
            delay = latency[:, slowest] + recon[:, slowest] + rest_ms[:, others]
            better = np.flatnonzero(delay < best_ms[:, k])
            best_ms[better, k] = delay[better]
            uncached[better, k] = False
            uncached[better, k, slowest] = True
            uncached[better[:, None], k, rest[better, :others]] = True
    for k in range(1, n_edges + 1):  # caching fewer when caching more costs more (h > r)
        worse = np.flatnonzero(best_ms[:, k] > best_ms[:, k - 1])
        best_ms[worse, k] = best_ms[worse, k - 1]
        uncached[worse, k] = uncached[worse, k - 1]
    best_ms += (hr.sum(axis=1) + inst.segment_ms)[:, None]
    return SegmentOptions(best_ms, _in_edge_order(order, ~uncached))


def slowest_delays(inst: Instance) -> SegmentOptions:
    """f_i(k) when caching k sets caches the k slowest (the design's rule; not always the best subset).

    Args:
        inst: The instance.

    Returns:
        The per-segment options for the k slowest sets.
    """
    n_segments, n_edges = inst.latency_ms.shape
    order, latency, recon, hr = _by_latency(inst)
    cached = np.arange(n_edges)[None, :] < np.arange(n_edges + 1)[:, None]  # (M + 1, M), k slowest
    cached = np.broadcast_to(cached, (n_segments, n_edges + 1, n_edges))
    delay = delay_ms(latency[:, None, :], recon[:, None, :], ~cached, hr[:, None, :]) + inst.segment_ms[:, None]
    return SegmentOptions(delay, _in_edge_order(order, cached))


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


MAX_ALLOCATION_VECTORS = 2_000_000


def solve_auction(inst: Instance, options: SegmentOptions | None = None, epsilon: float = 1e-6,
                  max_vectors: int = MAX_ALLOCATION_VECTORS) -> Plan:
    """The design's auction: enumerate allocation vectors, greedy per column, auction for conflicts.

    See the module docstring for the algorithm.

    Args:
        inst: The instance.
        options: f_i(k) and the subsets reaching it; :func:`best_delays` when None
            (:func:`slowest_delays` gives the design's "k slowest" rule). The plan's
            objective is always the exact delay model's.
        epsilon: The least price rise, as a fraction of the largest tau.
        max_vectors: Refuse instances with more allocation vectors than this.

    Returns:
        The plan (solver ``"auction"``).

    Raises:
        ValueError: The instance has more than ``max_vectors`` allocation vectors.
    """
    start = time.perf_counter()
    options = best_delays(inst) if options is None else options
    n_segments, n_edges = inst.latency_ms.shape
    tau = inst.attention[:, None] * (options.delay_ms[:, :1] - options.delay_ms)  # (n, M + 1)
    vectors = allocation_vectors(n_segments, n_edges, min(inst.capacity, n_segments * n_edges), max_vectors)
    # y_0 = n - sum y: the segments caching nothing (column 0, tau = 0).
    slots = np.column_stack([n_segments - vectors.sum(axis=1), vectors])  # (V, M + 1)
    bounds = _lagrangian_bounds(tau, np.zeros(n_segments), slots)
    scale = max(float(tau.max()), np.finfo(float).tiny)
    rows = np.arange(n_segments)
    best_score, best_counts = -np.inf, np.zeros(n_segments, dtype=np.intp)
    while True:
        v = int(bounds.argmax())
        if bounds[v] <= best_score:
            break
        counts, prices = auction_assignment(tau, vectors[v], epsilon * scale)
        score = tau[rows, counts].sum()
        if score > best_score:
            best_score, best_counts = score, counts
        bounds[v] = -np.inf
        bounds = np.minimum(bounds, _lagrangian_bounds(tau, prices, slots))
    return _plan(inst, options, best_counts, "auction", start)


def _lagrangian_bounds(tau: np.ndarray, prices: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """(V,) upper bounds on the best score of every allocation vector, from any prices.

    Relaxing "each segment takes one column" with multipliers p_i gives
    sum_i p_i + sum_k (top y_k values of tau_{:,k} - p); with p = 0 it is the greedy's
    score ignoring conflicts.

    Args:
        tau: (n, M + 1) values.
        prices: (n,) multipliers p_i.
        slots: (V, M + 1) y_0..y_M per vector.
    """
    n_segments, n_choices = tau.shape
    top_sums = np.zeros((n_choices, n_segments + 1))
    top_sums[:, 1:] = np.cumsum(-np.sort(prices[:, None] - tau, axis=0), axis=0).T
    return prices.sum() + top_sums[np.arange(n_choices), slots].sum(axis=1)


def count_allocation_vectors(n_segments: int, n_edges: int, capacity: int) -> int:
    """How many y = (y_1..y_M) have sum_k k y_k = C and sum_k y_k <= n (exact below 2^53)."""
    # ways[c, p]: vectors over the columns so far with sum k y_k = c and sum y_k <= p.
    c, p = np.arange(capacity + 1)[:, None], np.arange(n_segments + 1)[None, :]
    ways = (c <= p).astype(float)  # column 1 alone: y_1 = c
    for k in range(2, n_edges + 1):
        total = ways.copy()
        for y in range(1, min(capacity // k, n_segments) + 1):
            total[k * y:, y:] += ways[:-k * y, :-y]
        ways = total
    return int(ways[capacity, n_segments])


def allocation_vectors(n_segments: int, n_edges: int, capacity: int,
                       max_vectors: int = MAX_ALLOCATION_VECTORS) -> np.ndarray:
    """Every allocation vector y, in the design's odometer order (y_2 fastest, (C, 0, ..., 0) first).

    Args:
        n_segments: n.
        n_edges: M.
        capacity: C, at most n M.
        max_vectors: Refuse to build more vectors than this.

    Returns:
        (V, M) int, row = (y_1..y_M) with sum_k k y_k = C and sum_k y_k <= n.

    Raises:
        ValueError: More than ``max_vectors`` vectors, or C > n M.
    """
    if capacity > n_segments * n_edges:
        raise ValueError(f"capacity {capacity} exceeds the {n_segments * n_edges} sets")
    count = count_allocation_vectors(n_segments, n_edges, capacity)
    if count > max_vectors:
        raise ValueError(f"the auction would enumerate {count} allocation vectors (n={n_segments}, M={n_edges}, "
                         f"C={capacity}), more than its bound of {max_vectors}")
    # Choose y_M, then y_{M-1}, ..., y_2 (each in its feasible range, so every prefix completes); y_1 is the rest.
    chosen = np.zeros((1, 0), dtype=np.intp)
    left, parts = np.array([capacity]), np.array([n_segments])
    for k in range(n_edges, 1, -1):
        low = np.maximum(0, left - (k - 1) * parts)  # the rest must fit in the parts left, each <= k - 1
        high = np.minimum(left // k, parts)
        reps = high - low + 1
        prefix = np.repeat(np.arange(len(left)), reps)
        y = low[prefix] + np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
        chosen = np.column_stack([chosen[prefix], y])
        left, parts = left[prefix] - k * y, parts[prefix] - y
    return np.column_stack([left, chosen[:, ::-1]])


def auction_assignment(tau: np.ndarray, vector: np.ndarray, final_increment: float) -> tuple[np.ndarray, np.ndarray]:
    """Step 3 of the auction for one allocation vector: greedy per column, then prices resolve conflicts.

    Args:
        tau: (n, M + 1) values tau_{i,k}, tau[:, 0] = 0.
        vector: (M,) y_1..y_M, with sum y <= n.
        final_increment: epsilon, added to every price rise (> 0) in the last round of
            epsilon-scaling (rounds with 100 times larger increments set the prices it starts from).

    Returns:
        (counts, prices): (n,) k_i, the column of segment i (0 = none), and (n,) final prices p_i.
    """
    column_slots = [tau.shape[0] - sum(vector), *vector]  # column 0: the segments caching nothing
    prices = np.zeros(tau.shape[0])
    increment = float(tau.max())
    while True:  # epsilon-scaling: large increments first, the prices they leave are the next start
        increment = max(increment / 100, final_increment)
        held = np.zeros(tau.shape, dtype=bool)  # held[i, k]: segment i has a slot of column k
        for k, slots in enumerate(column_slots):
            held[np.argsort(prices - tau[:, k], kind="stable")[:slots], k] = True
        while True:
            conflicted = np.flatnonzero(held.sum(axis=1) > 1)  # as many slots as segments: one holds none
            if conflicted.size == 0:
                break
            segment = conflicted[0]
            columns = np.flatnonzero(held[segment])
            bids = tau[:, columns] - prices[:, None]
            # The best bidder outside each column, and the difference its bid makes to v_k.
            outside = np.where(held[:, columns], -np.inf, bids).argmax(axis=0)
            margins = bids[segment] - bids[outside, np.arange(len(columns))]
            lost = margins.argmin()
            prices[segment] += max(margins[lost], 0.0) + increment
            held[segment, columns[lost]] = False
            held[outside[lost], columns[lost]] = True
        if increment <= final_increment:
            return held.argmax(axis=1), prices


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


def _by_latency(inst: Instance) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(order, latency, recon, hr), each (n, M): every segment's sets sorted slowest first."""
    order = np.argsort(-inst.latency_ms, axis=1, kind="stable")
    return (order, *(np.take_along_axis(a, order, axis=1) for a in (inst.latency_ms, inst.recon_ms, inst.hr_ms)))


def _in_edge_order(order: np.ndarray, cached: np.ndarray) -> np.ndarray:
    """(n, M + 1, M) cached flags in latency order -> edge order."""
    out = np.empty_like(cached)
    n_segments, n_choices, _ = cached.shape
    out[np.arange(n_segments)[:, None, None], np.arange(n_choices)[None, :, None], order[:, None, :]] = cached
    return out


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
