"""sr-sim: policies compared on real reconstruction times and qualities."""

import cv2
import pytest

from conftest import run_command
from test_tiled_support import expect_error, simulation, spool, tiled, workdir

from srtools.tiled.simulate import POLICIES, playback


def test_policies_capacities_and_plot():
    data = simulation()
    rows = {(r["capacity"], r["policy"]): r for r in data["results"]}
    assert {p for _, p in rows} == set(POLICIES) and {c for c, _ in rows} == {0, 2}
    for capacity in (0, 2):
        exact = rows[capacity, "exact"]
        for policy in POLICIES:
            assert exact["objective_ms"] <= rows[capacity, policy]["objective_ms"] + 1e-6
        assert rows[capacity, "auction"]["objective_ms"] <= 1.01 * exact["objective_ms"]
    # Without cache every policy is the same; caching cuts delay, stalls, and raises quality (HR tiles).
    assert len({rows[0, p]["stall_s"] for p in POLICIES}) == 1
    assert rows[2, "exact"]["objective_ms"] < rows[0, "none"]["objective_ms"]
    assert rows[2, "exact"]["stall_s"] <= rows[0, "none"]["stall_s"]
    assert rows[2, "exact"]["psnr_db"] > rows[0, "none"]["psnr_db"]
    choice = data["tile_choice"]
    assert choice["per_tile"]["reconstruct_s"] < choice["all_dnn"]["reconstruct_s"]
    assert choice["all_bicubic"]["reconstruct_s"] <= choice["per_tile"]["reconstruct_s"]
    assert data["stall_cut"]["capacity"] == 2
    image = cv2.imread(str(workdir() / "sim.png"))
    assert image is not None and image.shape[0] > 100


def test_playback_model():
    # 1 s segments delivered in 0.5 s never stall; in 1.5 s each stalls 0.5 s after the first.
    assert playback([0.5] * 4, [1.0] * 4, buffer=2) == (0.5, 0.0)
    startup, stall = playback([1.5] * 4, [1.0] * 4, buffer=2)
    assert startup == 1.5 and stall == pytest.approx(1.5)
    # A slow first segment is start-up delay, not stall; a buffer absorbs a late spike.
    assert playback([3.0, 0.1, 0.1, 1.8, 0.1], [1.0] * 5, buffer=3) == (3.0, 0.0)


def test_bad_arguments():
    tiles, _ = tiled()
    expect_error(run_command("sr-sim", tiles), 2, "--spool")
    expect_error(run_command("sr-sim", tiles, "--spool", spool(), "--latency-range", "9"), 2, "LO,HI")
    expect_error(run_command("sr-sim", workdir() / "nothing"), 3, "no such manifest")
