"""Small building blocks shared by the architectures."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ResidualBlockNoBN(nn.Module):
    """conv3x3-ReLU-conv3x3 with an identity skip and no batch norm (EDSR).

    Args:
        channels: feature channels C.
        res_scale: multiplier on the residual branch (EDSR's residual scaling).

    Shape:
        (N, C, H, W) -> (N, C, H, W)
    """

    def __init__(self, channels: int, res_scale: float = 1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv2(self.relu(self.conv1(x)))
        return x + (residual if self.res_scale == 1 else residual * self.res_scale)


class Upsample(nn.Sequential):
    """Sub-pixel upsampler: conv3x3 to C*r^2 channels then pixel shuffle, per factor 2 (or 3 once).

    Args:
        scale: 2, 3 or a power of two.
        channels: feature channels C.

    Shape:
        (N, C, H, W) -> (N, C, H*scale, W*scale)
    """

    def __init__(self, scale: int, channels: int):
        layers: list[nn.Module] = []
        if scale == 3:
            layers += [nn.Conv2d(channels, 9 * channels, 3, padding=1), nn.PixelShuffle(3)]
        elif scale >= 2 and scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2)]
        else:
            raise ValueError(f"scale {scale} not supported (2, 3 or a power of two)")
        super().__init__(*layers)


def flow_warp(x: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear",
              padding_mode: str = "border") -> torch.Tensor:
    """Backward-warp ``x`` by a dense optical flow given in pixels.

    ``output[n, :, y, x] = x[n, :, y + flow[n, 1, y, x], x + flow[n, 0, y, x]]``, sampled with
    :func:`torch.nn.functional.grid_sample`. Pixel ``i`` of a row has its centre at coordinate ``i``
    (0 .. W-1), which is what ``align_corners=True`` normalises to -1 .. 1, so a flow of exactly
    ``d`` pixels shifts by exactly ``d`` pixels at any size, and an integer flow copies pixels (to
    float rounding). Samples from outside the image take the nearest edge pixel (``padding_mode="border"``).

    Args:
        x: the image or feature map to warp.
        flow: displacement in pixels; channel 0 horizontal (x, positive: sample further right),
            channel 1 vertical (y, positive: sample further down).
        mode: ``grid_sample`` interpolation, ``"bilinear"`` or ``"nearest"``.
        padding_mode: ``grid_sample`` padding, ``"border"``, ``"zeros"`` or ``"reflection"``.

    Shape:
        x (N, C, H, W), flow (N, 2, H, W) -> (N, C, H, W)
    """
    n, _, h, w = x.shape
    if flow.shape != (n, 2, h, w):
        raise ValueError(f"flow of shape {tuple(flow.shape)} for an input of shape {tuple(x.shape)}")
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    # Sample positions in pixels, normalised to -1 .. 1 (a 1-pixel axis: the single centre, 0).
    grid_x = (xs + flow[:, 0]) * (2 / max(w - 1, 1)) - 1
    grid_y = (ys + flow[:, 1]) * (2 / max(h - 1, 1)) - 1
    grid = torch.stack((grid_x, grid_y), dim=3)
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode=padding_mode, align_corners=True)
