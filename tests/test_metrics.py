"""Metrics agree with ffmpeg's own psnr and ssim filters, frame by frame."""

import math
import subprocess

import numpy as np
import pytest

from srtools import metrics, video

from conftest import make_clip


@pytest.fixture(scope="module")
def reference_and_distorted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    ref = make_clip(tmp / "ref.y4m", size="176x100", seconds=0.4, codec=("-f", "yuv4mpegpipe"))
    dist = tmp / "dist.y4m"
    # A realistic distortion: heavy H.264 compression.
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(ref), "-c:v", "libx264", "-crf", "40", "-f", "matroska",
                    str(tmp / "dist.mkv")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp / "dist.mkv"), "-f", "yuv4mpegpipe", str(dist)], check=True)
    return ref, dist, tmp


def _ffmpeg_stats(ref, dist, tmp, filter_name):
    stats = tmp / f"{filter_name}.log"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(dist), "-i", str(ref), "-lavfi",
                    f"[0:v][1:v]{filter_name}=stats_file={stats}", "-f", "null", "-"], check=True)
    rows = []
    for line in stats.read_text().splitlines():
        fields = dict(f.split(":", 1) for f in line.split() if ":" in f)
        rows.append(fields)
    return rows


def test_y_psnr_matches_ffmpeg(reference_and_distorted):
    ref, dist, tmp = reference_and_distorted
    ours = [metrics.y_psnr(d, r) for r, d in zip(video.read_all(str(ref))[1], video.read_all(str(dist))[1])]
    theirs = [float(row["psnr_y"]) for row in _ffmpeg_stats(ref, dist, tmp, "psnr")]
    assert len(ours) == len(theirs) == 10
    assert np.max(np.abs(np.array(ours) - theirs)) < 0.05
    assert 20 < np.mean(ours) < 45  # a real distortion, not a trivial comparison


def test_y_ssim_matches_ffmpeg(reference_and_distorted):
    ref, dist, tmp = reference_and_distorted
    ours = [metrics.y_ssim(d, r) for r, d in zip(video.read_all(str(ref))[1], video.read_all(str(dist))[1])]
    theirs = [float(row["Y"]) for row in _ffmpeg_stats(ref, dist, tmp, "ssim")]
    assert np.max(np.abs(np.array(ours) - theirs)) < 0.002
    assert 0.5 < np.mean(ours) < 0.99


def test_psnr_conventions():
    a = np.zeros((8, 8), np.uint8)
    assert metrics.psnr(a, a) == math.inf
    b = a.copy()
    b[0, 0] = 255  # MSE = 255^2 / 64 -> PSNR = 10 log10(64)
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(64))
    assert metrics.ssim(a, a) == pytest.approx(1.0)


def test_rgb_psnr_uses_all_channels(reference_and_distorted):
    ref, dist, _ = reference_and_distorted
    r, d = video.read_all(str(ref))[1][0], video.read_all(str(dist))[1][0]
    assert metrics.to_rgb(r).shape == (100, 176, 3)
    assert math.isfinite(metrics.rgb_psnr(r, d)) and metrics.rgb_psnr(r, r) == math.inf
