"""Tests for srtools.tiled.cacheplan."""

import itertools

import numpy as np
import pytest

from srtools.tiled.cacheplan import (
    Instance,
    allocation_vectors,
    auction_assignment,
    best_delays,
    count_allocation_vectors,
    delay_ms,
    objective,
    segment_delays,
    slowest_delays,
    solve_auction,
    solve_exact,
    solve_largest_latency_first,
    solve_none,
    solve_random,
)

from instances import random_instance


def tiny_instance(rng: np.random.Generator, capacity: int) -> Instance:
    return Instance(
        latency_ms=rng.uniform(1, 100, (3, 3)),
        recon_ms=rng.uniform(0, 40, (3, 3)),
        attention=rng.uniform(0.1, 1.0, 3),
        capacity=capacity,
    )


def brute_force_optimum(inst: Instance) -> float:
    n_cells = inst.latency_ms.size
    best = np.inf
    for bits in itertools.product([False, True], repeat=n_cells):
        if sum(bits) <= inst.capacity:
            best = min(best, objective(inst, np.reshape(bits, inst.latency_ms.shape)))
    return best


def test_attention_is_normalised_and_arrays_are_read_only():
    inst = Instance(np.ones((2, 2)), np.ones((2, 2)), np.array([1.0, 3.0]), 1)
    np.testing.assert_allclose(inst.attention, [0.25, 0.75])
    with pytest.raises(ValueError):
        inst.latency_ms[0, 0] = 5.0


@pytest.mark.parametrize(
    "latency, recon, attention, capacity",
    [
        (np.ones((2, 2)), np.ones((2, 3)), np.ones(2), 1),  # shape mismatch
        (np.ones((2, 2)), np.ones((2, 2)), np.zeros(2), 1),  # no attention
        (-np.ones((2, 2)), np.ones((2, 2)), np.ones(2), 1),  # negative latency
        (np.ones((2, 2)), np.ones((2, 2)), np.ones(2), -1),  # negative capacity
    ],
)
def test_invalid_instances_rejected(latency, recon, attention, capacity):
    with pytest.raises(ValueError):
        Instance(latency, recon, attention, capacity)


def test_from_tiles_uses_dnn_only_for_large_tiles():
    inst = Instance.from_tiles(
        latency_ms=np.array([[10.0, 20.0]]),
        tile_sets=[[[0, 3], [1, 2]]],
        dnn_ms=np.array([[10.0, 20.0, 30.0, 40.0]]),
        bicubic_ms=np.array([[1.0, 2.0, 3.0, 4.0]]),
        tile_bytes=np.array([[500, 2000, 999, 1000]]),
        dnn_threshold_bytes=1000,
        attention=np.array([7.0]),
        capacity=1,
    )
    np.testing.assert_allclose(inst.recon_ms, [[1.0 + 40.0, 20.0 + 3.0]])
    np.testing.assert_allclose(inst.attention, [1.0])


def test_from_tiles_rejects_sets_that_do_not_partition_the_tiles():
    with pytest.raises(ValueError):
        Instance.from_tiles(
            latency_ms=np.ones((1, 2)),
            tile_sets=[[[0, 1], [1]]],
            dnn_ms=np.ones((1, 3)),
            bicubic_ms=np.ones((1, 3)),
            tile_bytes=np.ones((1, 3)),
            dnn_threshold_bytes=1,
            attention=np.ones(1),
            capacity=1,
        )


def test_segment_delay_and_objective_agree():
    inst = tiny_instance(np.random.default_rng(0), capacity=3)
    cached = np.array([[True, False, False], [True, True, True], [False, True, False]])
    delays = segment_delays(inst, cached)
    assert delays[1] == 0.0  # everything cached: no fetch, no reconstruction
    assert delays[0] == pytest.approx(
        inst.latency_ms[0, 1:].max() + inst.recon_ms[0, 1:].sum()
    )
    assert objective(inst, cached) == pytest.approx(inst.attention @ delays)


def brute_force_delays(latency: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """(M + 1,) least delay over all k-subsets of one segment, by enumeration."""
    n_edges = len(latency)
    best = np.full(n_edges + 1, np.inf)
    for mask in itertools.product([False, True], repeat=n_edges):
        k = sum(mask)
        best[k] = min(best[k], delay_ms(latency, recon, ~np.array(mask)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_best_delays_match_enumeration_and_are_monotone(seed):
    rng = np.random.default_rng(seed)
    n_edges = 1 + seed
    # Small integers make ties in latency and reconstruction time; odd seeds use continuous values.
    if seed % 2:
        inst = Instance(rng.uniform(1, 100, (8, n_edges)), rng.uniform(0, 60, (8, n_edges)), np.ones(8), 0)
    else:
        inst = Instance(rng.integers(0, 4, (8, n_edges)), rng.integers(0, 4, (8, n_edges)), np.ones(8), 0)
    options = best_delays(inst)
    assert options.delay_ms.shape == (8, n_edges + 1)
    assert (np.diff(options.delay_ms, axis=1) <= 1e-12).all()
    for i in range(8):
        np.testing.assert_allclose(options.delay_ms[i], brute_force_delays(inst.latency_ms[i], inst.recon_ms[i]))
        for k in range(n_edges + 1):
            assert options.cached[i, k].sum() == k
            assert delay_ms(inst.latency_ms[i], inst.recon_ms[i], ~options.cached[i, k]) == pytest.approx(
                options.delay_ms[i, k])


def test_the_k_slowest_are_not_always_the_best_k_sets():
    # Caching the slowest set (100 ms) leaves a 90 ms set costing 200 ms to reconstruct;
    # caching that one instead leaves 100 + 0 ms.
    inst = Instance(np.array([[100.0, 90.0, 10.0]]), np.array([[0.0, 200.0, 0.0]]), np.ones(1), 1)
    np.testing.assert_allclose(slowest_delays(inst).delay_ms, [[300.0, 290.0, 10.0, 0.0]])
    np.testing.assert_allclose(best_delays(inst).delay_ms, [[300.0, 100.0, 10.0, 0.0]])
    assert best_delays(inst).cached[0, 1].tolist() == [False, True, False]


def test_many_sets_are_solved_without_enumerating_subsets():
    # 2^40 subsets per segment would not fit in memory; the sorted-latency recurrence needs none.
    rng = np.random.default_rng(7)
    inst = Instance(rng.uniform(1, 100, (60, 40)), rng.uniform(0, 5, (60, 40)), np.ones(60), 600)
    plan = solve_exact(inst)
    assert plan.cached.sum() <= 600 and plan.objective < solve_none(inst).objective
    # The auction's allocation vectors are too many to enumerate: a clear refusal, not a MemoryError.
    with pytest.raises(ValueError, match="allocation vectors"):
        solve_auction(inst)


def test_cached_sets_cost_their_hr_decode_and_segments_their_encode():
    # Set 0: 100 ms edge, 20 ms to reconstruct, 5 ms to decode cached; set 1: 10 ms edge, 30 ms to
    # reconstruct, 50 ms to decode cached (more than reconstructing it); 7 ms to stitch and encode.
    inst = Instance(np.array([[100.0, 10.0]]), np.array([[20.0, 30.0]]), np.ones(1), 2,
                    hr_ms=np.array([[5.0, 50.0]]), segment_ms=np.array([7.0]))
    delays = {cached: segment_delays(inst, np.array([cached]))[0]
              for cached in itertools.product([False, True], repeat=2)}
    assert delays == {(False, False): 100 + 50 + 7, (True, False): 10 + 30 + 5 + 7,
                      (False, True): 100 + 20 + 50 + 7, (True, True): 5 + 50 + 7}
    # Caching both costs more than caching set 0 alone: f(2) caches at most 2 sets, here one.
    options = best_delays(inst)
    np.testing.assert_allclose(options.delay_ms, [[157.0, 52.0, 52.0]])
    assert options.cached[0, 2].tolist() == [True, False]
    np.testing.assert_allclose(slowest_delays(inst).delay_ms, [[157.0, 52.0, 62.0]])
    plan = solve_exact(inst)
    assert plan.cached.tolist() == [[True, False]] and plan.objective == pytest.approx(52.0)
    assert solve_auction(inst).objective == pytest.approx(52.0)


def test_from_tiles_sums_hr_decode_per_set():
    inst = Instance.from_tiles(np.zeros((1, 2)), [[[0, 2], [1]]], np.ones((1, 3)), np.ones((1, 3)),
                               np.ones((1, 3)), 0, np.ones(1), 1, hr_ms=np.array([[1.0, 2.0, 4.0]]),
                               segment_ms=np.array([3.0]))
    np.testing.assert_allclose(inst.hr_ms, [[5.0, 2.0]])
    np.testing.assert_allclose(inst.segment_ms, [3.0])


@pytest.mark.parametrize("seed", range(4))
def test_best_delays_with_hr_decode_match_enumeration_of_at_most_k_sets(seed):
    rng = np.random.default_rng(100 + seed)
    n_edges = 2 + seed
    inst = Instance(rng.uniform(1, 100, (6, n_edges)), rng.uniform(0, 40, (6, n_edges)), np.ones(6), 0,
                    hr_ms=rng.uniform(0, 40, (6, n_edges)), segment_ms=rng.uniform(0, 50, 6))
    options = best_delays(inst)
    for i in range(6):
        exact_k = np.full(n_edges + 1, np.inf)
        for mask in itertools.product([False, True], repeat=n_edges):
            exact_k[sum(mask)] = min(exact_k[sum(mask)], delay_ms(inst.latency_ms[i], inst.recon_ms[i],
                                                                 ~np.array(mask), inst.hr_ms[i]))
        np.testing.assert_allclose(options.delay_ms[i], np.minimum.accumulate(exact_k) + inst.segment_ms[i])
        for k in range(n_edges + 1):
            assert options.cached[i, k].sum() <= k
            assert segment_delays(inst, options.cached[:, k])[i] == pytest.approx(options.delay_ms[i, k])


@pytest.mark.parametrize("capacity", [0, 2, 5, 9])
def test_exact_and_auction_match_brute_force_with_hr_decode(capacity):
    rng = np.random.default_rng(capacity)
    for _ in range(3):
        inst = Instance(rng.uniform(1, 100, (3, 3)), rng.uniform(0, 40, (3, 3)), rng.uniform(0.1, 1.0, 3),
                        capacity, hr_ms=rng.uniform(0, 40, (3, 3)), segment_ms=rng.uniform(0, 50, 3))
        optimum = brute_force_optimum(inst)
        assert solve_exact(inst).objective == pytest.approx(optimum)
        assert solve_auction(inst).objective == pytest.approx(optimum, rel=1e-6)


@pytest.mark.parametrize("capacity", [0, 1, 2, 4, 6, 9, 12])
def test_exact_matches_brute_force(capacity):
    rng = np.random.default_rng(capacity)
    for _ in range(3):
        inst = tiny_instance(rng, capacity)
        plan = solve_exact(inst)
        assert plan.cached.sum() <= capacity
        assert plan.objective == pytest.approx(objective(inst, plan.cached))
        assert plan.objective == pytest.approx(brute_force_optimum(inst))


def test_auction_matches_exact_on_design_configuration():
    rng = np.random.default_rng(2024)
    ratios, n_non_monotone = [], 0
    for _ in range(8):
        inst = random_instance(rng)
        exact, auction = solve_exact(inst), solve_auction(inst)
        assert auction.cached.sum() <= inst.capacity
        assert auction.objective >= exact.objective - 1e-9
        ratios.append(auction.objective / exact.objective)
        tau = -np.diff(best_delays(inst).delay_ms, axis=1)
        n_non_monotone += (np.diff(tau, axis=1) > 1e-9).any(axis=1).sum()
    assert np.median(ratios) == pytest.approx(1.0, abs=1e-6) and max(ratios) <= 1.01
    # The instances exercise the non-concave case (caching one more set may save more than the last did).
    assert n_non_monotone > 0


@pytest.mark.parametrize("latency, capacity, optimum", [
    # The two hand-made instances where the previous heuristic (greedy on bundle gains plus a price-curve
    # market) was 9.4% and 4.6% worse than the optimum; reconstruction free, equal attention.
    ([[0, 0, 0, 0], [25, 18, 9, 9], [14, 14, 9, 0], [20, 20, 16, 9], [12, 12, 8, 0]], 7, 6.4),
    ([[6, 22, 25], [1, 7, 9], [15, 29, 22], [5, 19, 23], [18, 19, 5], [18, 15, 19]], 4, None),
])
def test_auction_is_optimal_where_the_bundle_heuristic_was_not(latency, capacity, optimum):
    latency = np.array(latency, dtype=float)
    inst = Instance(latency, np.zeros_like(latency), np.ones(len(latency)), capacity)
    exact = solve_exact(inst)
    assert exact.objective == pytest.approx(optimum if optimum is not None else brute_force_optimum(inst))
    assert solve_auction(inst).objective == pytest.approx(exact.objective)


def test_price_step_by_hand():
    # Three segments, y = (y1, y2) = (1, 1), so one segment caches nothing (column 0):
    #   tau_{i,k}:  k=0  k=1  k=2
    #   segment 0     0   10   30
    #   segment 1     0    8   12
    #   segment 2     0    2    5
    # Greedy gives every column to segment 0 (ties in column 0 go to the first segment).
    # With epsilon = 0.5 (one scaling round, as 0.5 > tau_max / 100):
    # 1. segment 0 holds 0, 1, 2; v_k with and without its bid differ by 0 - 0, 10 - 8, 30 - 12:
    #    it leaves column 0 to segment 1 and p_0 = 0 + 0.5.
    # 2. segment 0 holds 1, 2; bids 9.5 and 29.5 against 8 and 12: it leaves column 1 to segment 1,
    #    p_0 = 0.5 + 1.5 + 0.5 = 2.5.
    # 3. segment 1 holds 0, 1; differences 0 - 0 (segment 2 bids 0) and 8 - 7.5: it leaves column 0
    #    to segment 2, p_1 = 0 + 0.5. Nobody holds two columns: score 30 + 8 + 0 = 38, the best.
    tau = np.array([[0.0, 10.0, 30.0], [0.0, 8.0, 12.0], [0.0, 2.0, 5.0]])
    counts, prices = auction_assignment(tau, np.array([1, 1]), 0.5)
    assert counts.tolist() == [2, 1, 0]
    np.testing.assert_allclose(prices, [2.5, 0.5, 0.0])


@pytest.mark.parametrize("n_segments, n_edges, capacity", [(5, 4, 7), (6, 3, 4), (3, 3, 0), (4, 2, 8), (7, 3, 10)])
def test_allocation_vectors_are_all_feasible_vectors_in_odometer_order(n_segments, n_edges, capacity):
    vectors = allocation_vectors(n_segments, n_edges, capacity)
    brute = [y for y in itertools.product(range(capacity + 1), repeat=n_edges)
             if np.dot(range(1, n_edges + 1), y) == capacity and sum(y) <= n_segments]
    assert sorted(map(tuple, vectors.tolist())) == sorted(brute)
    assert len(vectors) == count_allocation_vectors(n_segments, n_edges, capacity)
    # The odometer: y_2 moves fastest, y_M slowest, y_1 takes the rest.
    keys = [tuple(row[:0:-1]) for row in vectors.tolist()]
    assert keys == sorted(keys)
    if capacity <= n_segments:
        assert vectors[0].tolist() == [capacity] + [0] * (n_edges - 1)
    assert count_allocation_vectors(60, 6, 90) == 113_136


def test_auction_keeps_the_best_vector_of_all():
    # The bound-guided search finds the score of evaluating every allocation vector.
    rng = np.random.default_rng(11)
    for _ in range(5):
        inst = Instance(rng.uniform(1, 100, (7, 3)), rng.uniform(0, 30, (7, 3)), rng.uniform(0.2, 1, 7), 8)
        options = best_delays(inst)
        tau = inst.attention[:, None] * (options.delay_ms[:, :1] - options.delay_ms)
        scores = [tau[np.arange(7), auction_assignment(tau, y, 1e-9)[0]].sum()
                  for y in allocation_vectors(7, 3, 8)]
        plan = solve_auction(inst)
        assert inst.attention @ (options.delay_ms[:, 0]) - plan.objective == pytest.approx(max(scores))
        assert plan.objective == pytest.approx(solve_exact(inst).objective)


def test_auction_bids_for_bundles_when_tau_is_not_monotone():
    # Segment 0 gains nothing until both sets are cached (tau = [0, 100]);
    # greedy slot by slot would take segment 1's single large gain instead.
    inst = Instance(
        latency_ms=np.array([[200.0, 200.0], [60.0, 1.0], [55.0, 1.0]]),
        recon_ms=np.zeros((3, 2)),
        attention=np.ones(3),
        capacity=2,
    )
    plan = solve_auction(inst)
    assert plan.cached[0].all()
    assert plan.objective == pytest.approx(solve_exact(inst).objective)


def test_auction_reassigns_slots_taken_by_greedy():
    # Greedy gives the first slots to segments 1 and 2 (one set each, about
    # 100 ms gained each); segment 0 needs all three slots but then gains
    # 300 ms. Only the auction phase can buy the slots back.
    inst = Instance(
        latency_ms=np.array([[300.0, 300.0, 300.0], [102.0, 1.0, 1.0], [100.0, 1.0, 1.0]]),
        recon_ms=np.zeros((3, 3)),
        attention=np.ones(3),
        capacity=3,
    )
    plan = solve_auction(inst)
    assert plan.cached[0].all()
    assert plan.objective == pytest.approx(solve_exact(inst).objective)


def test_baselines_respect_capacity_and_caching_nothing_is_worst():
    rng = np.random.default_rng(3)
    inst = random_instance(rng, n_segments=20)
    none = solve_none(inst)
    assert not none.cached.any()
    plans = [
        solve_exact(inst),
        solve_auction(inst),
        solve_random(inst, rng),
        solve_largest_latency_first(inst),
    ]
    for plan in plans:
        assert plan.cached.shape == inst.latency_ms.shape
        assert plan.cached.sum() <= inst.capacity
        assert plan.objective <= none.objective
        assert plan.objective >= plans[0].objective - 1e-9
        assert 0 < plan.runtime_s < 10  # measured, not a default
    assert plans[2].cached.sum() == plans[3].cached.sum() == inst.capacity


def test_largest_latency_first_caches_the_highest_latencies():
    inst = tiny_instance(np.random.default_rng(4), capacity=4)
    plan = solve_largest_latency_first(inst)
    highest = np.sort(inst.latency_ms, axis=None)[-4:]
    np.testing.assert_array_equal(np.sort(inst.latency_ms[plan.cached]), highest)


def test_capacity_beyond_all_sets_caches_everything():
    inst = tiny_instance(np.random.default_rng(5), capacity=50)
    for plan in (solve_exact(inst), solve_auction(inst)):
        assert plan.objective == pytest.approx(0.0)
