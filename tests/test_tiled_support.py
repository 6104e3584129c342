"""Shared set-up for the tiled-delivery tests (no tests here): one tiny tiled clip, model and plan
per test session, built lazily by whichever test needs them first, and the error-line check."""

from __future__ import annotations

import functools
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from conftest import make_clip, run_command

from srtools import archs, modelfile
from srtools.spool import Spool

HPARAMS = {"scale": 2, "channels": 4, "blocks": 1, "in_channels": 1}
LATENCIES = "5,40,80"


def expect_error(result: subprocess.CompletedProcess, status: int, fragment: str = "") -> str:
    """The command failed with ``status`` and exactly one line on stderr, no traceback."""
    err = result.stderr.decode()
    assert result.returncode == status, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "error" in err
    assert fragment in err, err
    assert result.stdout == b""
    return err


@functools.lru_cache(maxsize=None)
def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="srtools-tiled-tests-"))


@functools.lru_cache(maxsize=None)
def clip() -> Path:
    """2 s of 192x108 mandelbrot at 12 fps (detail and motion): 2 segments of 1 s."""
    return make_clip(workdir() / "clip.mp4", size="192x108", seconds=2, rate=12, source="mandelbrot")


@functools.lru_cache(maxsize=None)
def spool() -> Path:
    """A spool with a tiny F-EDSR whose output differs from bicubic (random last layer)."""
    torch.manual_seed(0)
    model = archs.build("fedsr", HPARAMS)
    torch.nn.init.normal_(model.tail.weight, std=0.02)
    root = workdir() / "spool"
    Spool(root, create=True).publish(model, modelfile.ModelInfo("fedsr", HPARAMS, 2, source="tests"))
    return root


@functools.lru_cache(maxsize=None)
def tiled() -> tuple[Path, dict]:
    """sr-tile on the clip: 2x3 grid, 3 edges, x2. Returns (directory, stdout JSON)."""
    out = workdir() / "tiles"
    result = run_command("sr-tile", clip(), "--out", out, "--grid", "2x3", "--sets", "3", "--scale", "2")
    assert result.returncode == 0, result.stderr.decode()
    return out, json.loads(result.stdout)


@functools.lru_cache(maxsize=None)
def plan() -> tuple[Path, Path, dict]:
    """sr-cache (measuring) on the tiled clip, one third of the sets. Returns (plan, profile, JSON)."""
    tiles, _ = tiled()
    profile = workdir() / "profile.json"
    result = run_command("sr-cache", tiles, "--capacity", "33%", "--latencies", LATENCIES, "--spool", spool(),
                         "--save-profile", profile)
    assert result.returncode == 0, result.stderr.decode()
    path = workdir() / "plan.json"
    path.write_bytes(result.stdout)
    return path, profile, json.loads(result.stdout)


@functools.lru_cache(maxsize=None)
def simulation() -> dict:
    """sr-sim on the tiled clip with the plan and a plot."""
    tiles, _ = tiled()
    plan_path, profile, _ = plan()
    result = run_command("sr-sim", tiles, "--spool", spool(), "--plan", plan_path, "--profile", profile,
                         "--trials", "3", "--capacities", "0,2,33%", "--plot", workdir() / "sim.png")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


class Server:
    """A bin/ server started as a real process; its first stdout line is {"url": ...}."""

    def __init__(self, name: str, *args):
        from conftest import start_command

        self.process = start_command(name, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(10)
            raise AssertionError(f"{name} did not start: {self.process.stderr.read().decode()}")
        self.info = json.loads(line)
        self.url = self.info["url"]

    def stop(self) -> tuple[int, str]:
        if self.process.stdout.closed:
            return self.process.returncode, ""
        self.process.terminate()
        try:
            code = self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        err = self.process.stderr.read().decode()
        self.process.stdout.close()
        self.process.stderr.close()
        return code, err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)
