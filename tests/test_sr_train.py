"""sr-train: real clips, real training, a real spool."""

import copy
import json
import subprocess

import numpy as np
import pytest
import torch

from srtools import modelfile
from srtools.archs.tcsr_arch import TCSR
from srtools.spool import Spool
from srtools.training import PairSet, RefineRecipe, calibrate_strength, hold_out

from conftest import make_clip, run_command

TINY = ("--channels", "4", "--blocks", "1", "--max-seconds", "3", "--max-frames", "12")


def test_trains_and_publishes(tmp_path, hr_clip):
    result = run_command("sr-train", "--spool", tmp_path / "spool", "--hr", hr_clip, *TINY)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["version"] == 1 and summary["frames"] == 12 and summary["steps"] > 0
    # Starts from (torch's) bicubic and keeps the best held-out model, so it is never worse than
    # bicubic; the gain is measured against OpenCV's bicubic, which differs at the borders.
    assert summary["gain_db"] > -0.05
    pointer = Spool(tmp_path / "spool").current("fedsr", 2)
    model, info = modelfile.load(pointer.path, scale=2)
    assert info.gain_db == summary["gain_db"] and info.source == "hr.mp4" and info.color == "y"
    assert info.hparams == {"scale": 2, "channels": 4, "blocks": 1, "in_channels": 1}
    assert b"published v1" in result.stderr

    assert summary["start"] == "scratch"  # no generic model ships for 4x1

    again = run_command("sr-train", "--spool", tmp_path / "spool", "--hr", hr_clip, "--init", "current",
                        "--max-seconds", "2", "--max-frames", "6")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["version"] == 2 and json.loads(again.stdout)["start"] == "current v1"
    assert modelfile.load(Spool(tmp_path / "spool").current("fedsr", 2).path)[1].hparams["channels"] == 4

    # auto (the default) warm-starts from the current model when it is the configuration asked for.
    auto = run_command("sr-train", "--spool", tmp_path / "spool", "--hr", hr_clip, *TINY)
    assert auto.returncode == 0, auto.stderr
    assert json.loads(auto.stdout)["start"] == "current v2"


def test_default_configuration_starts_from_the_generic_model(tmp_path, hr_clip):
    result = run_command("sr-train", "--spool", tmp_path / "spool", "--hr", hr_clip, "--max-seconds", "2",
                         "--max-frames", "12")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["start"] == "generic" and summary["gain_db"] > 0.1, summary


def test_a_start_worse_than_bicubic_is_never_published(tmp_path, hr_clip):
    """A start that hurts this content (here: noise-damaged weights that a near-zero learning rate cannot
    repair) loses to the new model scored beside it: the result is never worse than bicubic."""
    first = run_command("sr-train", "--spool", tmp_path / "spool", "--hr", hr_clip, *TINY)
    assert first.returncode == 0, first.stderr
    model, info = modelfile.load(json.loads(first.stdout)["file"])
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            weight.add_(0.3 * torch.randn_like(weight))
    damaged = tmp_path / "damaged.safetensors"
    modelfile.save(damaged, model, info)
    result = run_command("sr-train", "--spool", tmp_path / "spool", "--hr", hr_clip, "--init", damaged,
                         "--learning-rate", "1e-9", *TINY)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["start"] == str(damaged) and summary["gain_db"] > -0.05, summary


def test_frame_aligned_lr_recording_and_yuv_mode(tmp_path, hr_clip):
    lr = tmp_path / "lr.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(hr_clip), "-vf", "scale=iw/2:ih/2:flags=area",
                    "-c:v", "libx264", "-crf", "30", str(lr)], check=True)
    result = run_command("sr-train", "--spool", tmp_path, "--hr", hr_clip, "--lr", lr, "--color", "yuv",
                         "--duration", "1", *TINY)
    assert result.returncode == 0, result.stderr
    info = modelfile.read_info(json.loads(result.stdout)["file"])
    assert info.color == "yuv" and info.hparams["in_channels"] == 3


def test_scale_three_crops_to_a_multiple(tmp_path):
    clip = make_clip(tmp_path / "odd.mp4", size="100x62", seconds=1)
    result = run_command("sr-train", "--spool", tmp_path, "--hr", clip, "--scale", "3", "--patch", "16", *TINY)
    assert result.returncode == 0, result.stderr
    assert modelfile.read_info(json.loads(result.stdout)["file"]).scale == 3


@pytest.mark.parametrize("args,code,message", [
    (("--hr", "missing.mp4"), 3, b"missing.mp4: no such file"),
    (("--hr", "{clip}", "--lr", "{clip}"), 3, b"is not 640x360 / 2"),
    (("--hr", "{clip}", "--init", "current"), 2, b"the spool has no fedsr x2 model yet"),
    (("--hr", "{clip}", "--init", "{clip}"), 4, b"unreadable model file"),
    (("--hr", "{clip}", "--init", "generic"), 2, b"no generic model ships for this configuration"),
    (("--hr", "{clip}", "--max-seconds", "0"), 2, b"--max-seconds"),
])
def test_bad_arguments(tmp_path, hr_clip, args, code, message):
    hr = make_clip(tmp_path / "big.mp4", size="640x360", seconds=0.2) if "--lr" in args else hr_clip
    args = [a.format(clip=hr) for a in args]
    result = run_command("sr-train", "--spool", tmp_path, *args, *TINY[:4])
    assert result.returncode == code, result.stderr
    assert message in result.stderr and b"Traceback" not in result.stderr
    assert result.stdout == b""


def test_corrupt_clip_is_bad_input(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    result = run_command("sr-train", "--spool", tmp_path, "--hr", bad, *TINY)
    assert result.returncode == 3  # the input's fault, as for every command (srtools.errors)
    errors = [line for line in result.stderr.decode().splitlines() if line.startswith("sr-train: error:")]
    assert len(errors) == 1 and "ffmpeg cannot decode it" in errors[0] and "Invalid data" in errors[0]


def test_tcsr_on_the_upscalers_output(tmp_path, hr_clip):
    spool = tmp_path / "spool"
    fedsr = run_command("sr-train", "--spool", spool, "--hr", hr_clip, *TINY)
    assert fedsr.returncode == 0, fedsr.stderr
    result = run_command("sr-train", "--spool", spool, "--arch", "tcsr", "--hr", hr_clip, "--channels", "4",
                         "--blocks", "0", "--neighbours", "2", "--max-seconds", "4", "--max-frames", "20",
                         "--patch", "16", "--batch", "4")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["arch"] == "tcsr" and summary["baseline"] == "fedsr v1" and summary["frames"] == 20
    # Starts as the identity on F-EDSR's output and keeps the best held-out model: never worse.
    assert summary["gain_db"] >= 0 and summary["steps"] > 0
    model, info = modelfile.load(Spool(spool).current("tcsr", 2).path, scale=2)
    assert info.hparams == {"k": 2, "channels": 4, "flow_channels": 4, "flow_blocks": 0, "in_channels": 1, "grid": 2}
    assert Spool(spool).current("fedsr", 2).version == 1  # the upscaler is untouched


def test_scores_stay_finite_when_the_output_equals_the_target(tmp_path):
    """On a flat clip bicubic, and so the new F-EDSR and TCSR, reproduce the HR frames exactly:
    identical planes count as 99 dB, and the summary stays strict JSON (no Infinity or NaN)."""
    flat = make_clip(tmp_path / "flat.mp4", source="color", seconds=1)
    spool = tmp_path / "spool"

    def reject(constant):
        raise AssertionError(f"{constant} in the summary")

    for arch in (("--arch", "fedsr"), ("--arch", "tcsr", "--patch", "16", "--batch", "4")):
        result = run_command("sr-train", "--spool", spool, "--hr", flat, *TINY, *arch)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout, parse_constant=reject)
        assert summary["val_psnr_db"] == summary["baseline_psnr_db"] == 99.0 and summary["gain_db"] == 0


@pytest.mark.parametrize("args,message", [
    (("--arch", "tcsr", "--color", "yuv"), b"refines luma only"),
    (("--neighbours", "2"), b"--neighbours is for tcsr"),
])
def test_options_of_the_other_architecture(tmp_path, hr_clip, args, message):
    result = run_command("sr-train", "--spool", tmp_path, "--hr", hr_clip, *args)
    assert result.returncode == 2 and message in result.stderr


def test_both_recipes_hold_out_the_same_frames_spread_over_the_clip():
    """Every tenth frame, at most eight spread evenly over the clip, for F-EDSR's pairs and TCSR's windows
    alike; a clip too short to spare a frame is scored on the frames it trains on."""
    frames = np.random.default_rng(0).integers(0, 256, (300, 1, 16, 16), dtype=np.uint8)
    spread = [5, 45, 85, 125, 175, 215, 255, 295]
    train_pairs, val_pairs = PairSet(frames[:, :, ::2, ::2], frames).split()
    assert len(train_pairs) == 292 and np.array_equal(val_pairs.hr, frames[spread])
    tcsr = RefineRecipe([(frames, frames)], 1, 16, torch.device("cpu"), np.random.default_rng(0))
    assert tcsr.val_idx.tolist() == spread and len(np.intersect1d(tcsr.train_idx, spread)) == 0
    assert hold_out(10)[1].tolist() == [5] and [a.tolist() for a in hold_out(4)] == [[0, 1, 2, 3]] * 2


def test_tcsr_windows_stay_inside_their_sequence_and_whole_sequences_are_held_out():
    """Many short runs (the pool's, the generic model's clips): a window never mixes two runs, is centred
    only where it is whole, and held-out runs are scored on their middle frame."""
    runs = [np.full((5, 1, 16, 16), 10 * r, np.uint8) + np.arange(5, dtype=np.uint8)[:, None, None, None]
            for r in range(12)]
    recipe = RefineRecipe([(run, run) for run in runs], 1, 16, torch.device("cpu"), np.random.default_rng(0))
    assert recipe.val_idx.tolist() == [5 * 5 + 2]  # run 5 of 12 held out (every tenth), its middle frame
    assert not set(range(25, 30)) & set(recipe.train_idx.tolist())  # nothing of run 5 is trained on
    assert all(i % 5 in (1, 2, 3) for i in recipe.train_idx)  # centres with a whole window
    for i in recipe.train_idx:
        window = recipe._window(i, 0, 0, 1)[:, 0, 0, 0]
        assert (window // 10).tolist() == [i // 5] * 3 and (window % 10).tolist() == [i % 5 - 1, i % 5, i % 5 + 1]
    inputs, targets = recipe.batch(8)
    assert inputs.shape == (8, 3, 1, 16, 16) and targets.shape == (8, 1, 16, 16)


@pytest.mark.parametrize("truth", [1.0, 0.5, 0.25])
def test_calibration_finds_the_strength_of_correction_the_content_wants(truth):
    """A TCSR whose correction is right in direction but ``1 / truth`` times too strong for a clip is
    scaled back to ``truth`` (its held-out score the best), and a correction of the wrong sign to
    nothing (the identity)."""
    torch.manual_seed(0)
    model = TCSR(k=1, channels=8, flow_channels=8, flow_blocks=1).eval()
    for p in model.reconstruction[-1].parameters():
        torch.nn.init.normal_(p, std=0.2)
    rng = np.random.default_rng(0)
    frames = rng.integers(40, 216, (40, 1, 32, 32), dtype=np.uint8)
    recipe = RefineRecipe([(frames, frames)], 1, 16, torch.device("cpu"), rng)
    with torch.no_grad():
        windows = torch.from_numpy(np.stack([recipe._window(i, 0, 0, 32) for i in range(40)])).float() / 255
        middle = windows[:, 1]
        target = (middle + truth * (model(windows) - middle)).clamp(0, 1)
    recipe.hr = np.round(target.numpy() * 255).astype(np.uint8)
    untouched = copy.deepcopy(model.state_dict())
    scores = calibrate_strength(model, recipe)
    assert next(iter(scores)) == truth and list(scores.values()) == sorted(scores.values(), reverse=True)
    assert recipe.evaluate(model) == scores[truth]
    model.load_state_dict(untouched)
    for p in model.reconstruction[-1].parameters():
        p.data.neg_()
    assert next(iter(calibrate_strength(model, recipe))) == 0
