"""sr-serve: real processes, real frames, a real spool."""

import errno
import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from srtools import archs, modelfile, y4m
from srtools.spool import Spool
from srtools.upscale import ModelUpscaler, bicubic

from conftest import LineReader, expect_error, make_y4m, run_command, running_command


def publish(spool_dir, channels=4, blocks=1, brighten=0.0):
    """Publish an F-EDSR model; ``brighten`` (in [0, 1]) makes its output recognisable."""
    hparams = {"scale": 2, "channels": channels, "blocks": blocks}
    model = archs.build("fedsr", hparams)
    with torch.no_grad():
        model.tail.bias.fill_(brighten)
    return Spool(spool_dir, create=True).publish(model, modelfile.ModelInfo("fedsr", hparams, 2))


def frames_of(data: bytes):
    reader = y4m.Reader(io.BytesIO(data))
    return reader.header, list(reader)


@pytest.fixture(scope="module")
def small_y4m(tmp_path_factory):
    return make_y4m(tmp_path_factory.mktemp("serve") / "in.y4m", size="64x36", seconds=0.4)


def test_without_model_upscales_bicubically(tmp_path, small_y4m):
    result = run_command("sr-serve", "--spool", tmp_path, small_y4m)
    assert result.returncode == 0, result.stderr
    header, frames = frames_of(result.stdout)
    in_header, in_frames = frames_of(small_y4m.read_bytes())
    assert (header.width, header.height, header.fps) == (128, 72, in_header.fps)
    assert len(frames) == len(in_frames) == 10
    for got, src in zip(frames, in_frames):
        expected = bicubic(src, header)
        assert all(np.array_equal(a, b) for a, b in zip(got.planes, expected.planes))
    assert b"model none" in result.stderr


def test_model_output_and_stats(tmp_path, small_y4m):
    publish(tmp_path, brighten=0.2)
    result = run_command("sr-serve", "--spool", tmp_path, "--stats", tmp_path / "stats.json",
                         input=small_y4m.read_bytes())
    assert result.returncode == 0, result.stderr
    _, frames = frames_of(result.stdout)
    _, in_frames = frames_of(small_y4m.read_bytes())
    assert len(frames) == 10
    # +0.2 on the residual = +51 levels of luma where nothing clips.
    lift = np.mean([f.y.astype(float).mean() - s.y.astype(float).mean() for f, s in zip(frames, in_frames)])
    assert 30 < lift < 52
    assert re.search(rb"10 frames in .* model v1, 0 swaps, 0 bicubic fallbacks", result.stderr)
    stats = json.loads((tmp_path / "stats.json").read_text())  # --stats: the final counters as JSON
    assert (stats["frames"], stats["engine_frames"], stats["model"], stats["late"]) == (10, 10, "v1", 0)
    assert (stats["block_frames"], stats["blocks_total"], stats["block_share"]) == (0, 0, None)  # whole frames


def test_frame_log_names_the_model_of_every_frame(tmp_path, small_y4m):
    log = tmp_path / "frames.jsonl"
    result = run_command("sr-serve", "--spool", tmp_path / "none-yet", "--frame-log", log, small_y4m)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in log.read_text().splitlines()] == [
        {"frame": i, "model": None, "engine": False} for i in range(10)]  # bicubic: no model
    publish(tmp_path / "spool")
    result = run_command("sr-serve", "--spool", tmp_path / "spool", "--frame-log", log, small_y4m)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in log.read_text().splitlines()] == [
        {"frame": i, "model": "v1", "engine": True} for i in range(10)]
    expect_error(run_command("sr-serve", "-q", "--spool", tmp_path / "spool", "--frame-log", tmp_path / "no/such/f",
                             small_y4m), 1, "cannot write the frame log")


def test_decodes_mp4_input_with_ffmpeg(tmp_path, hr_clip):
    publish(tmp_path)
    result = run_command("sr-serve", "--spool", tmp_path, hr_clip)
    assert result.returncode == 0, result.stderr
    header, frames = frames_of(result.stdout)
    assert (header.width, header.height, len(frames)) == (640, 360, 75)


def write_fifo(path: Path, data: bytes, timeout: float) -> None:
    """Write ``data`` to the FIFO ``path`` once a reader has it open (a plain open blocks for ever, on a
    reader that never comes); AssertionError when none does within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            assert time.monotonic() < deadline, f"{path}: no reader within {timeout} s"
            time.sleep(0.01)
    os.set_blocking(fd, True)
    with open(fd, "wb") as out:
        out.write(data)


def read_fifo(path: Path, timeout: float) -> bytes:
    """All that the writer of the FIFO ``path`` writes until it closes it (a plain read blocks for ever,
    in open() already, on a writer that never comes); AssertionError when that takes more than
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # at once; Linux reports no EOF before a writer came
    chunks = []
    try:
        while True:
            ready = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]
            assert ready, f"{path}: not written and closed within {timeout} s"
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def test_named_fifos_in_and_out(tmp_path, small_y4m):
    fifo_in, fifo_out = tmp_path / "in.fifo", tmp_path / "out.fifo"
    os.mkfifo(fifo_in)
    os.mkfifo(fifo_out)
    with running_command("sr-serve", "--spool", tmp_path, fifo_in, "-o", fifo_out, stderr=subprocess.PIPE) as serve:
        feeder = threading.Thread(target=write_fifo, args=(fifo_in, small_y4m.read_bytes(), 60), daemon=True)
        feeder.start()
        output = read_fifo(fifo_out, 60)
        feeder.join(timeout=60)
        assert not feeder.is_alive(), "the input FIFO still being written after 60 s"
        assert serve.wait(timeout=60) == 0, serve.stderr.read()
    assert len(frames_of(output)[1]) == 10


@pytest.mark.parametrize("spool_exists", [True, False], ids=["spool", "no-spool-yet"])
def test_hot_swap_between_frames_without_drop_or_repeat(tmp_path, spool_exists):
    """A model published mid-stream takes over at a frame boundary, logged with the frame number. In a
    live chain the server may start before the spool exists: it upscales bicubically until then."""
    spool = tmp_path / "spool"
    if spool_exists:
        publish(spool)
    header = y4m.Header(48, 32)
    published_after, new_model_frames = 15, 5
    count, frames, swapped = 0, [], threading.Event()
    received = threading.Semaphore(0)
    with running_command("sr-serve", "--spool", spool, "--poll-interval", "0.05", deadline=120,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as serve:

        def feed():  # like a live source: a frame only after the previous one came out, every 20 ms or more,
            # until a few frames of the new model came out (its load and warm-up take a while on a busy machine)
            nonlocal count
            writer = y4m.Writer(serve.stdin, header)
            deadline = time.monotonic() + 60
            while not swapped.is_set() and time.monotonic() < deadline:
                writer.write(y4m.Frame([np.full(s, 100, np.uint8) for s in header.plane_shapes]))
                serve.stdin.flush()
                count += 1
                if not received.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    break  # sr-serve stopped answering: the assertions below say how
                if count == published_after + 1:
                    publish(spool, brighten=0.2)
                time.sleep(0.02)
            serve.stdin.close()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        brightened = 0
        for frame in y4m.Reader(serve.stdout):
            frames.append(frame)
            brightened += frame.y.mean() > 125  # the new model's +51 levels
            if brightened == new_model_frames:
                swapped.set()
            received.release()
        feeder.join(timeout=60)
        assert not feeder.is_alive(), "the feeder still writing after 60 s"
        stderr = serve.stderr.read().decode()
        assert serve.wait(timeout=60) == 0, stderr
    assert len(frames) == count
    found = re.search(rf"frame (\d+): switched to model v{1 + spool_exists}", stderr)
    assert found, stderr
    swap = int(found.group(1))
    means = [f.y.mean() for f in frames]
    assert published_after < swap < count
    assert all(m == pytest.approx(100, abs=1) for m in means[:swap])
    assert all(m == pytest.approx(151, abs=1) for m in means[swap:])


def test_rejected_model_keeps_previous(tmp_path, small_y4m):
    publish(tmp_path, brighten=0.2)
    spool = Spool(tmp_path)
    # A broken v2 made current: the server must warn and keep v1.
    broken = spool.models_dir / "fedsr-x2-000002.safetensors"
    broken.write_bytes(b"not a model")
    spool.pointer_path("fedsr", 2).write_text('{"version": 2, "file": "models/fedsr-x2-000002.safetensors"}')
    result = run_command("sr-serve", "--spool", tmp_path, small_y4m)
    assert result.returncode == 0
    assert b"warning: rejected model v2, keeping the previous one" in result.stderr
    assert len(frames_of(result.stdout)[1]) == 10


def test_realtime_runs_the_network_on_blocks_when_whole_frames_are_too_slow(tmp_path):
    publish(tmp_path, channels=48, blocks=8)
    clip = make_y4m(tmp_path / "fast.y4m", size="320x180", seconds=0.5, rate=200)  # 5 ms per frame
    result = run_command("sr-serve", "--spool", tmp_path, "--realtime", "--stats", tmp_path / "stats.json", clip)
    assert result.returncode == 0, result.stderr
    assert len(frames_of(result.stdout)[1]) == 100
    share = int(re.search(rb"selective SR on \d+ frames: (\d+)% of their blocks", result.stderr).group(1))
    assert share < 50  # far from the whole frame: only the blocks that fit
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["worst_lag_ms"] > 0 and re.search(rb"late \(worst lag \d+ ms of 10 allowed\)", result.stderr)
    # The counters agree with each other and with the log line.
    assert stats["engine_frames"] + stats["fallbacks"] == stats["frames"] == 100
    assert 0 < stats["block_frames"] <= stats["frames"]
    computed, reused, stale, total = (stats[f"blocks_{name}"] for name in ("computed", "reused", "stale", "total"))
    assert 0 < computed and stale <= reused and computed + reused <= total
    assert stats["block_share"] == pytest.approx((computed + reused) / total, abs=1e-4)
    assert abs(100 * stats["block_share"] - share) <= 0.5
    expect_error(run_command("sr-serve", "--spool", tmp_path, "--realtime", "--latency", "0", clip), 2, "--latency")
    slow = make_y4m(tmp_path / "slow.y4m", size="32x18", seconds=3, rate=2)
    publish(tmp_path, channels=4, blocks=1)
    result = run_command("sr-serve", "--spool", tmp_path, "--realtime", slow)
    assert b" 0 bicubic fallbacks, 6 with network output" in result.stderr  # whole frames, every one
    assert b"selective SR" not in result.stderr


def test_refuses_to_write_frames_to_a_terminal(tmp_path, small_y4m):
    primary, secondary = pty.openpty()
    result = run_command("sr-serve", "--spool", tmp_path, small_y4m, stdout=secondary)
    os.close(secondary)
    os.close(primary)
    assert result.returncode == 2
    assert b"refusing to write binary frames to a terminal" in result.stderr


@pytest.mark.parametrize("data,code,message", [
    (b"", 3, b"empty input"),
    (b"garbage\n" * 10, 3, b"not a YUV4MPEG2 stream"),
    (b"YUV4MPEG2 W64 H36 F0:1 C420jpeg\nFRAME\n" + bytes(3456), 3, b"frame rate F0:1 is not a positive fraction"),
    (b"YUV4MPEG2 W64 H36 F-25:1 C420jpeg\n", 3, b"frame rate F-25:1 is not a positive fraction"),
    (b"YUV4MPEG2 W64 H36 C420p10\n", 3, b"unsupported pixel format"),
    (b"YUV4MPEG2 W64 H36 C420jpeg\nFRAME\n" + bytes(100), 3, b"truncated frame 0"),
])
def test_bad_input(tmp_path, data, code, message):
    result = run_command("sr-serve", "--spool", tmp_path, input=data)
    assert result.returncode == code
    assert message in result.stderr
    assert b"Traceback" not in result.stderr


def test_garbage_that_ffmpeg_cannot_decode_is_bad_input(tmp_path):
    """One rule (srtools.errors): input that is not video exits 3, whether Y4M is read or ffmpeg decodes it."""
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    expect_error(run_command("sr-serve", "--spool", tmp_path, garbage), 3, "ffmpeg cannot decode it")


def vm_hwm_mb(pid: int) -> float:
    """The peak resident memory of process ``pid`` so far, in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) / 1024


def test_a_header_alone_allocates_nothing_for_its_frame_size(tmp_path):
    """The warm-up runs on a frame of at most 640x360: a 1920x1080 header costs its sender one line, and
    the model on a whole 1080p frame about 1.4 GB (the warm-up's peak before)."""
    publish(tmp_path, channels=16, blocks=4)
    with running_command("sr-serve", "--spool", tmp_path, "--threads", "1", stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE) as serve:
        serve.stdin.write(y4m.Header(1920, 1080).to_bytes())
        serve.stdin.flush()
        time.sleep(8)  # model loaded; a warm-up on the header's size would be well under way
        peak = vm_hwm_mb(serve.pid)
        out, err = serve.communicate(timeout=60)  # closes its input: the end of a stream without frames
    assert serve.returncode == 0 and b"0 frames" in err, err
    assert frames_of(out)[1] == [] and peak < 600, peak


def test_frames_over_the_limit_are_refused_before_anything_is_allocated(tmp_path):
    publish(tmp_path)
    small = y4m.Header(64, 36).to_bytes() + b"FRAME\n" + bytes(3456)
    expect_error(run_command("sr-serve", "--spool", tmp_path, "--max-pixels", 9000, input=small), 3,
                 "<stdin>: 64x36 frames (x2: 128x72) are over the limit of 9000 pixels a frame (--max-pixels")
    assert run_command("sr-serve", "--spool", tmp_path, "--max-pixels", 9216, input=small).returncode == 0
    began = time.monotonic()
    huge = b"YUV4MPEG2 W16384 H16384 F25:1 Ip C444\nFRAME\n"
    expect_error(run_command("sr-serve", "--spool", tmp_path, input=huge), 3, "over the limit of 8294400 pixels")
    assert time.monotonic() - began < 60


def test_missing_input_and_bad_model_file(tmp_path):
    expect_error(run_command("sr-serve", "--spool", tmp_path, tmp_path / "nope.mp4"), 3, "nope.mp4")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    result = run_command("sr-serve", "--model", tmp_path / "bad.safetensors", input=b"")
    assert result.returncode == 4 and b"unreadable model file" in result.stderr
    result = run_command("sr-serve", input=b"")
    assert result.returncode == 2 and b"--spool DIR, --model FILE" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_cleanly_with_whole_frames(tmp_path, signum):
    with running_command("sr-serve", "--spool", tmp_path, deadline=120,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as serve:
        header = y4m.Header(32, 18)
        writer = y4m.Writer(serve.stdin, header)
        for _ in range(3):
            writer.write(y4m.Frame([np.zeros(s, np.uint8) for s in header.plane_shapes]))
        serve.stdin.flush()
        reader = y4m.Reader(serve.stdout)
        frames = [reader.read() for _ in range(3)]  # the live source then stalls
        serve.send_signal(signum)
        assert serve.wait(timeout=30) == 130
        assert reader.read() is None and len(frames) == 3
        stderr = serve.stderr.read().decode()
    assert "sr-serve: interrupted by SIG" in stderr and "error" not in stderr and "Traceback" not in stderr
    assert re.search(r"[23] frames in .* 0 bicubic fallbacks", stderr)  # the stats line still comes


def test_bf16_precision_stays_within_a_level_or_two_of_fp32(tmp_path, small_y4m):
    hparams = {"scale": 2, "channels": 8, "blocks": 2}
    model = archs.build("fedsr", hparams)
    torch.nn.init.normal_(model.tail.weight, std=0.02)  # a real residual, not just bicubic
    modelfile.save(tmp_path / "m.safetensors", model, modelfile.ModelInfo("fedsr", hparams, 2))
    outputs = {}
    for precision in ("fp32", "bf16"):
        result = run_command("sr-serve", "--model", tmp_path / "m.safetensors", "--precision", precision, small_y4m)
        assert result.returncode == 0, result.stderr
        outputs[precision] = np.stack([f.y for f in frames_of(result.stdout)[1]]).astype(int)
    difference = np.abs(outputs["fp32"] - outputs["bf16"])
    assert difference.max() <= 3 and difference.mean() < 0.5
    assert not np.array_equal(outputs["fp32"], outputs["bf16"])  # bf16 really ran


def test_model_file_serves_until_the_spool_has_one(tmp_path, small_y4m):
    hparams = {"scale": 2, "channels": 4, "blocks": 1}
    model = archs.build("fedsr", hparams)
    with torch.no_grad():
        model.tail.bias.fill_(0.2)
    modelfile.save(tmp_path / "m.safetensors", model, modelfile.ModelInfo("fedsr", hparams, 2, source="m"))
    result = run_command("sr-serve", "--model", tmp_path / "m.safetensors", "--spool", tmp_path, small_y4m)
    assert result.returncode == 0, result.stderr
    assert re.search(rb"10 frames in .* model m, 0 swaps", result.stderr)
    _, in_frames = frames_of(small_y4m.read_bytes())
    assert all(f.y.mean() - s.y.mean() > 30 for f, s in zip(frames_of(result.stdout)[1], in_frames))


@pytest.mark.slow
def test_realtime_share_drops_while_another_process_loads_the_cpu(tmp_path):
    """Paced 25 fps input: whole frames while the CPU is free, blocks while three busy processes take it,
    whole frames again after; every frame out, in order."""
    header = y4m.Header(160, 90, 25)
    # The widest model whose whole frame takes at most 25% of the frame time on this machine (machines
    # differ by 4x): whole frames fit while the CPU is free, and not while it is loaded.
    for channels in (32, 24, 20, 16, 12, 8):
        hparams = {"scale": 2, "channels": channels, "blocks": 4}
        torch.manual_seed(0)
        model = archs.build("fedsr", hparams)
        torch.nn.init.normal_(model.tail.weight, std=0.05)  # output far from bicubic on texture
        upscaler = ModelUpscaler(model.eval(), modelfile.ModelInfo("fedsr", hparams, 2))
        upscaler.warm_up(header)
        if upscaler.cost <= 0.25 / header.fps:
            break
    Spool(tmp_path, create=True).publish(model, modelfile.ModelInfo("fedsr", hparams, 2))
    rng = np.random.default_rng(0)
    inputs = [y4m.Frame([rng.integers(0, 256, shape, dtype=np.uint8) for shape in header.plane_shapes])
              for _ in range(150)]
    outputs, hogs = [], []
    with running_command("sr-serve", "--spool", tmp_path, "--realtime", "--reuse-threshold", "0",
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as serve:
        log = LineReader(serve.stderr)
        reader = threading.Thread(target=lambda: outputs.extend(y4m.Reader(serve.stdout)), daemon=True)
        reader.start()
        writer = y4m.Writer(serve.stdin, header)
        serve.stdin.flush()
        # Start-up and warm-up (logged once the model has run on the stream's size) before the clock starts.
        log.wait_for(lambda lines: any(b"; network on " in line for line in lines), 120, "warmed up")
        try:
            start = time.monotonic()
            for i, frame in enumerate(inputs):
                if i == 50:
                    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
                if i == 100:
                    for hog in hogs:
                        hog.kill()
                time.sleep(max(0.0, start + i / 25 - time.monotonic()))
                writer.write(frame)
                serve.stdin.flush()
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
        serve.stdin.close()
        reader.join(timeout=60)
        assert not reader.is_alive(), f"the output not ended 60 s after the input: {log.text_so_far()}"
        stderr = log.text() + f"(test: {channels} channels, {1e3 * upscaler.cost:.1f} ms per frame)"
        assert serve.wait(timeout=30) == 0, stderr
    assert len(outputs) == 150
    out_header = header.resized(320, 180)
    whole = [np.abs(upscaler.upscale(i, out_header).y.astype(int) - o.y).max() <= 1 for i, o in zip(inputs, outputs)]
    free, loaded, free_again = np.mean(whole[10:50]), np.mean(whole[60:100]), np.mean(whole[115:])
    assert free >= 0.6, stderr  # free CPU: mostly whole frames
    assert loaded <= free - 0.3, stderr  # loaded: only the blocks that fit, on many frames
    assert free_again >= loaded + 0.3, stderr  # free again: whole frames return
    assert "selective SR on " in stderr
