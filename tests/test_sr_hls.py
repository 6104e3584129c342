"""sr-hls: real ffmpeg encoding Y4M (and audio, and copying the low-res video) into a live HLS ladder, served
over HTTP with its statistics, restarted, fed broken input."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from srtools.ladder import Entry, parse_media_playlist

from conftest import (
    PROMTOOL,
    ROOT,
    Server,
    assert_head_answers_as_get,
    check_metrics,
    expect_error,
    make_y4m,
    run_command,
    start_command,
)

FPS = 25


def read_playlist(path: Path) -> tuple[int, list[Entry], bool]:
    """(media sequence, entries, ended) of a media playlist."""
    playlist = parse_media_playlist(path.read_text())
    return playlist.sequence, playlist.entries, playlist.ended


def probe_streams(source: str | Path, *input_args: str) -> list[dict]:
    out = subprocess.run(["ffprobe", "-v", "error", *input_args, "-show_entries",
                          "stream=codec_type,codec_name,width,height", "-of", "json", str(source)],
                         capture_output=True, check=True, timeout=60).stdout
    return json.loads(out)["streams"]


def decoded_frames(data: bytes) -> int:
    """Video frames ffmpeg decodes from one MPEG-TS segment, failing on any decoding error."""
    result = subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-f", "mpegts", "-i", "pipe:", "-map", "0:v",
                             "-f", "framecrc", "-"], input=data, capture_output=True, timeout=60)
    assert result.returncode == 0 and not result.stderr, result.stderr.decode()
    return sum(1 for line in result.stdout.decode().splitlines() if not line.startswith("#"))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Y4M clips (testsrc2 320x180 4 s and 6 s at 25 fps, 160x90 1 s at 30 fps), and a 5 s black clip
    flashing white at every whole second with ADTS audio beeping at the same instants."""
    root = tmp_path_factory.mktemp("hls-media")
    clips = {"clip": make_y4m(root / "clip.y4m", seconds=4), "long": make_y4m(root / "long.y4m", seconds=6),
             "small": make_y4m(root / "small.y4m", size="160x90", rate=30, seconds=1)}
    flash = "lt(mod(t\\,1)\\,0.04)"  # the first frame of every second
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"color=black:size=320x180:rate={FPS},drawbox=color=white:t=fill:enable='{flash}'",
                    "-t", "5", "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", str(root / "flash.y4m")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency=1000:sample_rate=48000:samples_per_frame=480,volume='{flash}':eval=frame",
                    "-t", "5", "-c:a", "aac", "-b:a", "128k", str(root / "beep.aac")], check=True)
    return {**clips, "flash": root / "flash.y4m", "beep": root / "beep.aac"}


def sr_hls(input_path: Path, out: Path, *args) -> subprocess.CompletedProcess:
    with open(input_path, "rb") as stdin:
        return run_command("sr-hls", "-q", "--out", out, "--segment", 1, *args, input=stdin.read(), timeout=120)


def test_serves_live_hls_over_http(media, tmp_path):
    out = tmp_path / "out"
    with Server("sr-hls", media["clip"], "--out", out, "--serve", "127.0.0.1:0", "--segment", 1,
                "--list-size", 0) as server:
        assert server.info["playlist"] == f"{server.url}/index.m3u8"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
                not (out / "index.m3u8").exists() or len(read_playlist(out / "sr.m3u8")[1]) < 4):
            time.sleep(0.2)
        # ffprobe reads the stream through the playlist over HTTP.
        [video] = probe_streams(server.info["playlist"])
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 180)
        with urllib.request.urlopen(server.info["playlist"], timeout=10) as response:
            assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"
            assert response.headers["Cache-Control"] == "no-cache"
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            playlist = response.read().decode()
        assert playlist == (out / "index.m3u8").read_text() and "#EXT-X-STREAM-INF:" in playlist  # the master
        sequence, entries, ended = read_playlist(out / "sr.m3u8")
        assert (sequence, len(entries), ended) == (0, 4, False)  # a live playlist: no EXT-X-ENDLIST by default
        for entry in entries:
            assert abs(entry.duration - 1) <= 0.1, entry
            with urllib.request.urlopen(f"{server.url}/{entry.name}", timeout=10) as response:
                assert response.headers["Content-Type"] == "video/mp2t"
                assert "immutable" in response.headers["Cache-Control"]
                assert response.headers["Access-Control-Allow-Origin"] == "*"
                assert decoded_frames(response.read()) == FPS
        with urllib.request.urlopen(f"{server.url}/", timeout=10) as response:
            assert "player.js" in response.read().decode()  # the comparison player (tests/test_player_browser.py)
        # A player seeking in the stream gets the bytes it asks for.
        segment = (out / entries[0].name).read_bytes()
        request = urllib.request.Request(f"{server.url}/{entries[0].name}", headers={"Range": "bytes=188-375"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert (response.status, response.read()) == (206, segment[188:376])
        request = urllib.request.Request(f"{server.url}/{entries[0].name}", headers={"Range": "bytes=999999999-"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 416
        for path in ("/.sr-hls.json", "/../clip.y4m", "/nothing.ts"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(server.url + path, timeout=10)
            assert info.value.code == 404
        code, err = server.stop()
    assert code == 130 and "Traceback" not in err, err  # served until SIGTERM
    assert "100 frames" in err


def test_head_answers_as_get_does(media, tmp_path):
    out = tmp_path / "out"
    with Server("sr-hls", media["small"], "--out", out, "--serve", "127.0.0.1:0", "--segment", 1) as server:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out / "index.m3u8").exists():
            time.sleep(0.2)
        segment = read_playlist(out / "sr.m3u8")[1][0].name
        paths = ("/", "/player.html", "/player.js", "/player.css", "/index.m3u8", "/index-sr.m3u8", "/sr.m3u8",
                 f"/{segment}", "/.sr-hls.json", "/nothing.ts", "/lr.m3u8")
        statuses = [assert_head_answers_as_get(server.url + path) for path in paths]
        assert statuses == [200] * 8 + [404] * 3  # no --lr: no LR rendition
        assert_head_answers_as_get(f"{server.url}/hls.min.js")  # 200 where the checkout vendors it, else 404


def test_rolling_window_deletes_old_segments(media, tmp_path):
    out = tmp_path / "out"
    result = sr_hls(media["long"], out, "--list-size", 3)
    assert result.returncode == 0 and result.stdout == b"", result.stderr.decode()
    sequence, entries, _ = read_playlist(out / "sr.m3u8")
    assert sequence == 3 and len(entries) == 3
    assert all(abs(e.duration - 1) <= 0.1 for e in entries)
    segments = sorted(p.name for p in out.glob("*-sr-*.ts"))
    # ffmpeg keeps one segment past the window for players still fetching it; older ones are gone.
    assert segments[-3:] == [e.name for e in entries] and len(segments) <= 4
    assert not list(out.glob("*.tmp"))


def flash_beep_offsets(playlist: Path) -> np.ndarray:
    """For each beep onset in the HLS output, its time minus the time of the nearest white flash."""
    def first_pts(stream: str) -> float:
        out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", stream, "-show_entries",
                              "frame=pts_time", "-read_intervals", "%+#1", "-of", "json", str(playlist)],
                             capture_output=True, check=True, timeout=60).stdout
        return float(json.loads(out)["frames"][0]["pts_time"])

    def decode(*args: str) -> bytes:
        return subprocess.run(["ffmpeg", "-v", "error", "-i", str(playlist), *args, "-"], capture_output=True,
                              check=True, timeout=60).stdout

    # Frames are CFR from the first pts on, samples contiguous from the first audio pts on.
    luma = np.frombuffer(decode("-map", "0:v", "-vf", "scale=8:8,format=gray", "-fps_mode", "passthrough",
                                "-f", "rawvideo"), np.uint8).reshape(-1, 64).mean(axis=1)
    white = luma > 128
    flashes = first_pts("v:0") + np.flatnonzero(white & ~np.r_[False, white[:-1]]) / FPS
    pcm = np.abs(np.frombuffer(decode("-map", "0:a", "-ac", "1", "-ar", "48000", "-f", "s16le"), np.int16)
                 .astype(np.float64))
    loud = np.flatnonzero(pcm > pcm.max() / 4)
    onsets = loud[np.r_[True, np.diff(loud) > 24000]]  # the first loud sample after 0.5 s of quiet
    beeps = first_pts("a:0") + onsets / 48000
    assert len(flashes) >= 4 and len(beeps) >= 4, (flashes, beeps)
    return np.array([b - flashes[np.argmin(np.abs(flashes - b))] for b in beeps])


def test_audio_in_sync_and_shifted_by_audio_delay(media, tmp_path):
    offsets = {}
    for delay in (0, 0.2, -0.2):
        out = tmp_path / f"delay{delay}"
        result = sr_hls(media["flash"], out, "--list-size", 0, "--endlist", "--audio", media["beep"],
                        "--audio-delay", delay)
        assert result.returncode == 0, result.stderr.decode()
        assert sorted(s["codec_name"] for s in probe_streams(out / "index.m3u8")) == ["aac", "h264"]
        found = flash_beep_offsets(out / "index.m3u8")  # the master: the SR rendition and the audio
        assert np.ptp(found) < 0.005, found  # the same offset at every beep
        offsets[delay] = float(np.median(found))
    # In sync within one frame (the source's AAC priming, 21 ms, is all there is), and shifted as asked.
    assert abs(offsets[0]) < 1 / FPS, offsets
    for delay in (0.2, -0.2):
        assert abs(offsets[delay] - offsets[0] - delay) < 0.005, offsets


def test_restart_continues_the_stream_after_a_discontinuity(media, tmp_path):
    out = tmp_path / "out"
    assert sr_hls(media["clip"], out, "--list-size", 0).returncode == 0
    _, first, _ = read_playlist(out / "sr.m3u8")
    assert len(first) == 4 and not any(e.discontinuity for e in first)
    # An earlier stream is not mixed into silently.
    expect_error(sr_hls(media["clip"], out, "--list-size", 0), 2, "--continue appends to it, --fresh replaces it")
    result = sr_hls(media["small"], out, "--list-size", 0, "--continue")
    assert result.returncode == 0, result.stderr.decode()
    sequence, entries, _ = read_playlist(out / "sr.m3u8")
    assert sequence == 0 and entries[:4] == first and len(entries) == 5
    assert entries[4].discontinuity and entries[4].name.split("-")[0] == first[0].name.split("-")[0]
    numbers = [int(e.name.split("-")[2].split(".")[0]) for e in entries]
    assert numbers == list(range(5))
    assert decoded_frames((out / entries[4].name).read_bytes()) == 30  # the new stream's size and rate
    # --fresh: a new stream (new segment names), nothing of the old one left.
    assert "RESOLUTION=160x90" in (out / "index.m3u8").read_text()  # the newest stream's size
    assert sr_hls(media["small"], out, "--fresh").returncode == 0
    sequence, entries, _ = read_playlist(out / "sr.m3u8")
    assert sequence == 0 and len(entries) == 1 and entries[0].name not in {e.name for e in first}
    assert sorted(p.name for p in out.glob("*.ts")) == [entries[0].name]


def test_new_y4m_stream_mid_input_and_on_a_reopened_fifo(media, tmp_path):
    both = tmp_path / "both.y4m"
    both.write_bytes(media["clip"].read_bytes() + media["small"].read_bytes())  # a new header mid-input
    result = sr_hls(both, tmp_path / "cat", "--list-size", 0)
    assert result.returncode == 0, result.stderr.decode()
    _, entries, _ = read_playlist(tmp_path / "cat/sr.m3u8")
    assert [e.discontinuity for e in entries] == [False] * 4 + [True]
    [video] = probe_streams(tmp_path / "cat" / entries[4].name)
    assert (video["width"], video["height"]) == (160, 90)

    fifo = tmp_path / "frames.fifo"
    os.mkfifo(fifo)
    process = start_command("sr-hls", fifo, "--out", tmp_path / "fifo", "--segment", 1, "--list-size", 0,
                            "--reopen-wait", 3, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for clip in ("small", "clip"):  # two writers, one after the other (an upstream restart)
            with open(fifo, "wb") as writer:
                writer.write(media[clip].read_bytes())
            time.sleep(0.5)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0 and stdout == b"", stderr.decode()
    assert "2 stream(s)" in stderr.decode()
    _, entries, _ = read_playlist(tmp_path / "fifo/sr.m3u8")
    assert [e.discontinuity for e in entries] == [False, True, False, False, False]


def test_stalled_input_fails_in_one_line(media, tmp_path):
    data = media["small"].read_bytes()
    header = data.index(b"\n") + 1
    process = start_command("sr-hls", "-q", "--out", tmp_path / "out", "--segment", 1, "--stall-timeout", 1,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(data[:header + 15 * (len("FRAME\n") + 160 * 90 * 3 // 2)])  # 15 frames, then silence
    process.stdin.flush()
    try:
        process.wait(timeout=30)  # with the pipe still open (communicate() would close it)
    finally:
        process.kill()
        process.stdin.close()
    result = subprocess.CompletedProcess(process.args, process.returncode, process.stdout.read(),
                                         process.stderr.read())
    expect_error(result, 3, "no frame for 1 s (input stalled)")
    _, entries, _ = read_playlist(tmp_path / "out/sr.m3u8")  # what came before is published
    assert len(entries) == 1 and decoded_frames((tmp_path / "out" / entries[0].name).read_bytes()) == 15


def test_refusals(media, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        expect_error(sr_hls(media["small"], tmp_path / "a", "--serve", f"127.0.0.1:{port}"), 2, "cannot listen")
    assert not (tmp_path / "a").exists()  # nothing touched
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    expect_error(sr_hls(media["small"], foreign), 2, "not an sr-hls output")
    expect_error(sr_hls(media["small"], tmp_path / "b", "--continue", "--fresh"), 2, "not both")
    expect_error(sr_hls(media["small"], tmp_path / "b", "--audio-delay", 1), 2, "needs --audio")
    not_y4m = tmp_path / "text.y4m"
    not_y4m.write_text("hello\n")
    expect_error(sr_hls(not_y4m, tmp_path / "c"), 3, "not a YUV4MPEG2 stream")
    no_rate = tmp_path / "no-rate.y4m"
    no_rate.write_bytes(b"YUV4MPEG2 W16 H16 F0:1 C420jpeg\nFRAME\n" + bytes(384))
    expect_error(sr_hls(no_rate, tmp_path / "c1"), 3, "frame rate F0:1 is not a positive fraction")
    expect_error(sr_hls(media["small"], tmp_path / "c2", "--max-pixels", 10000), 3,
                 "160x90 frames are over the limit of 10000 pixels a frame")
    expect_error(sr_hls(media["small"], tmp_path / "d", "--audio", tmp_path / "missing.aac"), 3, "no such file")
    garbage = tmp_path / "garbage.aac"
    garbage.write_bytes(b"\0" * 1000)
    expect_error(sr_hls(media["small"], tmp_path / "e", "--audio", garbage), 3, "garbage.aac: ffmpeg cannot decode it")


def test_one_writer_per_directory(media, tmp_path):
    out = tmp_path / "out"
    first = start_command("sr-hls", "--out", out, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (out / ".sr-hls.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        expect_error(sr_hls(media["small"], out, "--continue"), 1, "another sr-hls is writing this directory")
    finally:
        first.kill()
        first.communicate()


def test_an_audio_fifo_without_audio_makes_a_stream_without_audio(media, tmp_path):
    """A live audio FIFO that has nothing when the stream's first frame comes (nobody writes it, or its
    writer left without a byte: sr-live's ingest for a publisher without audio) is no audio."""
    fifo = tmp_path / "audio.fifo"
    os.mkfifo(fifo)
    result = sr_hls(media["small"], tmp_path / "out", "--audio", fifo, "--stall-timeout", 1)
    assert result.returncode == 0 and b"warning: stream 1: no audio on" in result.stderr, result.stderr
    for entry in read_playlist(tmp_path / "out" / "sr.m3u8")[1]:
        assert [s["codec_type"] for s in probe_streams(tmp_path / "out" / entry.name)] == ["video"]
    assert "TYPE=AUDIO" not in (tmp_path / "out" / "index.m3u8").read_text()  # the master lists no audio


def first_frame_times(playlist: Path) -> list[float]:
    """The presentation time of each segment's first video frame, in playlist order."""
    _, entries, _ = read_playlist(playlist)
    times = []
    for entry in entries:
        out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time",
                              "-read_intervals", "%+#1", "-of", "json", str(playlist.parent / entry.name)],
                             capture_output=True, check=True, timeout=60).stdout
        times.append(float(json.loads(out)["frames"][0]["pts_time"]))
    return times


def frame_hashes(source: Path) -> list[str]:
    """MD5 of every decoded video frame."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), "-map", "0:v:0", "-f", "framemd5", "-"],
                         capture_output=True, check=True, timeout=60).stdout.decode()
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line and not line.startswith("#")]


def master_variants(path: Path) -> dict[str, dict[str, str]]:
    """The master playlist's variants: {URI: {attribute: value}} (quotes removed)."""
    lines = path.read_text().splitlines()
    variants = {}
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            attributes = re.findall(r'([A-Z-]+)=("[^"]*"|[^,]*)', line.split(":", 1)[1])
            variants[lines[i + 1]] = {key: value.strip('"') for key, value in attributes}
    return variants


@pytest.fixture(scope="module")
def ladder_media(tmp_path_factory):
    """4 s of testsrc2: the SR frames (640x360 Y4M), the low-res stream as sr-push sends it (320x180, x264
    with a keyframe every second and only there) and a tone (ADTS AAC)."""
    from srtools import degrade

    root = tmp_path_factory.mktemp("ladder-media")
    make_y4m(root / "sr.y4m", size="640x360", seconds=4)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "4",
                    "-pix_fmt", "yuv420p", *degrade.live_x264_args(segment=1.0), str(root / "lr.mp4")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "4",
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", "-g", "60", "-x264-params", "scenecut=0",
                    str(root / "lr-gop60.mp4")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "4",
                    "-c:a", "aac", str(root / "audio.aac")], check=True)
    return root


def test_the_ladder_the_low_res_rendition_copied_and_aligned_with_one_audio(ladder_media, tmp_path):
    out = tmp_path / "out"
    result = sr_hls(ladder_media / "sr.y4m", out, "--list-size", 0, "--endlist", "--lr", ladder_media / "lr.mp4",
                    "--audio", ladder_media / "audio.aac")
    assert result.returncode == 0, result.stderr.decode()
    # ffprobe reads the master playlist (both variants and the one audio) and each variant.
    streams = probe_streams(out / "index.m3u8")
    assert sorted((s["codec_type"], s.get("width")) for s in streams) == [("audio", None), ("video", 320),
                                                                          ("video", 640)]
    for name, size in (("index-sr.m3u8", (640, 360)), ("index-lr.m3u8", (320, 180))):
        kinds = {s["codec_type"]: s for s in probe_streams(out / name)}
        assert set(kinds) == {"audio", "video"} and (kinds["video"]["width"], kinds["video"]["height"]) == size
    variants = master_variants(out / "index.m3u8")
    assert list(variants) == ["sr.m3u8", "lr.m3u8"]  # the super-resolved rendition first
    text = (out / "index.m3u8").read_text()
    assert text.count('#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio"') == 1 and 'URI="audio.m3u8"' in text
    audio_bytes = sum(p.stat().st_size for p in out.glob("*-audio-*.ts"))
    audio_seconds = sum(e.duration for e in read_playlist(out / "audio.m3u8")[1])
    for uri, attributes in variants.items():
        rendition = uri.removesuffix(".m3u8")
        _, entries, _ = read_playlist(out / uri)
        sizes = [(out / e.name).stat().st_size for e in entries]
        info = {s["codec_type"]: s for s in json.loads(subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width,height,profile,level", "-of", "json",
             str(out / entries[0].name)], capture_output=True, check=True).stdout)["streams"]}["video"]
        assert attributes["RESOLUTION"] == f"{info['width']}x{info['height']}"
        profile = {"High": "64", "Main": "4d", "Constrained Baseline": "42"}[info["profile"]]
        assert re.fullmatch(rf"avc1\.{profile}[0-9a-f]{{2}}{info['level']:02x},mp4a\.40\.2", attributes["CODECS"]), \
            attributes
        assert attributes["AUDIO"] == "audio"
        # AVERAGE-BANDWIDTH: all the bytes over all the seconds, video and audio; BANDWIDTH: at least
        # the rate of any whole segment (a run of segments of one target duration).
        average = 8 * sum(sizes) / sum(e.duration for e in entries) + 8 * audio_bytes / audio_seconds
        assert int(attributes["AVERAGE-BANDWIDTH"]) == pytest.approx(average, rel=0.01), rendition
        full = max(8 * size / e.duration for size, e in zip(sizes, entries) if e.duration >= 0.5)
        assert int(attributes["BANDWIDTH"]) >= full + 8 * audio_bytes / audio_seconds * 0.9
        for entry in entries:
            assert decoded_frames((out / entry.name).read_bytes()) == FPS  # every segment decodes
    assert int(variants["lr.m3u8"]["BANDWIDTH"]) < int(variants["sr.m3u8"]["BANDWIDTH"])
    # Aligned segment by segment, within one frame; the LR rendition is the source's stream, not re-encoded.
    sr_times, lr_times = first_frame_times(out / "sr.m3u8"), first_frame_times(out / "lr.m3u8")
    assert len(sr_times) == len(lr_times) == 4
    assert np.abs(np.array(sr_times) - np.array(lr_times)).max() < 1 / FPS, (sr_times, lr_times)
    assert [int(e.name.split("-")[2][:6]) for e in read_playlist(out / "lr.m3u8")[1]] == [0, 1, 2, 3]
    assert frame_hashes(out / "lr.m3u8") == frame_hashes(ladder_media / "lr.mp4")


def test_the_first_master_playlist_waits_for_the_renditions_the_stream_is_expected_to_have(ladder_media, tmp_path,
                                                                                          monkeypatch):
    """hls.js reads the master playlist once: one written before the audio's first segment would play the
    stream silent, one without the SR rendition would never show it. The first master waits for the SR
    rendition, then for the other expected ones for a few target durations at most."""
    from srtools import ladder

    made = tmp_path / "made"
    assert sr_hls(ladder_media / "sr.y4m", made, "--audio", ladder_media / "audio.aac", "--lr",
                  ladder_media / "lr.mp4").returncode == 0

    def copy_rendition(name: str, into: Path) -> None:
        into.mkdir(exist_ok=True)
        for path in made.glob(f"*-{name}-*.ts"):
            (into / path.name).write_bytes(path.read_bytes())
        (into / f"{name}.m3u8").write_text((made / f"{name}.m3u8").read_text())

    def building(out: Path, *present: str) -> ladder.Ladder:
        for name in present:
            copy_rendition(name, out)
        made_ladder = ladder.Ladder(out)
        made_ladder.expect(ladder.SR, ladder.LR, ladder.AUDIO)
        made_ladder.update()
        return made_ladder

    # The low-res rendition and the audio ahead of the SR one, however long: no master until the SR one comes.
    ahead = building(tmp_path / "sr-late", "lr", "audio")
    monkeypatch.setattr(ladder, "FIRST_MASTER_WAIT_TARGETS", 0)
    ahead.update()
    assert not (tmp_path / "sr-late" / "index.m3u8").exists()
    copy_rendition("sr", tmp_path / "sr-late")
    ahead.update()
    assert list(master_variants(tmp_path / "sr-late" / "index.m3u8")) == ["sr.m3u8", "lr.m3u8"]
    monkeypatch.undo()
    for audio_comes in (True, False):
        out = tmp_path / f"audio-comes-{audio_comes}"
        waiting = building(out, "sr", "lr")
        assert not (out / "index.m3u8").exists()  # the audio is still to come
        if audio_comes:
            copy_rendition("audio", out)
        else:  # it never does: the stream goes on without it
            monkeypatch.setattr(ladder, "FIRST_MASTER_WAIT_TARGETS", 0.5)
            time.sleep(0.6)
        waiting.update()
        text = (out / "index.m3u8").read_text()
        assert ('URI="audio.m3u8"' in text) == audio_comes and "sr.m3u8" in text and "lr.m3u8" in text, text


def test_lr_encode_aligns_a_source_whose_keyframes_are_elsewhere(ladder_media, tmp_path):
    copied, encoded = tmp_path / "copied", tmp_path / "encoded"
    for out, extra in ((copied, ()), (encoded, ("--lr-encode",))):
        result = sr_hls(ladder_media / "sr.y4m", out, "--list-size", 0, "--lr", ladder_media / "lr-gop60.mp4", *extra)
        assert result.returncode == 0, result.stderr.decode()
    # Copied, the source's keyframes (every 2.4 s) cut the segments; encoded, every second does.
    assert [round(e.duration, 2) for e in read_playlist(copied / "lr.m3u8")[1]] == [2.4, 1.6]
    sr_times, lr_times = first_frame_times(encoded / "sr.m3u8"), first_frame_times(encoded / "lr.m3u8")
    assert len(lr_times) == 4 and np.abs(np.array(sr_times) - np.array(lr_times)).max() < 1 / FPS
    assert "RESOLUTION=320x180" in (encoded / "index.m3u8").read_text()


def test_stats_and_metrics_while_frames_flow(media, tmp_path):
    """/stats.json and /metrics (accepted by promtool) report the frames and segments as they come; the
    chain's stats files are read from --stats-dir (absent ones are null)."""
    fifo, stats_dir = tmp_path / "frames.fifo", tmp_path / "stats"
    os.mkfifo(fifo)
    stats_dir.mkdir()
    (stats_dir / "sr-serve-1.json").write_text(json.dumps(
        {"frames": 50, "seconds": 2.0, "model": "v3", "swaps": 1, "engine_frames": 40, "fallbacks": 10, "probes": 0,
         "late": 2, "lag_ms": 12.5, "worst_lag_ms": 51.0, "block_share": 0.61}))
    data = media["long"].read_bytes()
    header = data.index(b"\n") + 1
    frame_bytes = len(b"FRAME\n") + 320 * 180 * 3 // 2
    with Server("sr-hls", fifo, "--out", tmp_path / "out", "--serve", "127.0.0.1:0", "--segment", 1,
                "--stats-dir", stats_dir, "--name", "studio", "--reopen-wait", 0) as server:
        scrapes = []
        with open(fifo, "wb") as writer:
            writer.write(data[:header])
            for n, offset in enumerate(range(header, len(data), frame_bytes)):
                writer.write(data[offset:offset + frame_bytes])
                writer.flush()
                time.sleep(0.04)
                if n in (60, 140):
                    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
                        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                        scrapes.append(check_metrics(response.read().decode()))
                    with urllib.request.urlopen(f"{server.url}/stats.json", timeout=10) as response:
                        stats = json.loads(response.read())
    frames = [scrape['srtools_hls_frames_total{stream="studio"}'] for scrape in scrapes]
    assert 0 < frames[0] < frames[1]  # counters move as frames flow
    segments = [scrape['srtools_hls_segments_total{stream="studio",rendition="sr"}'] for scrape in scrapes]
    assert 1 <= segments[0] < segments[1]
    assert scrapes[1]['srtools_serve_late_frames_total{stream="studio"}'] == 2
    assert scrapes[1]['srtools_serve_block_share_ratio{stream="studio"}'] == 0.61
    assert scrapes[1]['srtools_serve_lag_seconds{stream="studio"}'] == 0.0125
    assert stats["stream"] == "studio" and stats["model"] == "v3" and stats["block_share"] == 0.61
    assert stats["input_fps"] == 25.0 and 15 < stats["output_fps"] < 30
    assert stats["frames"] > 100 and stats["renditions"]["sr"]["segments"] >= 3
    assert 0 <= stats["segment_age_s"] < 2
    assert stats["tcsr_refined"] is None and stats["upload"] is None and stats["model_arrived"] is None


def test_the_example_scrape_configuration_is_valid():
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (make deps installs the prometheus package)")
    result = subprocess.run([PROMTOOL, "check", "config", str(ROOT / "conf" / "prometheus.yml")], capture_output=True,
                            timeout=60)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
