"""sr-eval: a recording's low-res stream as sr-push sends it, a model trained on it, SR and bicubic scored
against the recording frame by frame, the videos and the plot."""

import json
import subprocess

import numpy as np
import pytest
import torch

from srtools import archs, modelfile

from conftest import expect_error, make_clip, run_command


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """2 s of testsrc2 at 320x180 (fine lines, text, motion)."""
    return make_clip(tmp_path_factory.mktemp("eval") / "clip.mp4", seconds=2)


def probe(path) -> tuple[int, int, int]:
    """(width, height, frames) of a video."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                          "stream=width,height,nb_read_frames", "-of", "json", str(path)], capture_output=True,
                         check=True).stdout
    stream = json.loads(out)["streams"][0]
    return stream["width"], stream["height"], int(stream["nb_read_frames"])


@pytest.mark.slow
def test_trains_scores_and_writes_the_outputs(tmp_path, clip):
    out = tmp_path / "eval"
    result = run_command("sr-eval", clip, "--out", out, "--max-seconds", 6, timeout=600)
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert (summary["frames"], summary["fps"], summary["hr"], summary["lr"]) == (50, 25.0, [320, 180], [160, 90])
    assert summary["model"]["trained"] and summary["model"]["version"] == 1
    assert (out / "spool" / "models" / "fedsr-x2-000001.safetensors").is_file()
    assert summary["gain_db"] > 0, summary  # the model beats bicubic on the stream it was trained on
    frames = summary["per_frame"]
    assert [f["frame"] for f in frames] == list(range(50))
    for kind, field in (("sr", "sr_psnr"), ("bicubic", "bicubic_psnr")):
        assert summary[kind]["y_psnr_db"] == pytest.approx(np.mean([f[field] for f in frames]), abs=1e-3)
    assert summary["gain_db"] == pytest.approx(summary["sr"]["y_psnr_db"] - summary["bicubic"]["y_psnr_db"], abs=1e-3)
    assert 0 < summary["bicubic"]["y_ssim"] < summary["sr"]["y_ssim"] + 0.02 <= 1.02
    outputs = summary["outputs"]
    assert probe(outputs["lr"]) == (160, 90, 50)
    for kind in ("sr", "bicubic", "wipe"):
        assert probe(outputs[kind]) == (320, 180, 50), kind
    assert (out / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = result.stderr.decode()
    assert "stream time" in table and "all" in table and f"{summary['gain_db']:+.2f}" in table


@pytest.mark.slow
def test_a_given_model_is_scored_without_training(tmp_path, clip):
    hparams = {"scale": 2, "channels": 4, "blocks": 1, "in_channels": 1}
    model = archs.build("fedsr", hparams)  # a new F-EDSR is exact bicubic...
    with torch.no_grad():
        model.tail.bias.fill_(0.1)  # ...plus 25 levels: measurably worse
    path = tmp_path / "m.safetensors"
    modelfile.save(path, model, modelfile.ModelInfo("fedsr", hparams, 2, source="lifted"))
    out = tmp_path / "eval"
    result = run_command("sr-eval", clip, "--out", out, "--model", path, "--no-videos")
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert summary["model"] == {"file": str(path), "version": None, "trained": False}
    assert summary["gain_db"] < -5 and not (out / "spool").exists()
    assert sorted(p.name for p in out.iterdir()) == ["lr.mp4", "quality.png"]


def test_refusals(tmp_path, clip):
    expect_error(run_command("sr-eval", clip, "--out", tmp_path / "a", "--spool", tmp_path, "--model", tmp_path / "m"),
                 2, "not both")
    expect_error(run_command("sr-eval", tmp_path / "missing.mp4", "--out", tmp_path / "b"), 3, "no such file")
    expect_error(run_command("sr-eval", "-q", clip, "--out", tmp_path / "c", "--spool", tmp_path / "empty"), 4,
                 "no x2 upscaling model")
