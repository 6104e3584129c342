"""sr-sim: policies compared on real reconstruction times and qualities."""

import cv2
import numpy as np
import pytest

from srtools.tiled.simulate import POLICIES, playback, stall_cut

from conftest import expect_error, run_command


def test_policies_capacities_and_plot(simulation, tiled_workdir):
    data = simulation
    rows = {(r["capacity"], r["policy"]): r for r in data["results"]}
    # "0,2,33%": 33% of 6 sets is 2 again, simulated once.
    assert len(data["results"]) == 2 * len(POLICIES)
    assert {p for _, p in rows} == set(POLICIES) and {c for c, _ in rows} == {0, 2}
    for capacity in (0, 2):
        exact = rows[capacity, "exact"]
        for policy in POLICIES:
            assert exact["objective_ms"] <= rows[capacity, policy]["objective_ms"] + 1e-6
        assert rows[capacity, "auction"]["objective_ms"] <= 1.01 * exact["objective_ms"]
    # Without cache every policy is the same and 1-1.6 s edges stall 1 s segments; caching the
    # slowest sets cuts delay and stalls, and raises quality (HR tiles).
    assert len({rows[0, p]["stall_s"] for p in POLICIES}) == 1
    assert rows[0, "none"]["stall_s"] > 0.1
    assert rows[2, "exact"]["objective_ms"] < rows[0, "none"]["objective_ms"]
    assert rows[2, "exact"]["stall_s"] < rows[0, "none"]["stall_s"]
    assert rows[2, "exact"]["psnr_db"] > rows[0, "none"]["psnr_db"]
    cut = data["stall_cut"]
    assert cut["capacity"] == 2 and cut["none_stall_s"] == rows[0, "none"]["stall_s"]
    assert cut["exact"] == pytest.approx(1 - rows[2, "exact"]["stall_s"] / rows[0, "none"]["stall_s"], abs=1e-3)
    assert 0 < cut["exact"] <= 1
    # Delays count the proxy's HR decode of cached tiles and its stitch + encode of every segment.
    assert data["reconstruction"]["hr_decode_ms_mean"] > 0 and data["reconstruction"]["encode_ms_mean"] > 0
    choice = data["tile_choice"]
    assert choice["per_tile"]["reconstruct_s"] < choice["all_dnn"]["reconstruct_s"]
    assert choice["all_bicubic"]["reconstruct_s"] <= choice["per_tile"]["reconstruct_s"]
    plot = tiled_workdir / "sim.png"
    assert b"Software\x00Matplotlib" in plot.read_bytes()[:200]  # drawn by matplotlib
    image = cv2.imread(str(plot))
    assert image.shape[1] >= 600 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # coloured lines


def test_stall_cut_is_relative_to_no_cache():
    rows = []
    for policy in POLICIES:
        rows.append({"capacity": 0, "capacity_share": 0.0, "policy": policy, "stall_s": 4.0})
        stall = {"none": 4.0, "exact": 1.0}.get(policy, 3.0)
        rows.append({"capacity": 2, "capacity_share": 0.25, "policy": policy, "stall_s": stall})
    cut = stall_cut(rows)
    assert cut["capacity"] == 2 and cut["exact"] == 0.75 and cut["random"] == 0.25
    no_stall = [{**r, "stall_s": 0.0} for r in rows]
    assert stall_cut(no_stall)["exact"] == 0.0


def test_playback_model():
    # 1 s segments delivered in 0.5 s never stall; in 1.5 s each stalls 0.5 s after the first.
    assert playback([0.5] * 4, [1.0] * 4, buffer=2) == (0.5, 0.0)
    startup, stall = playback([1.5] * 4, [1.0] * 4, buffer=2)
    assert startup == 1.5 and stall == pytest.approx(1.5)
    # A slow first segment is start-up delay, not stall; a buffer absorbs a late spike.
    assert playback([3.0, 0.1, 0.1, 1.8, 0.1], [1.0] * 5, buffer=3) == (3.0, 0.0)


def test_bad_arguments(tmp_path, tiled, tiled_spool):
    tiles, _ = tiled
    expect_error(run_command("sr-sim", tiles), 2, "--spool")
    expect_error(run_command("sr-sim", tiles, "--spool", tiled_spool, "--latency-range", "9"), 2, "LO,HI")
    expect_error(run_command("sr-sim", tmp_path / "nothing"), 3, "no such manifest")
    expect_error(run_command("sr-sim", tiles, "--spool", tmp_path / "empty-spool"), 2, "no x2 upscaling model")
