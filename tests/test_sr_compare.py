"""sr-compare: quality tables against a reference, from real encodes."""

import json
import subprocess

import pytest

from conftest import make_y4m, run_command


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    ref = make_y4m(tmp / "ref.y4m", size="96x64", seconds=0.4)
    worse = tmp / "worse.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(ref), "-c:v", "libx264", "-crf", "45", str(worse)], check=True)
    better = tmp / "better.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(ref), "-c:v", "libx264", "-crf", "20", str(better)], check=True)
    return ref, worse, better


def test_ranks_candidates_and_writes_json_lines(clips):
    ref, worse, better = clips
    result = run_command("sr-compare", ref, worse, better, ref, "-l", "crf45", "-l", "crf20", "-l", "same")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in rows] == ["crf45", "crf20", "same"]
    assert all(r["frames"] == 10 for r in rows)
    assert rows[0]["y_psnr_db"] < rows[1]["y_psnr_db"] and rows[0]["y_ssim"] < rows[1]["y_ssim"] < 1
    assert rows[2]["y_psnr_db"] is None and rows[2]["y_ssim"] == 1.0  # identical: infinite PSNR left out
    assert b"Y-PSNR dB" in result.stderr


@pytest.mark.parametrize("extra,code,message", [
    (("-l", "only-one"), 2, b"1 --label for 2 candidates"),
])
def test_usage_errors(clips, extra, code, message):
    ref, worse, better = clips
    result = run_command("sr-compare", ref, worse, better, *extra)
    assert (result.returncode, message in result.stderr) == (code, True)


def test_mismatched_inputs(clips, tmp_path):
    ref, worse, _ = clips
    other_size = make_y4m(tmp_path / "small.y4m", size="48x32", seconds=0.4)
    result = run_command("sr-compare", ref, other_size)
    assert result.returncode == 3 and b"48x32, reference is 96x64" in result.stderr
    shorter = make_y4m(tmp_path / "short.y4m", size="96x64", seconds=0.2)
    result = run_command("sr-compare", ref, shorter)
    assert result.returncode == 3 and b"ends at frame 5" in result.stderr
    result = run_command("sr-compare", shorter, ref)
    assert result.returncode == 3 and b"more frames than the reference" in result.stderr
