"""sr-push: one decode feeds a low-res H.264 + AAC stream (file or RTMP) and the pool's training pairs,
whose LR halves are the encoded stream decoded again; retries, pacing, signals, kill -9, the bound."""

import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from srtools import metrics, video
from srtools.errors import ExitStatus
from srtools.live.chain import port_listening
from srtools.live.pool import Pool
from srtools.live.push import Failure, classify_failure

from conftest import expect_error, free_port, run_command, start_command, stop_command

AV_SOURCE = "testsrc2=size=320x180:rate=25{duration}[out0];sine=frequency=440:sample_rate=48000{duration}[out1]"


def make_av_clip(path: Path, size: str = "320x180", seconds: float = 2) -> Path:
    """A 25 fps testsrc2 clip (H.264) with a sine tone (AAC)."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", "-crf", "12", "-preset", "veryfast", "-c:a", "aac",
                    str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def av_clip(tmp_path_factory) -> Path:
    return make_av_clip(tmp_path_factory.mktemp("push") / "av.mkv")


def probe(path: Path) -> dict:
    """Streams (by type) and each stream's end time from its packets."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "stream=index,codec_type,codec_name,width,height:packet=stream_index,pts_time,duration_time",
                          "-of", "json", str(path)], capture_output=True, check=True).stdout
    data = json.loads(out)
    streams = {s["codec_type"]: s for s in data["streams"]}
    for stream in streams.values():
        packets = [p for p in data["packets"] if p["stream_index"] == stream["index"]]
        stream["packets"] = len(packets)
        stream["end"] = max(float(p["pts_time"]) + float(p.get("duration_time", 0)) for p in packets)
    return streams


def summary_of(result) -> dict:
    [line] = result.stdout.decode().splitlines()
    return json.loads(line)


def pairs_of(spool: Path) -> list:
    pool = Pool(spool)
    return [pool.read(seq) for seq in pool.sequence()]


def wait_listening(port: int, timeout: float = 10) -> None:
    """Wait for a TCP listener on ``port`` without connecting (ffmpeg -listen takes one connection only)."""
    deadline = time.monotonic() + timeout
    while not port_listening(port):
        assert time.monotonic() < deadline, f"nothing listens on port {port}"
        time.sleep(0.05)


class Receiver:
    """An RTMP server: ffmpeg in listen mode copying what it receives into a file."""

    def __init__(self, port: int, output: Path):
        self.output = output
        self.process = subprocess.Popen(["ffmpeg", "-v", "error", "-y", "-listen", "1", "-i",
                                         f"rtmp://127.0.0.1:{port}/live/test", "-c", "copy", str(output)],
                                        stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(port)

    def wait(self) -> None:
        try:
            self.process.wait(15)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]


def assert_gone(pids: list[int], timeout: float = 10) -> None:
    """No orphans: every pid exits (or is a zombie waiting for init) within ``timeout``."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                break
            if state == "Z":
                break
            assert time.monotonic() < deadline, f"ffmpeg child {pid} outlived sr-push"
            time.sleep(0.05)


def wait_for_pairs(spool: Path, count: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(Pool(spool).sequence()) < count:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, f"fewer than {count} pairs after {timeout} s"
        time.sleep(0.02)


@pytest.mark.slow
def test_file_push_audio_in_sync_and_pairs_of_what_was_encoded(tmp_path, av_clip):
    out, spool = tmp_path / "out.mkv", tmp_path / "spool"
    result = run_command("sr-push", av_clip, "--to", out, "--spool", spool, "--scale", "2", "--no-pace")
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert summary["frames"] == 50 and summary["seconds"] == 2.0 and summary["fps"] == 25.0
    assert (summary["hr"], summary["lr"]) == ([320, 180], [160, 90])
    assert (summary["pairs_sampled"], summary["pairs_written"], summary["pairs_dropped"]) == (8, 8, 0)

    streams = probe(out)
    assert (streams["video"]["codec_name"], streams["video"]["width"], streams["video"]["height"]) == ("h264", 160, 90)
    assert streams["audio"]["codec_name"] == "aac" and streams["video"]["packets"] == 50
    assert abs(streams["audio"]["end"] - streams["video"]["end"]) <= 2 / 25 + 1024 / 48000  # a frame or two

    _, hr_frames = video.read_all(str(av_clip))
    _, lr_frames = video.read_all(str(out))
    pairs = pairs_of(spool)
    indices = [round(p.t * 25) for p in pairs]
    assert indices == [0, 7, 13, 19, 25, 32, 38, 44]  # 4 per second, the first frame of each quarter second
    assert [p.t for p in pairs] == [i / 25 for i in indices]
    for pair, i in zip(pairs, indices):
        assert all(np.array_equal(a, b) for a, b in zip(pair.hr.planes, hr_frames[i].planes))
        # The LR half is the encoded stream decoded again: equal to the pushed file's frame, plane for plane.
        assert all(np.array_equal(a, b) for a, b in zip(pair.lr.planes, lr_frames[i].planes))
        # Same picture: the downscaled HR frame matches LR frame i, not its neighbours.
        shrunk = cv2.resize(pair.hr.y, (160, 90), interpolation=cv2.INTER_AREA)
        here = metrics.psnr(shrunk, pair.lr.y)
        assert here > 30
        for j in (i - 1, i + 1):
            if 0 <= j < 50:
                assert here > metrics.psnr(shrunk, lr_frames[j].y) + 3
    # One run of 5 consecutive frames every 2 s (TCSR's material): frames 0-4, luma, HR and decoded LR aligned.
    assert (summary["runs_written"], summary["runs_dropped"]) == (1, 0)
    [run] = [Pool(spool).read_run(seq) for seq in Pool(spool).sequence("run")]
    assert run.t == 0.0 and run.hr.shape == (5, 180, 320) and run.lr.shape == (5, 90, 160)
    for i in range(5):
        assert np.array_equal(run.hr[i], hr_frames[i].y) and np.array_equal(run.lr[i], lr_frames[i].y)
    assert list((spool / "tmp").iterdir()) == []


@pytest.mark.slow
def test_stream_time_in_the_pool_goes_on_across_pushes(tmp_path, av_clip):
    """A restarted publisher's pairs are newer than its earlier ones (the trainer weights recent pairs)."""
    spool = tmp_path / "spool"
    for name in ("first.mkv", "second.mkv"):
        result = run_command("sr-push", av_clip, "--to", tmp_path / name, "--spool", spool, "--no-pace")
        assert result.returncode == 0, result.stderr
    pool = Pool(spool)
    times = [pool.read(seq).t for seq in pool.sequence()]
    assert times == sorted(times) and len(times) == 16
    assert summary_of(result)["time_base"] == times[7] + 1.0  # the second push starts 1 s after the first's newest
    assert times[8] == times[7] + 1.0
    runs = [pool.read_run(seq).t for seq in pool.sequence("run")]
    assert runs == [0.0, times[8]]


@pytest.mark.slow
def test_a_size_not_a_multiple_of_twice_the_scale_is_cropped_into_a_transport_stream(tmp_path):
    clip = make_av_clip(tmp_path / "odd.mkv", size="330x186", seconds=1)
    out, spool = tmp_path / "out.ts", tmp_path / "spool"
    result = run_command("sr-push", clip, "--to", out, "--spool", spool, "--scale", "4", "--no-pace")
    assert result.returncode == 0, result.stderr
    assert (summary_of(result)["hr"], summary_of(result)["lr"]) == ([328, 184], [82, 46])  # multiples of 8, top-left
    streams = probe(out)
    assert (streams["video"]["width"], streams["video"]["height"]) == (82, 46) and "audio" in streams
    pair = pairs_of(spool)[0]
    assert pair.hr.y.shape == (184, 328) and pair.lr.y.shape == (46, 82)


@pytest.mark.slow
def test_push_to_an_rtmp_server(tmp_path, av_clip):
    port = free_port()
    receiver = Receiver(port, tmp_path / "received.flv")
    result = run_command("sr-push", av_clip, "--to", f"rtmp://127.0.0.1:{port}/live/test", "--spool",
                         tmp_path / "spool", "--no-pace", timeout=60)
    receiver.wait()
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert summary["destination"] == f"rtmp://127.0.0.1:{port}/live/***"  # the stream key stays out of logs
    assert b"/live/test" not in result.stderr
    streams = probe(receiver.output)
    assert streams["video"]["codec_name"] == "h264" and streams["video"]["width"] == 160
    assert streams["video"]["packets"] == 50 and streams["audio"]["codec_name"] == "aac"


@pytest.mark.slow
def test_a_refused_connection_is_retried_then_fails_in_one_line(tmp_path, av_clip):
    port = free_port()  # nothing listens there
    began = time.monotonic()
    result = run_command("sr-push", av_clip, "--to", f"rtmp://127.0.0.1:{port}/live/test", "--spool",
                         tmp_path / "spool", "--no-pace", "--retries", "2", "-q", timeout=60)
    elapsed = time.monotonic() - began
    lines = result.stderr.decode().splitlines()
    assert result.returncode == ExitStatus.FFMPEG_FAILED, lines
    assert 3 <= elapsed < 10  # waits of 1 and 2 s
    assert [line.split(";")[-1] for line in lines[:-1]] == [" retry 1 of 2 in 1 s", " retry 2 of 2 in 2 s"]
    assert lines[-1] == (f"sr-push: error: rtmp://127.0.0.1:{port}/live/***: Connection refused "
                         "(gave up after 2 retries)")
    assert result.stdout == b""


@pytest.mark.slow
def test_a_server_that_appears_after_the_first_failure_is_reached(tmp_path, av_clip):
    port = free_port()
    push = start_command("sr-push", av_clip, "--to", f"rtmp://127.0.0.1:{port}/live/test", "--spool",
                         tmp_path / "spool", "--no-pace", "--retries", "3", "-q", stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    first = push.stderr.readline().decode()
    assert "Connection refused; retry 1 of 3 in 1 s" in first, first
    receiver = Receiver(port, tmp_path / "received.flv")
    out, err = push.communicate(timeout=60)
    receiver.wait()
    assert push.returncode == 0, err
    summary = json.loads(out)
    assert summary["attempts"] >= 2 and summary["frames"] == 50
    streams = probe(receiver.output)
    assert streams["video"]["packets"] == 50 and "audio" in streams


@pytest.mark.slow
def test_a_dropped_connection_resumes_a_file_where_the_delivered_stream_stopped(tmp_path):
    clip = make_av_clip(tmp_path / "clip.mkv", seconds=3)
    port, spool = free_port(), tmp_path / "spool"
    first = Receiver(port, tmp_path / "first.flv")
    push = start_command("sr-push", clip, "--to", f"rtmp://127.0.0.1:{port}/live/test", "--spool", spool, "-q",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_pairs(spool, 4, push)  # about a second streamed, in real time
    first.process.kill()
    first.wait()
    second = Receiver(port, tmp_path / "second.flv")
    out, err = push.communicate(timeout=60)
    second.wait()
    assert push.returncode == 0, err
    assert "; retry 1 of 5 in 1 s" in err.decode()
    summary = json.loads(out)
    assert summary["attempts"] == 2 and summary["frames"] == 75
    resumed = probe(second.output)["video"]["packets"]
    assert 15 < resumed < 60  # from about where the first connection stopped, not from the start
    times = [pair.t for pair in pairs_of(spool)]
    assert times == sorted(set(times)) and times[-1] >= 2.5  # stream time goes on across the reconnection


@pytest.mark.slow
def test_a_file_is_paced_at_its_frame_rate(tmp_path, av_clip):
    began = time.monotonic()
    result = run_command("sr-push", av_clip, "--to", tmp_path / "out.flv", "--spool", tmp_path / "spool")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - began >= 1.8 and summary_of(result)["wall_s"] >= 1.8


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_ffmpeg_cleanly(tmp_path, signum):
    out, spool = tmp_path / "out.mkv", tmp_path / "spool"
    push = start_command("sr-push", "--input-format", "lavfi", AV_SOURCE.format(duration=""), "--to", out,
                         "--spool", spool, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_pairs(spool, 4, push)  # a second of live stream
    pids = children(push.pid)
    assert len(pids) == 2
    stdout, stderr = stop_command(push, signum)
    assert push.returncode == ExitStatus.INTERRUPTED
    assert stderr.decode().splitlines()[-1].startswith("sr-push: interrupted")
    summary = json.loads(stdout)
    assert summary["interrupted"] and summary["frames"] > 19 and summary["pairs_written"] >= 4  # pair 4 is frame 19
    assert_gone(pids, timeout=1)  # already reaped by sr-push
    streams = probe(out)  # the trailer was written: a complete file
    assert streams["video"]["packets"] == summary["frames"] and "audio" in streams


@pytest.mark.slow
def test_kill_9_during_pool_writes_leaves_a_readable_pool_and_no_ffmpeg(tmp_path):
    spool = tmp_path / "spool"
    push = start_command("sr-push", "--input-format", "lavfi", AV_SOURCE.format(duration=":duration=60"), "--to",
                         tmp_path / "out.mkv", "--spool", spool, "--no-pace", "--pair-rate", "25",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_pairs(spool, 10, push)  # unpaced, every frame sampled: the writer is always busy
    pids = children(push.pid)
    os.kill(push.pid, signal.SIGKILL)
    push.communicate()
    assert_gone(pids)  # ffmpeg exits on its broken pipes
    pool = Pool(spool)
    seqs = pool.sequence()
    assert len(seqs) >= 10 and seqs == list(range(1, len(seqs) + 1))
    for seq in seqs:  # every pair present is whole
        pair = pool.read(seq)
        assert pair.hr.y.shape == (180, 320) and pair.lr.y.shape == (90, 160) and pair.t == (seq - 1) / 25


@pytest.mark.slow
def test_the_pool_never_holds_more_than_max_pairs(tmp_path):
    spool = tmp_path / "spool"
    push = start_command("sr-push", "--input-format", "lavfi", AV_SOURCE.format(duration=":duration=4"), "--to",
                         tmp_path / "out.flv", "--spool", spool, "--no-pace", "--pair-rate", "25", "--max-pairs", "5",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    largest = 0
    while push.poll() is None:
        largest = max(largest, len(Pool(spool).sequence()))
    stdout, stderr = push.communicate()
    assert push.returncode == 0, stderr
    assert 0 < largest <= 5 and summary_of(subprocess.CompletedProcess([], 0, stdout))["pairs_written"] == 100
    assert Pool(spool).sequence() == [96, 97, 98, 99, 100]


def test_usage_and_input_errors_are_one_line(tmp_path, av_clip):
    spool = tmp_path / "spool"
    expect_error(run_command("sr-push", tmp_path / "none.mp4", "--to", tmp_path / "o.flv", "--spool", spool),
                 ExitStatus.BAD_INPUT, "none.mp4: no such file")
    expect_error(run_command("sr-push", av_clip, "--to", tmp_path / "fifo", "--spool", spool),
                 ExitStatus.USAGE, "add --output-format")
    expect_error(run_command("sr-push", av_clip, "--to", "http://host/live/key", "--spool", spool),
                 ExitStatus.USAGE, "http://host/live/***: cannot tell the container")
    expect_error(run_command("sr-push", av_clip, "--to", tmp_path / "o.flv", "--spool", spool, "--bitrate", "fast"),
                 ExitStatus.USAGE, "bit rate")
    expect_error(run_command("sr-push", av_clip, "--to", "-", "--spool", spool), ExitStatus.USAGE, "--to -")
    expect_error(run_command("sr-push", "--input-format", "lavfi", "nosuchsource", "--to", tmp_path / "o.flv",
                             "--spool", spool), ExitStatus.FFMPEG_FAILED, "nosuchsource")


# ffmpeg's stderr (-loglevel error) when its tee's destination refuses the connection.
REFUSED = ["[rtmp @ 0x55b1b27604c0] Cannot open connection tcp://127.0.0.1:9?tcp_nodelay=0",
           "[tee @ 0x55b1b26d6d00] Slave '[onfail=abort:f=flv]rtmp://127.0.0.1:9/live/x': error opening: "
           "Connection refused",
           "[tee @ 0x55b1b26d6d00] Slave muxer #0 failed, aborting.",
           "Could not write header for output file #0 (incorrect codec parameters ?): Connection refused",
           "Error initializing output stream 0:0 -- "]


def test_a_failed_destination_is_retried_and_anything_else_is_fatal_with_ffmpegs_telling_line():
    assert classify_failure(0, REFUSED, network=True) is None
    assert classify_failure(1, REFUSED, network=True) == Failure("Connection refused", retryable=True)
    assert classify_failure(1, REFUSED[2:3], network=True) == Failure("connection failed", retryable=True)
    # A file destination is never retried; the generic epilogue is not the message.
    assert classify_failure(1, REFUSED, network=False) == Failure(
        "ffmpeg exited with status 1: Could not write header for output file #0 (incorrect codec parameters ?): "
        "Connection refused", retryable=False)
    # The input failed, not the destination.
    assert classify_failure(1, ["in.mp4: No such file or directory"], network=True) == Failure(
        "ffmpeg exited with status 1: in.mp4: No such file or directory", retryable=False)
    assert classify_failure(255, [], network=True) == Failure("ffmpeg exited with status 255: (no message)",
                                                              retryable=False)


def video_packet_bytes(path: Path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=size",
                          "-of", "csv=p=0", str(path)], capture_output=True, check=True, text=True).stdout
    return sum(int(line.split(",")[0]) for line in out.split())


def spool_with_the_push_sides_lines(spool: Path) -> Path:
    """A push spool where sr-monitor, sr-train --watch and sr-upload have appended their JSON lines (as the
    push side's service has them do), and a training request is pending."""
    (spool / "requests").mkdir(parents=True)
    (spool / "requests" / "request-000000040.json").write_text("{}")
    (spool / "monitor.jsonl").write_text(
        '{"t": 9.75, "pair": 39, "psnr": 33.0, "bicubic_psnr": 31.5, "model": 1, "request": false}\n'
        '{"t": 10.0, "pair": 40, "psnr": 33.25, "bicubic_psnr": 31.5, "model": 2, "request": true}\n')
    (spool / "train.jsonl").write_text('{"event": "session", "reason": "request 40", "pairs": 12}\n'
                                       '{"event": "published", "version": 2, "gain_db": 1.5}\n')
    (spool / "upload.jsonl").write_text('{"arch": "fedsr", "version": 2, "status": "uploaded", "http": 201}\n')
    return spool


@pytest.mark.slow
def test_status_lines_and_the_video_bit_rate_sent(tmp_path):
    clip = make_av_clip(tmp_path / "av.mkv", seconds=4)
    out, spool = tmp_path / "out.ts", spool_with_the_push_sides_lines(tmp_path / "spool")
    result = run_command("sr-push", clip, "--to", out, "--spool", spool, "--status-every", 1)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.decode().splitlines() if line.startswith("sr-push: status: ")]
    assert len(lines) >= 2, result.stderr  # a paced 4 s push, one line a second
    last = lines[-1]
    assert "pairs " in last and "gain +1.75 dB (v2)" in last, last
    assert "training: v2 published (+1.50 dB held out), 1 request pending" in last, last
    assert "upload: v2 uploaded " in last and " s ago" in last, last
    assert int(re.search(r"video (\d+) kbit/s", last).group(1)) > 0, last
    summary = summary_of(result)
    # The bytes counted on their way to the decoder are the video stream that went out (NUT's framing aside).
    assert summary["video_bytes"] == pytest.approx(video_packet_bytes(out), rel=0.05)
    assert summary["video_kbit_s"] == pytest.approx(8 * summary["video_bytes"] / 4 / 1e3, rel=0.01)


@pytest.mark.slow
def test_status_line_on_a_terminal(tmp_path):
    """On a terminal (a pseudo-terminal here) the status is one line rewritten in place, no log lines."""
    clip = make_av_clip(tmp_path / "av.mkv", seconds=4)
    spool = spool_with_the_push_sides_lines(tmp_path / "spool")
    parent, child = pty.openpty()
    process = start_command("sr-push", clip, "--to", tmp_path / "out.ts", "--spool", spool, stdout=subprocess.PIPE,
                            stderr=child)
    os.close(child)
    seen = b""
    try:
        while True:
            if select.select([parent], [], [], 60)[0]:
                try:
                    chunk = os.read(parent, 65536)
                except OSError:  # EIO: the terminal's last writer has gone
                    break
                if not chunk:
                    break
                seen += chunk
            else:
                raise AssertionError(f"no output for 60 s: {seen!r}")
        stdout = process.stdout.read()
        assert process.wait(30) == 0, seen
    finally:
        process.kill()
        process.wait()
        os.close(parent)
        process.stdout.close()
    text = seen.decode(errors="replace")
    drawn = [part for part in re.split(r"\r\x1b\[K|\r", text) if "kbit/s" in part]
    assert len(drawn) >= 2, text  # redrawn in place, every second
    assert "gain +1.75 dB (v2)" in drawn[-1] and "status:" not in text
    assert json.loads(stdout)["frames"] == 100
