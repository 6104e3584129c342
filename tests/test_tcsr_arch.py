"""TCSR temporal refinement network, its flow warp and its loss."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from srtools import archs, modelfile
from srtools.archs.blocks import flow_warp
from srtools.archs.tcsr_arch import TCSR, downsample2x, tcsr_loss, upsample_flow2x
from srtools.errors import ModelError

TINY = {"k": 1, "channels": 8, "flow_channels": 8, "flow_blocks": 1}


def constant_flow(n, h, w, dx, dy):
    flow = torch.empty(n, 2, h, w)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


def test_flow_warp_integer_shift():
    x = torch.rand(2, 3, 11, 14)
    out = flow_warp(x, constant_flow(2, 11, 14, 3, -2))
    # output(y, x) = input(y - 2, x + 3): rows 2.. and columns ..-3 are inside the image.
    torch.testing.assert_close(out[..., 2:, :-3], x[..., :-2, 3:], atol=1e-5, rtol=0)
    # Outside, the border pixel is repeated.
    torch.testing.assert_close(out[..., 2:, -1], x[..., :-2, -1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[..., 0, :-3], x[..., 0, 3:], atol=1e-5, rtol=0)


def test_flow_warp_fractional_shift_averages_neighbours():
    x = torch.rand(1, 1, 9, 12)
    out = flow_warp(x, constant_flow(1, 9, 12, 0.5, 0))
    torch.testing.assert_close(out[..., :, :-1], (x[..., :, :-1] + x[..., :, 1:]) / 2, atol=1e-5, rtol=0)
    out = flow_warp(x, constant_flow(1, 9, 12, 0, 0.5))
    torch.testing.assert_close(out[..., :-1, :], (x[..., :-1, :] + x[..., 1:, :]) / 2, atol=1e-5, rtol=0)


def test_flow_warp_zero_flow_is_identity():
    x = torch.rand(2, 3, 7, 10)
    torch.testing.assert_close(flow_warp(x, torch.zeros(2, 2, 7, 10)), x, atol=1e-6, rtol=0)
    x = torch.rand(1, 1, 1, 5)  # a one-pixel axis
    torch.testing.assert_close(flow_warp(x, torch.zeros(1, 2, 1, 5)), x, atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        flow_warp(x, torch.zeros(1, 2, 5, 1))


def test_half_size_flow_geometry_odd_sizes():
    x = torch.rand(1, 1, 37, 50)
    assert downsample2x(x).shape == (1, 1, 19, 25)
    # A constant half-size flow of d pixels is 2d pixels at full size, at the full size exactly.
    up = upsample_flow2x(constant_flow(1, 19, 25, 1.5, -0.25), (37, 50))
    assert up.shape == (1, 2, 37, 50)
    torch.testing.assert_close(up, constant_flow(1, 37, 50, 3.0, -0.5))


@pytest.mark.parametrize("k, grid, coarse", [(1, 1, (19, 25)), (2, 1, (19, 25)), (1, 2, (10, 13))])
def test_untrained_tcsr_is_identity_on_middle_frame(k, grid, coarse):
    model = TCSR(**{**TINY, "k": k, "grid": grid}).eval()
    frames = torch.rand(2, 2 * k + 1, 1, 37, 50)  # odd: the grid's folding pads and crops
    with torch.no_grad():
        out, flows_coarse, flows_full, aligned = model.forward_with_flows(frames)
        assert torch.equal(model(frames), frames[:, k])
    assert torch.equal(out, frames[:, k])
    assert len(flows_coarse) == len(flows_full) == len(aligned) == 2 * k
    assert all(f.shape == (2, 2, *coarse) and not f.any() for f in flows_coarse)
    assert all(f.shape == (2, 2, 37, 50) and not f.any() for f in flows_full)
    # zero flows: the neighbours as they are
    torch.testing.assert_close(aligned[0], frames[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(aligned[-1], frames[:, -1], atol=1e-5, rtol=0)


def test_scaling_the_correction_scales_what_is_added_to_the_middle_frame():
    torch.manual_seed(0)
    model = TCSR(**TINY).eval()
    for p in model.reconstruction[-1].parameters():
        torch.nn.init.normal_(p, std=0.05)  # a correction that is not zero
    frames = torch.rand(1, 3, 1, 24, 32)
    with torch.no_grad():
        full = model(frames) - frames[:, 1]
        assert full.abs().mean() > 1e-3
        model.scale_correction(0.5)
        torch.testing.assert_close(model(frames) - frames[:, 1], 0.5 * full)
        model.scale_correction(0.0)
        assert torch.equal(model(frames), frames[:, 1])


def test_tcsr_rgb_and_bad_inputs():
    model = TCSR(**TINY, in_channels=3).eval()
    frames = torch.rand(1, 3, 3, 9, 8)
    with torch.no_grad():
        assert torch.equal(model(frames), frames[:, 1])
        with pytest.raises(ValueError):
            model(torch.rand(1, 5, 3, 9, 8))  # 2k+1 = 3 frames expected
        with pytest.raises(ValueError):
            model(torch.rand(1, 3, 1, 9, 8))  # 3 channels expected


@pytest.mark.parametrize("bad", [{"k": 0}, {"channels": 0}, {"flow_channels": -1}, {"flow_blocks": -1},
                                 {"in_channels": 2}, {"k": 1.5}, {"channels": True}, {"grid": 3}, {"grid": 4}])
def test_tcsr_rejects_bad_config(bad):
    with pytest.raises(ValueError):
        TCSR(**bad)


@pytest.mark.parametrize("grid", [1, 2])
def test_training_step_changes_parameters_and_gradients_reach_everything(grid):
    torch.manual_seed(0)
    model = TCSR(**TINY, grid=grid)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames, target = torch.rand(2, 3, 1, 15, 18), torch.rand(2, 1, 15, 18)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    losses = []
    for _ in range(2):
        optimiser.zero_grad()
        out, flows_coarse, flows_full, _ = model.forward_with_flows(frames)
        assert out.shape == (2, 1, 15, 18)
        loss = tcsr_loss(out, target, frames, flows_coarse, flows_full)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    # The zero-initialised last convs move on the first step (both flow stages through the flow
    # losses); after it every parameter gets a gradient, so all of them have moved.
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == set(before)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert losses[1] < losses[0]


def test_loss_terms():
    frames = torch.rand(1, 3, 1, 10, 12)
    zero_half, zero_full = [torch.zeros(1, 2, 5, 6)] * 2, [torch.zeros(1, 2, 10, 12)] * 2
    centre = frames[:, 1]
    sr_only = tcsr_loss(centre, centre, frames, zero_half, zero_full, alpha=0, beta=0)
    assert sr_only.item() == pytest.approx(1e-3)  # Charbonnier's eps
    with_flows = tcsr_loss(centre, centre, frames, zero_half, zero_full, alpha=0.01, beta=0.1)
    assert with_flows > sr_only
    with pytest.raises(ValueError):
        tcsr_loss(centre, centre, frames, zero_half[:1], zero_full)


def test_loss_prefers_the_true_flow():
    # A smooth frame and neighbours moved by whole pixels: the flow that undoes the motion scores
    # better than no flow, at both sizes.
    ys, xs = torch.meshgrid(torch.arange(24.0), torch.arange(32.0), indexing="ij")

    def scene(dx, dy):
        return torch.sin((xs - dx) / 3) * torch.cos((ys - dy) / 4)

    frames = torch.stack((scene(-2, 2), scene(0, 0), scene(2, -2))).view(1, 3, 1, 24, 32)
    # Neighbour t-1 shows the scene 2 px left / 2 px down of frame t, so aligning it samples
    # 2 px further left (flow x -2) and 2 px further down (flow y +2); t+1 the opposite.
    true_half = [constant_flow(1, 12, 16, -1, 1), constant_flow(1, 12, 16, 1, -1)]
    true_full = [constant_flow(1, 24, 32, -2, 2), constant_flow(1, 24, 32, 2, -2)]
    zero_half, zero_full = [torch.zeros(1, 2, 12, 16)] * 2, [torch.zeros(1, 2, 24, 32)] * 2
    centre = frames[:, 1]
    true_quarter = [constant_flow(1, 6, 8, -0.5, 0.5), constant_flow(1, 6, 8, 0.5, -0.5)]
    zero_quarter = [torch.zeros(1, 2, 6, 8)] * 2
    for alpha, beta in ((0, 0.1), (0.01, 0)):
        assert tcsr_loss(centre, centre, frames, true_half, true_full, alpha=alpha, beta=beta) \
            < tcsr_loss(centre, centre, frames, zero_half, zero_full, alpha=alpha, beta=beta)
        # grid=2 models give their coarse flow at 1/4 size: scored there
        assert tcsr_loss(centre, centre, frames, true_quarter, true_full, alpha=alpha, beta=beta) \
            < tcsr_loss(centre, centre, frames, zero_quarter, zero_full, alpha=alpha, beta=beta)


def tcsr_info(hparams):
    return modelfile.ModelInfo("tcsr", hparams, 2, "y")


def test_registry_and_model_file_round_trip(tmp_path):
    hparams = {**TINY, "in_channels": 1}
    model = archs.build("tcsr", hparams)
    assert isinstance(model, TCSR)
    torch.nn.init.normal_(model.reconstruction[-1].weight, std=0.1)
    torch.nn.init.normal_(model.ofrnet.level2[-1].weight, std=0.01)
    path = tmp_path / "tcsr.safetensors"
    modelfile.save(path, model, tcsr_info(hparams))
    loaded, info = modelfile.load(path, scale=2, arch="tcsr")
    assert info.arch == "tcsr" and info.scale == 2 and info.color == "y" and info.hparams == hparams
    frames = torch.rand(1, 3, 1, 9, 11)
    with torch.no_grad():
        assert torch.equal(model.eval()(frames), loaded(frames))
    with pytest.raises(ModelError, match="upscales x2, expected x4"):
        modelfile.load(path, scale=4)
    modelfile.save(tmp_path / "bad.safetensors", model, tcsr_info({**hparams, "k": 0}))
    with pytest.raises(ModelError, match="hyperparameters rejected"):
        modelfile.load(tmp_path / "bad.safetensors")


def test_model_file_with_wrong_shapes_for_hparams_is_rejected(tmp_path):
    hparams = {**TINY, "channels": 16}
    path = tmp_path / "tcsr.safetensors"
    modelfile.save(path, TCSR(**hparams), tcsr_info(hparams))
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    metadata["hparams"] = json.dumps({**hparams, "channels": 8})
    save_file(load_file(str(path)), str(tmp_path / "lying.safetensors"), metadata=metadata)
    with pytest.raises(ModelError, match="weights do not fit"):
        modelfile.load(tmp_path / "lying.safetensors")
