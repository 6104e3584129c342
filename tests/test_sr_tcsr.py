"""sr-tcsr: the same frames in the same order, refined as time allows, a bounded lag on live input."""

import io
import json
import pickle
import re
import subprocess
import threading
import time

import numpy as np
import pytest
import torch

from srtools import archs, modelfile, y4m
from srtools.spool import Spool

from conftest import expect_error, run_command, start_command

HEADER = y4m.Header(32, 18, 25)
HPARAMS = {"k": 1, "channels": 4, "flow_channels": 4, "flow_blocks": 0, "in_channels": 1}


def tiny_tcsr(lift: float = 0.1):
    """A TCSR whose output is the middle frame + ``lift`` (26 levels for 0.1): recognisable when it ran."""
    model = archs.build("tcsr", HPARAMS)
    with torch.no_grad():
        model.reconstruction[-1].bias.fill_(lift)
    return model, modelfile.ModelInfo("tcsr", HPARAMS, 2, source="tiny")


def numbered_frames(count: int) -> list[y4m.Frame]:
    """Frame i: flat luma 5 + 7 i (mod 224), chroma 100 + i (mod 150): each frame recognisable."""
    return [y4m.Frame([np.full(HEADER.plane_shapes[0], (5 + 7 * i) % 224, np.uint8),
                       *[np.full(shape, 100 + i % 150, np.uint8) for shape in HEADER.plane_shapes[1:]]])
            for i in range(count)]


def y4m_bytes(frames) -> bytes:
    sink = io.BytesIO()
    writer = y4m.Writer(sink, HEADER)
    for frame in frames:
        writer.write(frame)
    return sink.getvalue()


def frames_of(data: bytes) -> list[y4m.Frame]:
    return list(y4m.Reader(io.BytesIO(data)))


@pytest.fixture
def model_file(tmp_path):
    model, info = tiny_tcsr()
    path = tmp_path / "tcsr.safetensors"
    modelfile.save(path, model, info)
    return path


@pytest.mark.parametrize("every", [1, 3])
def test_same_frames_same_order_refined_every_nth(model_file, every):
    inputs = numbered_frames(20)
    result = run_command("sr-tcsr", "--model", model_file, "--every", every, input=y4m_bytes(inputs))
    assert result.returncode == 0, result.stderr
    outputs = frames_of(result.stdout)
    assert len(outputs) == 20
    for t, (got, sent) in enumerate(zip(outputs, inputs)):
        assert np.array_equal(got.planes[1], sent.planes[1])  # chroma passes through: frame t is frame t
        lift = got.y.astype(int).mean() - sent.y.astype(int).mean()
        assert lift == pytest.approx(26 if t % every == 0 else 0, abs=1), t
    refined = len(range(0, 20, every))
    assert re.search(rf"20 frames in .* {refined} refined".encode(), result.stderr)


def test_without_model_frames_pass_through(tmp_path):
    inputs = numbered_frames(5)
    result = run_command("sr-tcsr", "--spool", tmp_path / "not-yet", "--no-generic", input=y4m_bytes(inputs))
    assert result.returncode == 0, result.stderr
    outputs = frames_of(result.stdout)
    assert len(outputs) == 5
    assert all(np.array_equal(a, b) for got, sent in zip(outputs, inputs) for a, b in zip(got.planes, sent.planes))
    assert b"model none, 0 swaps" in result.stderr


def test_the_shipped_generic_tcsr_refines_only_when_asked_to(tmp_path):
    """Unmeasured on the stream, the generic TCSR is not run by default; --generic runs it until the
    spool has a model."""
    inputs = numbered_frames(5)
    default = run_command("sr-tcsr", "--spool", tmp_path / "not-yet", input=y4m_bytes(inputs))
    assert default.returncode == 0 and b"model none, 0 swaps" in default.stderr
    asked = run_command("sr-tcsr", "--spool", tmp_path / "not-yet", "--generic", input=y4m_bytes(inputs))
    assert asked.returncode == 0, asked.stderr
    assert b"model: generic" in asked.stderr and re.search(rb"5 frames in .* 5 refined", asked.stderr)


def test_spool_model_and_a_rejected_upload(tmp_path):
    spool = Spool(tmp_path / "spool", create=True)
    spool.publish(*tiny_tcsr())
    result = run_command("sr-tcsr", "--spool", spool.root, input=y4m_bytes(numbered_frames(4)))
    assert result.returncode == 0 and b"model: v1 (k=1" in result.stderr
    # A v2 whose shapes do not fit its hparams is refused; v1 stays in use.
    model, info = tiny_tcsr()
    modelfile.save(tmp_path / "wrong.safetensors", model, modelfile.ModelInfo("tcsr", {**HPARAMS, "channels": 8}, 2))
    (spool.models_dir / "tcsr-x2-000002.safetensors").write_bytes((tmp_path / "wrong.safetensors").read_bytes())
    spool.pointer_path("tcsr", 2).write_text('{"version": 2, "file": "models/tcsr-x2-000002.safetensors"}')
    result = run_command("sr-tcsr", "--spool", spool.root, input=y4m_bytes(numbered_frames(4)))
    assert result.returncode == 0
    assert b"rejected model v2, keeping the previous one" in result.stderr and b"weights do not fit" in result.stderr


def test_bad_model_files_are_rejected(tmp_path, model_file):
    pickled = tmp_path / "evil.safetensors"
    pickled.write_bytes(pickle.dumps({"weights": torch.zeros(3)}))
    expect_error(run_command("sr-tcsr", "--model", pickled, input=b""), 4, "unreadable model file")
    upscaler = archs.build("fedsr", {"scale": 2, "channels": 4, "blocks": 1})
    modelfile.save(tmp_path / "fedsr.safetensors", upscaler, modelfile.ModelInfo("fedsr", {"scale": 2}, 2))
    expect_error(run_command("sr-tcsr", "--model", tmp_path / "fedsr.safetensors", input=b""), 4,
                 "not one that does refine")
    expect_error(run_command("sr-tcsr", "--model", model_file, "--scale", "4", input=b""), 4, "expected x4")
    expect_error(run_command("sr-tcsr", "--model", model_file, "--every", "2", "--budget-ms", "5", input=b""), 2,
                 "not both")


def test_bad_input_is_refused_in_one_line_before_anything_is_allocated(tmp_path, model_file):
    expect_error(run_command("sr-tcsr", "--model", model_file, input=b"YUV4MPEG2 W32 H18 F0:1\nFRAME\n" + bytes(864)),
                 3, "frame rate F0:1 is not a positive fraction")
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(bytes(range(256)) * 16)
    expect_error(run_command("sr-tcsr", "--model", model_file, garbage), 3, "ffmpeg cannot decode it")
    frames = y4m_bytes(numbered_frames(2))
    expect_error(run_command("sr-tcsr", "--model", model_file, "--max-pixels", 500, input=frames), 3,
                 "32x18 frames are over the limit of 500 pixels a frame")
    huge = b"YUV4MPEG2 W16384 H16384 F25:1 Ip C444\nFRAME\n"
    expect_error(run_command("sr-tcsr", "--model", model_file, input=huge), 3, "over the limit of 8294400 pixels")


def test_budget_keeps_a_paced_live_input_within_k_frames_plus_one(model_file):
    """Live: frames arrive at 25 fps; each output frame t leaves within (k + 1) frame times of input t."""
    # A budget below the model's cost (a few ms here): only some frames are refined.
    tcsr = start_command("sr-tcsr", "--model", model_file, "--budget-ms", "0.3",
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    writer = y4m.Writer(tcsr.stdin, HEADER)
    tcsr.stdin.flush()
    while b"model:" not in (line := tcsr.stderr.readline()):  # ready: model loaded and warmed up
        assert line, "sr-tcsr ended before it was ready"
    arrived = []

    def read():
        for _ in y4m.Reader(tcsr.stdout):
            arrived.append(time.monotonic())

    reader = threading.Thread(target=read)
    reader.start()
    count, interval = 60, 1 / 25
    sent = []
    start = time.monotonic()
    for i, frame in enumerate(numbered_frames(count)):
        time.sleep(max(0.0, start + i * interval - time.monotonic()))
        sent.append(time.monotonic())
        writer.write(frame)
        tcsr.stdin.flush()
    time.sleep(3 * interval)
    tcsr.stdin.close()
    reader.join(timeout=30)
    stderr = tcsr.stderr.read().decode()
    assert tcsr.wait(timeout=30) == 0, stderr
    assert len(arrived) == count
    lags = np.array(arrived[:count - 1]) - np.array(sent[:count - 1])  # the last frame waits for the end
    assert lags.max() <= 2 * interval + 0.015, lags  # k = 1: one frame to wait for, one to process
    refined = int(re.search(r"(\d+) refined", stderr).group(1))
    assert 0 < refined < count and ", 0 late" in stderr, stderr


def test_frame_log_says_which_frames_were_refined(model_file, tmp_path):
    """--frame-log: one line per output frame, engine true exactly where the output was refined (the frames
    flushed at the end of the stream too)."""
    inputs = numbered_frames(20)
    log = tmp_path / "frames.jsonl"
    result = run_command("sr-tcsr", "--model", model_file, "--every", 3, "--frame-log", log, input=y4m_bytes(inputs))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    lifted = [got.y.astype(int).mean() - sent.y.astype(int).mean() > 13
              for got, sent in zip(frames_of(result.stdout), inputs)]
    assert [line["frame"] for line in lines] == list(range(20))
    assert [line["engine"] for line in lines] == lifted == [t % 3 == 0 for t in range(20)]
    assert {line["model"] for line in lines} == {"tiny"}  # the label of a file: its source


def test_a_model_whose_measured_gain_is_not_positive_is_not_run(tmp_path):
    """The trainer measured that it loses on this content (gain_db <= 0): frames pass through unchanged."""
    model, info = tiny_tcsr()
    info.gain_db = -0.05
    modelfile.save(tmp_path / "loses.safetensors", model, info)
    inputs = numbered_frames(8)
    result = run_command("sr-tcsr", "--model", tmp_path / "loses.safetensors", "--stats", tmp_path / "stats.json",
                         input=y4m_bytes(inputs))
    assert result.returncode == 0, result.stderr
    assert all(np.array_equal(a, b) for got, sent in zip(frames_of(result.stdout), inputs)
               for a, b in zip(got.planes, sent.planes))
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["engine_frames"] == 0 and stats["predicted_to_lose"] == 8
    assert b"8 passed through as predicted to lose" in result.stderr


def test_a_frame_whose_neighbours_show_something_else_passes_through(model_file):
    """A cut in the window: the aligned neighbours do not match the middle frame, the frame keeps its input;
    frames whose neighbours match are refined."""
    inputs = numbered_frames(9)
    for i in (4, 5, 6):  # frames 4-6 a different scene: frames 3, 4, 6 and 7 have a cut in their window
        inputs[i].planes[0][:] = 200 + (i - 4) * 3
    result = run_command("sr-tcsr", "--model", model_file, "--stats", model_file.parent / "stats.json",
                         input=y4m_bytes(inputs))
    assert result.returncode == 0, result.stderr
    lifts = [int(round(got.y.astype(int).mean() - sent.y.astype(int).mean()))
             for got, sent in zip(frames_of(result.stdout), inputs)]
    assert [lift > 20 for lift in lifts] == [True, True, True, False, False, True, False, False, True], lifts
    assert all(lift == 0 for lift, refined in zip(lifts, [lift > 20 for lift in lifts]) if not refined)
    assert json.loads((model_file.parent / "stats.json").read_text())["predicted_to_lose"] == 4
