"""sr-live: a real RTMP publisher, the real server chain (ffmpeg ingest, sr-serve, sr-tcsr, sr-hls), the ladder and
the statistics it serves, teardown."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from srtools.live.chain import port_listening, rtmp_port

from conftest import check_metrics, free_port, run_command, start_command
from test_sr_hls import first_frame_times, flash_beep_offsets, master_variants
from test_sr_receive import TOKEN, model_file, put, write_token

pytestmark = pytest.mark.slow



def publish(url: str, seconds: float = 4, size: str = "320x180", wait: bool = True, rate: int = 25,
            audio: bool = True) -> subprocess.Popen:
    """A broadcaster: testsrc2 and a tone (or no audio), paced, H.264/AAC over RTMP."""
    tone = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-c:a", "aac"] if audio else []
    process = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}", *tone,
         "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", str(rate),
         "-f", "flv", url], stderr=subprocess.PIPE)
    if wait:
        assert process.wait(60) == 0, process.stderr.read().decode()
    return process


def wait_listening(live: Live, timeout: float = 60) -> None:
    """Until the listener of sr-live's next session is up (it must not have exited meanwhile)."""
    deadline = time.monotonic() + timeout
    while not port_listening(rtmp_port(live.url)):
        assert live.process.poll() is None, f"sr-live exited: {live.process.stderr.read().decode()}"
        assert time.monotonic() < deadline, "no listener"
        time.sleep(0.05)


class Live:
    """sr-live as a real process; its announcement read. Every one started is stopped at the end of its
    test, passed or failed (see stop_live_chains): its stages and their listeners would outlive it."""

    started: list[Live] = []

    def __init__(self, tmp_path: Path, *args, timeout: float = 60, url: str | None = None):
        self.root = tmp_path
        self.url = url or f"rtmp://127.0.0.1:{free_port()}/live/test"
        self.hls = tmp_path / "hls"
        self.process = start_command("sr-live", self.url, "--spool", tmp_path / "spool", "--hls", self.hls,
                                     "--stats-dir", tmp_path / "stats", *args, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.fifo_dir: Path | None = None
        Live.started.append(self)
        # sr-live writes its announcement as one whole line: once the pipe is readable, readline returns.
        line = self.process.stdout.readline() if select.select([self.process.stdout], [], [], timeout)[0] else b""
        if not line:
            self.stop()
            raise AssertionError(f"sr-live did not announce itself within {timeout} s: "
                                 f"{self.process.stderr.read().decode()}")
        self.info = json.loads(line)
        self.fifo_dir = Path(self.info["fifo_dir"])

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, on which sr-live stops its stages; SIGKILL if it outlives ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        code = self.process.wait(timeout)
        return code, self.process.stderr.read().decode()

    def children(self) -> list[int]:
        """Processes still running that sr-live started (stages run in their own sessions)."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                marks = (str(self.root), self.url, *([str(self.fifo_dir)] if self.fifo_dir else []))
                if any(mark.encode() in cmdline for mark in marks):
                    found.append(int(entry))
        return found


@pytest.fixture(autouse=True)
def stop_live_chains():
    """No sr-live, nor a stage of its chain, outlives its test, whichever assertion failed."""
    yield
    while Live.started:
        live = Live.started.pop()
        live.stop()
        for pid in live.children():  # a chain whose sr-live was killed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        live.process.stdout.close()
        live.process.stderr.close()


def segments_of(playlist: Path) -> list[tuple[float, str]]:
    lines = playlist.read_text().splitlines()
    return [(float(line.split(":")[1].rstrip(",")), lines[i + 1]) for i, line in enumerate(lines)
            if line.startswith("#EXTINF")]


def ended(hls: Path) -> Path:
    """A master playlist of the SR rendition and the audio as they are now, marked complete (a player reads
    a live one for ever), written beside them."""
    for rendition in ("sr", "audio"):
        (hls / f"ended-{rendition}.m3u8").write_text((hls / f"{rendition}.m3u8").read_text() + "#EXT-X-ENDLIST\n")
    master = hls / "ended.m3u8"
    master.write_text('#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="audio",DEFAULT=YES,'
                      'URI="ended-audio.m3u8"\n#EXT-X-STREAM-INF:BANDWIDTH=1000000,AUDIO="audio"\nended-sr.m3u8\n')
    return master


def probe(path) -> dict:
    result = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width,height", "-of", "json",
                             str(path)], capture_output=True, check=True)
    return json.loads(result.stdout)


def test_a_publish_session_becomes_hls_with_audio_and_nothing_is_left_behind(tmp_path):
    live = Live(tmp_path, "--sessions", "1", "--segment", "1", "--tcsr-generic")
    assert live.fifo_dir.is_dir()
    assert {"audio.aac", "lr.nut", "video.y4m"} <= {p.name for p in live.fifo_dir.iterdir()}
    publish(live.url, seconds=4)
    code, err = live.finish()
    assert code == 0, err
    segments = segments_of(live.hls / "sr.m3u8")
    assert sum(d for d, _ in segments) == pytest.approx(4.0, abs=0.3)
    for duration, _ in segments[:-1]:
        assert duration == pytest.approx(1.0, rel=0.1)  # within 10% of the target
    # The ladder: the SR rendition (x2), the low-res one as received (copied), one audio.
    assert list(master_variants(live.hls / "index.m3u8")) == ["sr.m3u8", "lr.m3u8"]
    for rendition, kind, size in (("sr", "video", (640, 360)), ("lr", "video", (320, 180)), ("audio", "audio", None)):
        for _, name in segments_of(live.hls / f"{rendition}.m3u8"):  # every segment decodes
            [stream] = {s["codec_type"]: s for s in probe(live.hls / name)["streams"]}.values()
            assert stream["codec_type"] == kind and (size is None or (stream["width"], stream["height"]) == size)
            subprocess.run(["ffmpeg", "-v", "error", "-i", str(live.hls / name), "-f", "null", "-"], check=True)
    sr_times, lr_times = first_frame_times(live.hls / "sr.m3u8"), first_frame_times(live.hls / "lr.m3u8")
    # Aligned segment by segment, within a frame: the LR rendition keeps the publisher's timestamps (its video
    # may start a little after its audio), rounded to its frame grid; the SR rendition's start at 0.
    assert len(sr_times) == len(lr_times) and np.abs(np.array(sr_times) - np.array(lr_times)).max() <= 1 / 25 + 1e-3
    stats = json.loads((tmp_path / "stats" / "sr-serve-1.json").read_text())
    assert 95 <= stats["frames"] <= 105  # 4 s at 25 fps
    assert "sr-tcsr: model: generic" in err  # --tcsr-generic: the shipped TCSR, the spool having none
    assert not live.fifo_dir.exists() and live.children() == []


def test_audio_and_video_stay_in_sync_through_the_chain(tmp_path):
    """A source that flashes white and beeps at the same instants, published over RTMP as a broadcaster
    would, comes out of ingest, sr-serve, sr-tcsr and sr-hls with the beeps on the flashes."""
    live = Live(tmp_path, "--sessions", "1", "--segment", "1", "--list-size", "100")
    flash = "lt(mod(t\\,1)\\,0.04)"  # the first frame of every second
    subprocess.run(["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i",
                    f"color=black:size=320x180:rate=25,drawbox=color=white:t=fill:enable='{flash}'", "-f", "lavfi",
                    "-i", f"sine=frequency=1000:sample_rate=48000:samples_per_frame=480,volume='{flash}':eval=frame",
                    "-t", "5", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-f", "flv", live.url], check=True, timeout=60)
    code, err = live.finish()
    assert code == 0, err
    assert "sr-tcsr: model: none yet" in err  # the generic TCSR only with --tcsr-generic
    offsets = flash_beep_offsets(ended(live.hls))  # the SR rendition and the audio, every segment
    assert np.abs(offsets).max() < 1 / 25, offsets  # every beep within one frame of its flash


def test_the_publisher_leaves_and_comes_back_with_another_size(tmp_path):
    live = Live(tmp_path, "--sessions", "2", "--segment", "1", "--tcsr-budget-ms", "0")
    publish(live.url, seconds=3)
    deadline = time.monotonic() + 30
    while not port_listening(rtmp_port(live.url)):  # the listener of the next session (its own ingest)
        assert time.monotonic() < deadline and live.process.poll() is None, "no listener for the second session"
        time.sleep(0.05)
    publish(live.url, seconds=3, size="256x144")
    code, err = live.finish()
    assert code == 0, err
    for rendition, sizes in (("sr", {(640, 360), (512, 288)}), ("lr", {(320, 180), (256, 144)})):
        assert "#EXT-X-DISCONTINUITY" in (live.hls / f"{rendition}.m3u8").read_text()
        assert {(s["width"], s["height"]) for _, name in segments_of(live.hls / f"{rendition}.m3u8")
                for s in probe(live.hls / name)["streams"]} == sizes
    assert "RESOLUTION=512x288" in (live.hls / "index.m3u8").read_text()  # the newest session's sizes
    assert live.children() == [] and not live.fifo_dir.exists()


@pytest.mark.parametrize("stage", ["sr-serve", "sr-tcsr", "sr-hls"])
def test_a_stage_killed_mid_stream_stops_the_chain_and_is_named(tmp_path, stage):
    live = Live(tmp_path, "--segment", "1")
    publisher = publish(live.url, seconds=30, wait=False)
    victim = None
    deadline = time.monotonic() + 30
    while victim is None and time.monotonic() < deadline:
        victim = next((pid for pid in live.children() if f"srtools\0{stage}\0".encode()
                       in Path(f"/proc/{pid}/cmdline").read_bytes()), None)
        time.sleep(0.2)
    time.sleep(2)
    os.kill(victim, signal.SIGKILL)
    code, err = live.finish()
    publisher.kill()
    publisher.wait()
    assert code == 7 and f"stage {stage} failed" in err.strip().splitlines()[-1], err
    assert live.children() == [] and not live.fifo_dir.exists()


def test_sigterm_stops_every_stage(tmp_path):
    live = Live(tmp_path, "--serve", "127.0.0.1:0")
    assert live.info["hls"].startswith("http://127.0.0.1:")
    live.process.send_signal(signal.SIGTERM)
    code, err = live.finish()
    assert code == 130 and "Traceback" not in err
    assert live.children() == [] and not live.fifo_dir.exists()


def segments_by_session(live: Live) -> list[list[str]]:
    """The SR rendition's segments, in runs between discontinuities (one run per session)."""
    runs: list[list[str]] = [[]]
    lines = (live.hls / "sr.m3u8").read_text().splitlines()
    for i, line in enumerate(lines):
        if line == "#EXT-X-DISCONTINUITY" and runs[-1]:
            runs.append([])
        elif line.startswith("#EXTINF"):
            runs[-1].append(lines[i + 1])
    return runs


def test_a_connection_without_a_stream_or_a_publisher_without_audio_stops_nothing(tmp_path):
    """A connection that never publishes is no session: sr-live listens again, every stage still up; a
    publisher without audio makes HLS without audio; the next one, with audio, HLS with audio."""
    live = Live(tmp_path, "--segment", "1", "--list-size", "0")
    port = rtmp_port(live.url)
    with socket.create_connection(("127.0.0.1", port)):  # bash -c 'exec 3<>/dev/tcp/...; sleep 1'
        time.sleep(1)
    time.sleep(1)
    wait_listening(live)
    publish(live.url, seconds=3, audio=False)
    time.sleep(1)
    wait_listening(live)
    publish(live.url, seconds=3)
    time.sleep(1)
    wait_listening(live)
    live.process.send_signal(signal.SIGTERM)
    code, err = live.finish()
    assert code == 130, err
    assert "a connection ended before publishing a stream" in err and "without audio" in err
    for names in segments_by_session(live):
        assert sum(d for d, name in segments_of(live.hls / "sr.m3u8") if name in names) == pytest.approx(3, abs=0.3)
        for name in names:
            subprocess.run(["ffmpeg", "-v", "error", "-i", str(live.hls / name), "-f", "null", "-"], check=True)
    # The audio rendition has the second session's audio alone.
    assert sum(d for d, _ in segments_of(live.hls / "audio.m3u8")) == pytest.approx(3, abs=0.3)
    assert sorted(p.name for p in (tmp_path / "stats").iterdir() if p.name.startswith("sr-serve")) == [
        "sr-serve-1.json", "sr-serve-2.json"]  # two sessions, the connection was none
    assert live.children() == [] and not live.fifo_dir.exists()


def test_sigkill_leaves_no_stage_running_and_a_restart_clears_what_it_left(tmp_path):
    """Every stage dies with sr-live; the next sr-live on the same ports and HLS directory clears the dead
    run's FIFO directory and starts. sr-receive takes the models of the RTMP URL's stream key."""
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    token.chmod(0o600)
    serve, receive = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    args = ("--segment", "1", "--serve", serve, "--receive", receive, "--token-file", token)
    live = Live(tmp_path, *args)
    auth = {"Authorization": "Bearer 0123456789abcdef0123456789abcdef"}
    with urllib.request.urlopen(urllib.request.Request(f"{live.info['receive']}/models/test/fedsr-x2", headers=auth),
                                timeout=30) as response:
        assert json.loads(response.read())["stream"] == "test"  # the key of rtmp://.../live/test
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(f"{live.info['receive']}/models/default/fedsr-x2",
                                                      headers=auth), timeout=30)
    assert info.value.code == 404 and "KEY one of test," in json.loads(info.value.read())["error"]
    publisher = publish(f"{live.url}?token=0123456789abcdef0123456789abcdef", seconds=60, wait=False)
    try:
        deadline = time.monotonic() + 60
        while not (live.hls / "index.m3u8").exists():
            assert time.monotonic() < deadline and live.process.poll() is None, "no HLS"
            time.sleep(0.2)
        stages = live.children()
        assert len(stages) >= 6  # sr-receive, sr-hls and its ffmpeg, the ingest, sr-serve, sr-tcsr
        os.kill(live.process.pid, signal.SIGKILL)
        live.process.wait()
        deadline = time.monotonic() + 20
        while live.children() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert live.children() == []
        assert live.fifo_dir.exists()  # left behind: the next run clears it
    finally:
        publisher.kill()
        publisher.wait()
    again = Live(tmp_path, *args)
    assert not live.fifo_dir.exists() and again.fifo_dir.exists()
    with urllib.request.urlopen(f"{again.info['hls']}/index.m3u8", timeout=30) as response:
        assert response.status == 200
    again.process.send_signal(signal.SIGTERM)
    code, err = again.finish()
    assert code == 130 and "cleared the FIFO directory of a dead run" in err, err
    assert again.children() == [] and not again.fifo_dir.exists()


def test_the_listener_admits_only_its_stream_key_with_its_token(tmp_path):
    token = tmp_path / "token"
    secret = "fedcba9876543210fedcba9876543210"
    token.write_text(secret + "\n")
    token.chmod(0o600)
    live = Live(tmp_path, "--sessions", "1", "--segment", "1", "--token-file", token, "--list-size", "0")
    base = live.url.rpartition("/")[0]
    for url in (f"{base}/WRONGKEY?token={secret}", f"{live.url}?token=nope", live.url):
        assert publish(url, seconds=3, wait=False).wait(60) != 0, url  # dropped
        wait_listening(live)
    push = tmp_path / "push"
    result = run_command("sr-push", "--input-format", "lavfi", "testsrc2=size=320x180:rate=25:duration=3[out0];"
                         "sine=frequency=440:sample_rate=48000:duration=3[out1]", "--to", live.url,
                         "--token-file", token, "--spool", push, "-q", timeout=120)
    assert result.returncode == 0, result.stderr
    assert secret.encode() not in result.stdout + result.stderr
    code, err = live.finish()
    assert code == 0, err
    refusals = [line for line in err.splitlines() if "refused a publisher" in line]
    assert [line.rpartition(": ")[2] for line in refusals] == ["not this stream's key (test)", "a wrong token",
                                                              "no token"], err
    assert secret not in err
    assert sum(d for d, _ in segments_of(live.hls / "sr.m3u8")) == pytest.approx(3, abs=0.3)  # sr-push's alone


def test_the_publishers_frame_rate_is_kept_and_every_line_names_its_stage(tmp_path):
    live = Live(tmp_path, "--sessions", "1", "--segment", "1", "--list-size", "0", "--tcsr-budget-ms", "0")
    publish(live.url, seconds=3, rate=30)
    code, err = live.finish()
    assert code == 0, err
    assert "session 1: 320x180 at 30 fps (the publisher's" in err, err
    stats = json.loads((tmp_path / "stats" / "sr-serve-1.json").read_text())
    assert 85 <= stats["frames"] <= 95  # 3 s at 30 fps, none dropped to 25
    first = segments_of(live.hls / "sr.m3u8")[0][1]
    rate = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "stream=r_frame_rate",
                           "-of", "csv=p=0", str(live.hls / first)], capture_output=True, text=True, check=True)
    assert set(rate.stdout.split()) == {"30/1"}
    assert all(line.startswith(("sr-live: ", "sr-serve: ", "sr-hls: ", "sr-tcsr: ")) for line in err.splitlines()), err


def test_sigusr1_ends_the_stream_and_lets_what_the_stages_hold_drain(tmp_path):
    """nginx-rtmp's exec_kill_signal: the publisher has gone; the end of its stream must still reach HLS."""
    live = Live(tmp_path, "--segment", "1", "--list-size", "0")
    publisher = publish(live.url, seconds=30, wait=False)
    try:
        deadline = time.monotonic() + 60
        while not (live.hls / "index.m3u8").exists() or len(segments_of(live.hls / "sr.m3u8")) < 3:
            assert time.monotonic() < deadline and live.process.poll() is None, "no HLS"
            time.sleep(0.1)
        stats = tmp_path / "stats" / "sr-serve-1.json"
        live.process.send_signal(signal.SIGUSR1)
        code, err = live.finish()
    finally:
        publisher.kill()
        publisher.wait()
    assert code == 0 and "the stream has ended (SIGUSR1) after 1 sessions" in err, err
    frames = json.loads(stats.read_text())["frames"]
    assert sum(d for d, _ in segments_of(live.hls / "sr.m3u8")) == pytest.approx(frames / 25, abs=0.1)
    assert live.children() == [] and not live.fifo_dir.exists()


def test_metrics_and_stats_move_as_frames_flow_and_show_the_uploaded_model(tmp_path):
    """sr-live's /metrics (through sr-hls's server) and sr-receive's pass promtool, count frames as they flow,
    and /stats.json shows the model sr-receive accepted, with the training request reported with it, on air."""
    live = Live(tmp_path, "--serve", "127.0.0.1:0", "--receive", "127.0.0.1:0", "--token-file",
                write_token(tmp_path / "token"), "--segment", "1")
    publisher = publish(f"{live.url}?token={TOKEN}", seconds=20, wait=False)
    try:
        def read(url: str) -> bytes:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.read()

        def scrape() -> dict[str, float]:
            return check_metrics(read(f"{live.info['hls']}/metrics").decode())

        deadline = time.monotonic() + 60
        while not (live.hls / "index.m3u8").exists():
            assert time.monotonic() < deadline and live.process.poll() is None, "no master playlist"
            time.sleep(0.2)
        time.sleep(2)
        first = scrape()
        request = {"t": 3.5, "pair": 14, "psnr": 29.5, "created": "2025-01-01T00:00:00+0000"}
        status, answer = put(f"{live.info['receive']}/models/test/fedsr-x2", model_file(tmp_path / "m.safetensors"),
                             version=1, headers={"X-Srtools-Request": json.dumps(request)})
        assert status == 201, answer
        stats = {}
        while time.monotonic() < deadline and stats.get("model") != "v1":
            time.sleep(0.5)
            stats = json.loads(read(f"{live.info['hls']}/stats.json"))
        segments = 'srtools_hls_segments_total{stream="test",rendition="sr"}'
        second = scrape()
        while time.monotonic() < deadline and second[segments] == first[segments]:  # a loaded machine is slow
            time.sleep(0.5)
            second = scrape()
        received = check_metrics(read(f"{live.info['receive']}/metrics").decode())
    finally:
        publisher.kill()
        publisher.wait()
        live.stop()
    for name in ("srtools_hls_frames_total", "srtools_serve_frames_total", "srtools_tcsr_frames_total"):
        assert 0 < first[f'{name}{{stream="test"}}'] < second[f'{name}{{stream="test"}}'], name
    for rendition in ("sr", "lr", "audio"):
        key = f'srtools_hls_segment_bytes_total{{stream="test",rendition="{rendition}"}}'
        assert 0 < first[key] < second[key], key
    assert second['srtools_serve_model_version{stream="test"}'] == 1
    assert received['srtools_receive_uploads_total{stream="test"}'] == 1
    assert stats["model"] == "v1" and stats["swaps"] == 1 and 0 <= stats["model_age_s"] < 30
    assert stats["upload"]["version"] == 1 and stats["request"]["t"] == 3.5
    assert stats["input_fps"] > 15 and stats["output_fps"] > 15 and stats["tcsr_frames"] > 0
    assert set(stats["renditions"]) == {"sr", "lr", "audio"}
