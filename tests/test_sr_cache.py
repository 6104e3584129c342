"""sr-cache: measured reconstruction times, both solvers, plan consistent with the manifest."""

import json
import os

import numpy as np
import pytest

from srtools.tiled.cacheplan import objective
from srtools.tiled.manifest import Manifest
from srtools.tiled.planning import build_instance, load_plan, threshold_bytes
from srtools.tiled.profile import Profile

from conftest import expect_error, run_command
from tiled_fixtures import LATENCIES


def test_plan_from_measured_profile(tiled, tiled_plan):
    tiles, _ = tiled
    plan_path, profile_path, data = tiled_plan
    m = Manifest.load(tiles)
    profile = Profile.load(profile_path, m)
    # Real timings: decoding costs something, the DNN more than bicubic on average.
    assert (profile.decode_ms > 0).all() and (profile.bicubic_ms >= profile.decode_ms).all()
    assert profile.dnn_ms.mean() > profile.bicubic_ms.mean()
    assert (profile.hr_decode_ms > 0).all() and (profile.encode_ms > 0).all()
    assert data["solver"] == "exact" and data["capacity"] == 2  # 33% of 6 sets; the optimum by default
    assert data["cached_sets"] <= 2
    objectives = data["objectives"]
    assert set(objectives) == set(data["runtimes_s"]) == {"exact", "auction", "none"}
    assert objectives["exact"] <= objectives["auction"] + 1e-6 <= objectives["none"] + 1e-6
    assert data["objective"] == objectives["exact"] < objectives["none"]
    # The objective is the weighted delay of the plan's cached sets, recomputed independently.
    loaded = load_plan(plan_path, m)
    threshold = threshold_bytes("25%", m.array("lr_bytes"))
    assert data["dnn_threshold_bytes"] == pytest.approx(threshold, abs=0.1)
    inst = build_instance(m, profile, np.array([5.0, 40, 80]), threshold, 2, workers=1)
    assert objective(inst, loaded["cached_array"]) == pytest.approx(data["objective"], abs=1e-3)
    # A proxy with two workers reconstructs two tiles at once where there are two cores.
    two = build_instance(m, profile, np.array([5.0, 40, 80]), threshold, 2, workers=2)
    assert np.allclose(two.recon_ms * min(2, os.cpu_count()), inst.recon_ms)
    assert (loaded["dnn_array"] == (m.array("lr_bytes") >= threshold)).all()
    # Each segment's delay, by hand: slowest uncached edge + its tiles' reconstruction + the cached
    # tiles' HR decode + stitch and encode.
    latency = np.array([5.0, 40, 80])
    assert data["workers"] == 1
    for i, segment in enumerate(m.segments):
        cached_tiles = [j for edge in data["segments"][i]["cached"] for j in segment.sets[edge]]
        uncached = [edge for edge in range(m.edges) if edge not in data["segments"][i]["cached"]]
        recon = np.where(loaded["dnn_array"][i], profile.dnn_ms[i], profile.bicubic_ms[i])
        expected = (max(latency[uncached], default=0.0) + sum(recon[j] for e in uncached for j in segment.sets[e])
                    + profile.hr_decode_ms[i, cached_tiles].sum() + profile.encode_ms[i])
        assert data["segments"][i]["delay_ms"] == pytest.approx(expected, abs=0.01)
    assert 0 < loaded["dnn_array"].sum() < loaded["dnn_array"].size


def test_auction_solver_from_saved_profile(tiled, tiled_plan):
    tiles, _ = tiled
    _, profile_path, exact = tiled_plan
    result = run_command("sr-cache", tiles, "--capacity", "2", "--latencies", LATENCIES, "--profile", profile_path,
                         "--solver", "auction", "--workers", "1")
    assert result.returncode == 0, result.stderr.decode()
    auction = json.loads(result.stdout)
    assert auction["solver"] == "auction"
    # The saved profile holds times rounded to 1 us, hence the tolerance.
    assert auction["objective"] == pytest.approx(exact["objectives"]["auction"], abs=0.01)
    assert auction["objectives"]["exact"] == pytest.approx(exact["objective"], abs=0.01)
    assert exact["objective"] <= auction["objective"] + 0.01


@pytest.mark.parametrize("args, status, fragment", [
    (["--capacity", "2", "--latencies", LATENCIES], 2, "--profile"),
    (["--capacity", "2", "--latencies", "5,40", "--profile", "PROFILE"], 2, "3 edges"),
    (["--capacity", "x", "--latencies", LATENCIES, "--profile", "PROFILE"], 2, "--capacity"),
    (["--capacity", "2", "--latencies", LATENCIES, "--profile", "/no/profile.json"], 3, "no such profile"),
    (["--capacity", "2", "--latencies", LATENCIES, "--profile", "PROFILE", "--dnn-threshold", "abc"], 2, "threshold"),
])
def test_bad_input(tiled, tiled_plan, args, status, fragment):
    tiles, _ = tiled
    _, profile_path, _ = tiled_plan
    args = [str(profile_path) if a == "PROFILE" else a for a in args]
    expect_error(run_command("sr-cache", tiles, *args), status, fragment)


def test_profile_of_the_old_format_is_refused(tmp_path, tiled, tiled_plan):
    tiles, _ = tiled
    _, profile_path, _ = tiled_plan
    old = json.loads(profile_path.read_text())
    for name in ("hr_decode_ms", "encode_ms"):
        del old[name]
    old["format"] = "srtools-tiled-profile/1"
    path = tmp_path / "old-profile.json"
    path.write_text(json.dumps(old))
    expect_error(run_command("sr-cache", tiles, "--capacity", "2", "--latencies", LATENCIES, "--profile", path), 3,
                 "lacks HR decode and encode times")


def test_bad_manifest(tmp_path):
    bad = tmp_path / "bad-manifest.json"
    bad.write_text('{"format": "something else"}')
    expect_error(run_command("sr-cache", bad, "--capacity", "1", "--latencies", "1"), 3, "not an sr-tile manifest")
