"""sr-compare: quality tables against a reference, from real encodes."""

import json
import subprocess

import pytest

from conftest import expect_error, make_y4m, run_command


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


@pytest.mark.parametrize("pix_fmt,rgb", [("yuv444p", True), ("yuv422p", True), ("gray", False)])
def test_a_candidate_of_other_chroma_is_compared_on_luma_and_converted_for_rgb(clips, tmp_path, pix_fmt, rgb):
    ref, _, _ = clips
    other = tmp_path / f"{pix_fmt}.y4m"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(ref), "-pix_fmt", pix_fmt, "-strict", "-1", str(other)],
                   check=True)
    result = run_command("sr-compare", ref, other)
    assert result.returncode == 0, result.stderr
    [row] = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["frames"] == 10 and row["y_ssim"] > 0.95  # luma as it was (gray: rescaled to full range)
    if rgb:  # chroma resampled and back: close to the reference, not identical
        assert row["y_psnr_db"] is None and 25 < row["rgb_psnr_db"] < 100
    else:
        assert row["rgb_psnr_db"] is None


def test_frames_under_8x8_are_refused_in_one_line(tmp_path):
    tiny = make_y4m(tmp_path / "tiny.y4m", size="6x6", seconds=0.2)
    expect_error(run_command("sr-compare", tiny, tiny), 3, "6x6 frames are under 8x8, the window of SSIM")


def test_garbage_is_bad_input(clips, tmp_path):
    ref, _, _ = clips
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 8)
    expect_error(run_command("sr-compare", ref, garbage), 3, "garbage.mp4: ffmpeg cannot decode it")
