"""The generic start that ships with the package (srtools.generic)."""

import numpy as np
import pytest
import torch

from srtools import archs, degrade, generic, metrics, modelfile
from srtools.tcsr import refine_frames
from srtools.training import RefineRecipe, calibrate_strength, load_pairs, upscale_planes

from conftest import make_clip

DEFAULT = {"scale": 2, "channels": archs.default_hparam("fedsr", "channels"),
           "blocks": archs.default_hparam("fedsr", "blocks"), "in_channels": 1}
TCSR = archs.default_hparams("tcsr")


def test_ships_for_the_default_configuration_only():
    path = generic.find("fedsr", DEFAULT, 2, "y")
    assert path is not None and path.name == "fedsr-x2-y-16x4.safetensors"
    model, info = modelfile.load(path, scale=2, arch="fedsr")
    assert info.hparams == DEFAULT and info.source.startswith("generic")
    assert generic.find("fedsr", {**DEFAULT, "channels": 8}, 2, "y") is None
    assert generic.find("fedsr", {**DEFAULT, "scale": 3}, 3, "y") is None
    assert generic.find("fedsr", {**DEFAULT, "in_channels": 3}, 2, "yuv") is None


@pytest.mark.parametrize("source", ["mandelbrot", "testsrc2"])
def test_beats_bicubic_on_content_it_was_not_trained_on(tmp_path, source):
    """Trained on photographs only; degraded synthetic sources are new to it."""
    hr = make_clip(tmp_path / "hr.mp4", size="320x180", seconds=1, source=source)
    lr = tmp_path / "lr.mp4"
    degrade.make_lr(str(hr), str(lr), 2)
    pairs, _ = load_pairs(str(hr), str(lr), 2, "y", 8, {}, {})
    model = modelfile.load(generic.find("fedsr", DEFAULT, 2, "y"))[0]
    gains = [metrics.psnr(sr[0], target[0]) - metrics.psnr(bicubic[0], target[0])
             for sr, bicubic, target in zip(upscale_planes(model, pairs.lr, 2, torch.device("cpu")),
                                            upscale_planes(None, pairs.lr, 2, torch.device("cpu")), pairs.hr)]
    assert np.mean(gains) > 0.2, gains


def test_a_generic_tcsr_ships_for_the_default_configuration():
    path = generic.find("tcsr", TCSR, 2, "y")
    assert path is not None and path.name == "tcsr-x2-y-k1-16x16x1-g2.safetensors"
    _, info = modelfile.load(path, scale=2, arch="tcsr")
    assert info.hparams == TCSR and info.source.startswith("generic") and info.gain_db > 0


def test_tcsr_inputs_are_upscaled_by_an_f_edsr_tuned_on_other_clips_of_the_same_photograph():
    """Photograph 0 has three clips, each upscaled by an F-EDSR fine-tuned on the others' half;
    photograph 1 has one, which only the generic F-EDSR can upscale. HR and order are kept."""
    rng = np.random.default_rng(0)
    clips = [(photo, rng.integers(0, 256, (6, 1, 40, 40), dtype=np.uint8),
              rng.integers(0, 256, (6, 1, 80, 80), dtype=np.uint8)) for photo in (0, 0, 1, 0)]
    fedsr = modelfile.load(generic.find("fedsr", DEFAULT, 2, "y"))[0]
    sequences = generic.upscaled_as_a_stream(clips, fedsr, 2, 5, rng)
    by_generic = [upscale_planes(fedsr, lr, 2, torch.device("cpu")) for _, lr, _ in clips]
    assert [hr is clip[2] for (_, hr), clip in zip(sequences, clips)] == [True] * 4
    assert np.array_equal(sequences[2][0], by_generic[2])
    assert all(not np.array_equal(sequences[i][0], by_generic[i]) for i in (0, 1, 3))


def test_the_generic_tcsr_gains_on_a_panning_source_it_never_saw(tmp_path):
    """Trained on photographs under synthetic motion; lavfi's sierpinski pans a fractal. Every frame
    refined at full strength over the generic F-EDSR's output (the identity gains 0)."""
    upscaled, hr = upscaled_by_the_generic_f_edsr(tmp_path, "sierpinski")
    tcsr = modelfile.load(generic.find("tcsr", TCSR, 2, "y"))[0].eval()
    assert np.mean(refined_gains(tcsr, upscaled, hr, range(40))) > 0.05


def upscaled_by_the_generic_f_edsr(tmp_path, source: str) -> tuple[np.ndarray, np.ndarray]:
    """40 frames (1.6 s) of a 320x180 lavfi ``source``, LR as sr-push sends it: (upscaled, HR) luma."""
    hr = make_clip(tmp_path / "hr.mp4", size="320x180", seconds=1.6, source=source)
    lr = tmp_path / "lr.mp4"
    degrade.make_lr(str(hr), str(lr), 2, live=True)
    pairs, _ = load_pairs(str(hr), str(lr), 2, "y", 40, {}, {}, consecutive=True)
    fedsr = modelfile.load(generic.find("fedsr", DEFAULT, 2, "y"))[0]
    return upscale_planes(fedsr, pairs.lr, 2, torch.device("cpu")), pairs.hr


def refined_gains(tcsr: torch.nn.Module, upscaled: np.ndarray, hr: np.ndarray, frames) -> list[float]:
    """Y-PSNR of each of ``frames`` refined by ``tcsr`` less that of its input."""
    refined = refine_frames(tcsr, upscaled, frames)
    return [metrics.psnr(out, hr[t, 0]) - metrics.psnr(upscaled[t, 0], hr[t, 0]) for out, t in zip(refined, frames)]


@pytest.mark.parametrize("source", ["testsrc2", "mandelbrot"])
def test_the_generic_tcsr_scaled_on_a_streams_first_frames_does_not_lose_on_the_next(tmp_path, source):
    """As the push side starts from it: on a source it never saw, its correction scaled to the strength
    that the first 30 frames' held-out ones want (at full strength it loses 0.09 dB on testsrc2), then
    every later frame refined over the generic F-EDSR's output."""
    upscaled, hr = upscaled_by_the_generic_f_edsr(tmp_path, source)
    tcsr = modelfile.load(generic.find("tcsr", TCSR, 2, "y"))[0].eval()
    calibrate_strength(tcsr, RefineRecipe([(upscaled[:30], hr[:30])], 1, 64, torch.device("cpu"),
                                          np.random.default_rng(0)))
    gains = refined_gains(tcsr, upscaled, hr, range(30, 40))
    assert np.mean(gains) >= -0.02, gains
