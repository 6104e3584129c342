"""Session fixtures of the tiled-delivery tests: one tiny tiled clip, model, plan and simulation per test
session, built by whichever test needs them first and removed with pytest's temporary directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from srtools import archs, modelfile
from srtools.spool import Spool

from conftest import make_clip, run_command

HPARAMS = {"scale": 2, "channels": 4, "blocks": 1, "in_channels": 1}
LATENCIES = "5,40,80"


@pytest.fixture(scope="session")
def tiled_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiled")


@pytest.fixture(scope="session")
def tiled_clip(tiled_workdir) -> Path:
    """2 s of 192x108 mandelbrot at 12 fps (detail and motion): 2 segments of 1 s."""
    return make_clip(tiled_workdir / "clip.mp4", size="192x108", seconds=2, rate=12, source="mandelbrot")


@pytest.fixture(scope="session")
def tiled_spool(tiled_workdir) -> Path:
    """A spool with a tiny F-EDSR whose output differs from bicubic (random last layer)."""
    torch.manual_seed(0)
    model = archs.build("fedsr", HPARAMS)
    torch.nn.init.normal_(model.tail.weight, std=0.02)
    root = tiled_workdir / "spool"
    Spool(root, create=True).publish(model, modelfile.ModelInfo("fedsr", HPARAMS, 2, source="tests"))
    return root


@pytest.fixture(scope="session")
def tiled(tiled_workdir, tiled_clip) -> tuple[Path, dict]:
    """sr-tile on the clip: 2x3 grid, 3 edges, x2. Returns (directory, stdout JSON)."""
    out = tiled_workdir / "tiles"
    result = run_command("sr-tile", tiled_clip, "--out", out, "--grid", "2x3", "--sets", "3", "--scale", "2")
    assert result.returncode == 0, result.stderr.decode()
    return out, json.loads(result.stdout)


@pytest.fixture(scope="session")
def tiled_plan(tiled_workdir, tiled, tiled_spool) -> tuple[Path, Path, dict]:
    """sr-cache (measuring) on the tiled clip, one third of the sets, for a proxy reconstructing one tile at
    a time (so that caching pays on this tiny clip and the plan has cached sets). Returns (plan, profile,
    JSON)."""
    tiles, _ = tiled
    profile = tiled_workdir / "profile.json"
    result = run_command("sr-cache", tiles, "--capacity", "33%", "--latencies", LATENCIES, "--spool", tiled_spool,
                         "--save-profile", profile, "--workers", "1")
    assert result.returncode == 0, result.stderr.decode()
    path = tiled_workdir / "plan.json"
    path.write_bytes(result.stdout)
    return path, profile, json.loads(result.stdout)


@pytest.fixture(scope="session")
def simulation(tiled_workdir, tiled, tiled_spool, tiled_plan) -> dict:
    """sr-sim on the tiled clip with the plan and a plot. Edge latencies of 1-1.6 s make 1 s segments
    stall without cache; the capacity 2 is given twice (as 2 and 33%) and must be simulated once."""
    tiles, _ = tiled
    plan_path, profile, _ = tiled_plan
    result = run_command("sr-sim", tiles, "--spool", tiled_spool, "--plan", plan_path, "--profile", profile,
                         "--trials", "3", "--capacities", "0,2,33%", "--latency-range", "1000,1600",
                         "--plot", tiled_workdir / "sim.png")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)
