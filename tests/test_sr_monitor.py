"""sr-monitor: real clips sampled into the pool; a cut found, a same-picture PSNR drop not; requests written
atomically."""

import json
import subprocess

import pytest

from conftest import fill_pool, run_command


def sampled_pool(root, name, ffmpeg_input):
    """6 s at 25 fps made by ffmpeg from ``ffmpeg_input``; pairs sampled 5 times a second like the push
    side (HR frame + the decoded frame of the default degradation). Returns the spool."""
    hr = root / f"{name}.mp4"
    subprocess.run(["ffmpeg", "-v", "error", *ffmpeg_input, "-t", "6", "-pix_fmt", "yuv420p", "-c:v", "libx264",
                    "-crf", "12", str(hr)], check=True)
    return fill_pool(hr, root / name)


@pytest.fixture(scope="module")
def two_scene_spool(tmp_path_factory):
    """testsrc2, cut at 3 s to mandelbrot."""
    return sampled_pool(tmp_path_factory.mktemp("monitor"), "cut", [
        "-f", "lavfi", "-i", "testsrc2=size=192x108:rate=25:duration=3", "-f", "lavfi", "-i",
        "mandelbrot=size=192x108:rate=25", "-filter_complex", "[1]trim=duration=3,setpts=PTS-STARTPTS[b];[0][b]concat"])


def test_once_finds_the_cut_and_writes_one_request(two_scene_spool):
    result = run_command("sr-monitor", "--spool", two_scene_spool, "--once")
    assert result.returncode == 0, result.stderr
    samples = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert len(samples) == 30 and [s["pair"] for s in samples] == list(range(1, 31))
    assert set(samples[0]) == {"t", "pair", "psnr", "bicubic_psnr", "smoothed", "threshold", "change", "model",
                               "request"}
    assert all(s["model"] is None and s["psnr"] == s["bicubic_psnr"] for s in samples)  # no model yet
    assert max(s["change"] for s in samples[1:15]) < 0.25 < min(s["change"] for s in samples[15:18])
    requested = [s["t"] for s in samples if s["request"]]
    assert len(requested) == 1 and 3.0 <= requested[0] <= 5.0  # within 2 s of the cut, once
    [request] = (two_scene_spool / "requests").iterdir()
    data = json.loads(request.read_text())
    assert data["format"] == "srtools-request/1" and data["t"] == requested[0] and data["change"] > 0.25
    assert b"30 pairs scored, 1 training requests" in result.stderr


def test_a_psnr_drop_on_the_same_picture_is_no_scene_change(tmp_path):
    """Sensor noise from 3 s on: the PSNR falls well beyond its threshold, the picture stays."""
    spool = sampled_pool(tmp_path, "noise", [
        "-f", "lavfi", "-i", "testsrc2=size=192x108:rate=25", "-vf", "noise=alls=40:allf=t:enable='gte(t,3)'"])
    result = run_command("sr-monitor", "--spool", spool, "--once")
    assert result.returncode == 0, result.stderr
    samples = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert any(s["smoothed"] - s["psnr"] > s["threshold"] for s in samples if s["threshold"] is not None)
    assert not any(s["request"] for s in samples) and not (spool / "requests").exists()
    # without pictures' say (--picture-gate 0) the same drop asks for training
    ungated = run_command("sr-monitor", "--spool", spool, "--once", "--picture-gate", "0")
    assert sum(json.loads(line)["request"] for line in ungated.stdout.decode().splitlines()) == 1


def test_log_file_and_an_empty_pool(tmp_path, two_scene_spool):
    log = tmp_path / "series.jsonl"
    result = run_command("sr-monitor", "--spool", two_scene_spool, "--once", "--log", log)
    assert result.returncode == 0 and result.stdout == b""
    assert len(log.read_text().splitlines()) == 30
    empty = run_command("sr-monitor", "--spool", tmp_path / "nothing-yet", "--once")
    assert empty.returncode == 0 and b"the pool is empty" in empty.stderr
