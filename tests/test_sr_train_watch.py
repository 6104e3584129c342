"""sr-train --watch: online training on a real pool, the modes, the lock, the stopping rule, kill -9."""

import json
import shutil
import subprocess
import sys
import time

import pytest

from srtools import archs, loader
from srtools.live.pool import Pool
from srtools.spool import Spool
from srtools.training import STRENGTHS

from conftest import expect_error, fill_pool, run_command, start_command, stop_command

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pool_spool(tmp_path_factory):
    """A spool whose pool holds 20 pairs of a 4 s 256x144 testsrc2 clip (HR + decoded default degradation)."""
    root = tmp_path_factory.mktemp("watch")
    hr = root / "hr.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=256x144:rate=25:duration=4",
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", "-crf", "12", str(hr)], check=True)
    return fill_pool(hr, root / "spool")


@pytest.fixture
def spool(tmp_path, pool_spool):
    shutil.copytree(pool_spool, tmp_path / "spool")
    return tmp_path / "spool"


class Watcher:
    """sr-train --watch as a real process whose JSON events are read as they come (killed at teardown)."""

    started: list = []

    def __init__(self, spool, *args, size=("--channels", "8", "--blocks", "1")):
        self.process = start_command("sr-train", "--watch", "--spool", spool, *size, "--threads", "1",
                                     *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.events = []
        Watcher.started.append(self.process)

    def until(self, event: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"exited before {event}: {self.process.stderr.read().decode()}")
            self.events.append(json.loads(line))
            if self.events[-1]["event"] == event:
                return self.events[-1]
        raise AssertionError(f"no {event} event within {timeout} s: {self.events}")

    def stop(self) -> tuple[int, str]:
        _, err = stop_command(self.process, timeout=60)  # drains both pipes: a full one would block the trainer
        return self.process.returncode, err.decode()


@pytest.fixture(autouse=True)
def no_trainer_left_behind():
    yield
    while Watcher.started:
        process = Watcher.started.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def current_gain(spool) -> float:
    model = loader.load_current(Spool(spool), archs.UPSCALE, 2)
    assert model is not None
    return model[1].gain_db


def test_once_trains_one_session_publishes_and_ends_cleanly_on_sigterm(spool):
    watcher = Watcher(spool, "--mode", "once", "--max-seconds", "8")
    session = watcher.until("session")
    assert session["reason"] == "once" and session["pairs"] == 20 and session["start_model"] is None
    assert session["start"] == "bicubic"  # no generic model ships for 8x1
    stopped = watcher.until("stopped")
    assert stopped["reason"] == "budget" and stopped["published"]
    assert current_gain(spool) > 0  # starts as bicubic (gain 0), learns in seconds
    time.sleep(2)
    code, err = watcher.stop()
    assert code == 130 and "Traceback" not in err
    assert [e["event"] for e in watcher.events].count("session") == 1  # once: idle afterwards


def test_the_default_size_starts_from_the_generic_model_and_publishes_it_at_once(spool):
    watcher = Watcher(spool, "--mode", "once", "--max-seconds", "30", size=())
    session = watcher.until("session")
    assert session["start"] == "generic" and session["start_model"] is None and session["start_gain_db"] > 0.2
    published = watcher.until("published", timeout=10)
    assert published["steps"] == 0 and published["gain_db"] == session["start_gain_db"]
    assert current_gain(spool) == published["gain_db"]
    watcher.stop()


def test_a_second_trainer_on_the_same_spool_is_refused(spool):
    watcher = Watcher(spool, "--mode", "once", "--max-seconds", "30")
    watcher.until("session")
    result = run_command("sr-train", "--watch", "--spool", spool, timeout=60)
    expect_error(result, 6, "another online trainer")
    watcher.stop()


def test_adaptive_trains_without_a_model_then_on_requests_and_stops_by_the_rule(spool):
    watcher = Watcher(spool, "--max-seconds", "90", "--stop-db", "0.05")
    first = watcher.until("session")
    assert first["reason"] == "no model"
    stopped = watcher.until("stopped", timeout=120)
    assert stopped["reason"] in ("threshold", "plateau") and stopped["seconds"] < 60  # well before the budget
    version = Spool(spool).current("fedsr", 2).version
    time.sleep(2.5)
    assert [e["event"] for e in watcher.events].count("session") == 1  # idle without a request
    (spool / "requests").mkdir(exist_ok=True)
    (spool / "requests" / "request-000000012.json").write_text('{"format": "srtools-request/1"}')
    second = watcher.until("session")
    assert second["reason"] == "request 12" and second["start_model"] == version  # warm start
    watcher.until("stopped")
    assert list((spool / "requests").iterdir()) == []  # consumed
    watcher.stop()


def test_a_request_with_an_empty_pool_waits_for_pairs(tmp_path, pool_spool):
    spool = tmp_path / "spool"
    Pool(spool, create=True)
    watcher = Watcher(spool, "--max-seconds", "3", "--poll-interval", "0.2")
    time.sleep(3)
    assert watcher.process.poll() is None and watcher.events == []
    shutil.copytree(pool_spool / "pool", spool / "pool", dirs_exist_ok=True)
    assert watcher.until("session")["pairs"] == 20
    watcher.stop()


def test_kill_9_at_any_moment_leaves_a_loadable_current_model(spool):
    # continuous, a short session and a low bar to publish: versions come every few seconds
    for delay in (4.0, 6.5, 9.0):
        watcher = Watcher(spool, "--mode", "continuous", "--max-seconds", "2")
        time.sleep(delay)
        watcher.process.kill()
        watcher.process.wait()
        if Spool(spool).current("fedsr", 2) is not None:
            assert current_gain(spool) > 0
        for path in (spool / "models").iterdir():  # every version file is whole
            loader.load(path, archs.UPSCALE, 2)
    assert Spool(spool).current("fedsr", 2) is not None


KILLED_MID_PUBLISH = """
import os, sys
from srtools import modelfile
from srtools.live.watchtrain import OnlineTrainer, WatchConfig
from srtools.spool import Spool
from srtools.training import TrainConfig
real_save, saves = modelfile.save, []
def save_then_die(path, model, info):
    real_save(path, model, info)
    saves.append(path)
    if len(saves) == 2:
        os._exit(9)  # the second version is written under tmp/ but not yet linked into place
modelfile.save = save_then_die
config = WatchConfig(mode="continuous", session=TrainConfig(max_seconds=3, eval_every=1), publish_min_db=0.0)
trainer = OnlineTrainer(Spool(sys.argv[1], create=True), 2, config)
while True:
    trainer.tick()
"""


def test_the_trainer_killed_mid_publish_leaves_the_previous_version_current(spool):
    result = subprocess.run([sys.executable, "-c", KILLED_MID_PUBLISH, str(spool)], timeout=120)
    assert result.returncode == 9
    assert Spool(spool).versions("fedsr", 2) == [1] and Spool(spool).current("fedsr", 2).version == 1
    assert current_gain(spool) >= 0  # loadable, and never worse than where it started (bicubic)


@pytest.mark.parametrize("args, message", [
    ([], "--hr is required"),
    (["--watch", "--hr", "x.mp4"], "drop --hr"),
    (["--watch", "--arch", "tcsr"], "drop --hr"),
])
def test_watch_and_offline_options_do_not_mix(tmp_path, args, message):
    expect_error(run_command("sr-train", "--spool", tmp_path / "s", *args), 2, message)


@pytest.fixture(scope="module")
def runs_spool(tmp_path_factory):
    """A pool of pairs and runs (5 consecutive frames every second) of a 4 s 256x144 moving testsrc2 clip."""
    root = tmp_path_factory.mktemp("runs")
    hr = root / "hr.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=256x144:rate=25:duration=4",
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", "-crf", "12", str(hr)], check=True)
    return fill_pool(hr, root / "spool", runs_every=25)


def test_tcsr_trains_in_the_time_f_edsr_leaves_and_a_request_preempts_it(tmp_path, runs_spool):
    spool = tmp_path / "spool"
    shutil.copytree(runs_spool, spool)
    watcher = Watcher(spool, "--max-seconds", "60", "--stop-db", "0.05", "--refine-seconds", "60",
                      "--poll-interval", "0.5")
    assert watcher.until("session")["arch"] == "fedsr"
    assert watcher.until("stopped", timeout=120)["arch"] == "fedsr"
    refine = watcher.until("session")
    assert refine["arch"] == "tcsr" and refine["reason"] == "idle" and refine["runs"] == 4
    assert refine["upscaler"] == Spool(spool).current("fedsr", 2).version  # on the current F-EDSR's output
    # From the shipped generic TCSR, its correction first scaled to what this stream's held-out runs want.
    assert refine["start"] == "generic" and refine["start_strength"] in STRENGTHS
    time.sleep(3)  # TCSR trains for a while...
    (spool / "requests").mkdir(exist_ok=True)
    (spool / "requests" / "request-000000030.json").write_text('{"format": "srtools-request/1"}')
    asked = time.monotonic()
    stopped = watcher.until("stopped", timeout=30)
    assert stopped["arch"] == "tcsr" and stopped["reason"] == "preempted"
    session = watcher.until("session", timeout=30)
    assert session["arch"] == "fedsr" and session["reason"] == "request 30"
    assert time.monotonic() - asked < 10  # F-EDSR's answer to a scene change is not kept waiting
    for path in (spool / "models").glob("tcsr-*"):  # whatever TCSR published loads as a refiner
        loader.load(path, archs.REFINE, 2)
    watcher.stop()


def test_a_camera_that_changes_resolution_starts_a_new_scene_instead_of_crashing(tmp_path, pool_spool):
    """Pairs of a new size after those of an old one: the trainer trains on the new size, restart after restart."""
    spool = tmp_path / "spool"
    shutil.copytree(pool_spool, spool)  # 20 pairs of 256x144 up to t = 3.8 s
    hr = tmp_path / "wide.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x176:rate=25:duration=2",
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", "-crf", "12", str(hr)], check=True)
    fill_pool(hr, spool, t0=10.0)  # 10 more, of 320x176
    for _ in range(2):
        watcher = Watcher(spool, "--mode", "once", "--max-seconds", "3")
        session = watcher.until("session")
        assert session["pairs"] == 10 and session["t_first"] == 10.0
        assert watcher.until("stopped")["published"]
        code, err = watcher.stop()
        assert code == 130 and "Traceback" not in err and "internal error" not in err
