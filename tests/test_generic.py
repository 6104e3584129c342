"""The generic start that ships with the package (srtools.generic)."""

import numpy as np
import pytest
import torch

from srtools import archs, degrade, generic, metrics, modelfile
from srtools.training import load_pairs, upscale_planes

from conftest import make_clip

DEFAULT = {"scale": 2, "channels": archs.default_hparam("fedsr", "channels"),
           "blocks": archs.default_hparam("fedsr", "blocks"), "in_channels": 1}


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
