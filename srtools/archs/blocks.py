"""Small building blocks shared by the architectures."""

from __future__ import annotations

import math

import torch
from torch import nn


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
