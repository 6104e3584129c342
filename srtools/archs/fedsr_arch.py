"""F-EDSR: the small EDSR-like network trained online on the broadcaster's own frames."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import ResidualBlockNoBN, Upsample


class FEDSR(nn.Module):
    """F-EDSR.

    head: conv5x5 (in_channels -> C, C below EDSR's 64); body: ``blocks`` x ResidualBlockNoBN
    then conv3x3, with a skip around the body; tail: pixel-shuffle :class:`Upsample` then conv3x3
    (C -> in_channels). With ``bicubic_skip`` the network predicts the residual over a bicubic
    upscale of its input, and the last conv starts at zero, so an untrained model is exactly
    bicubic and training can only start from there.

    Args:
        scale: upscaling factor (2, 3 or 4).
        channels: feature channels C.
        blocks: residual blocks in the body.
        in_channels: 1 for luma-only models, 3 for YUV/RGB models.
        res_scale: residual scaling inside the blocks.
        bicubic_skip: add a bicubic upscale of the input to the output.

    Shape:
        (N, in_channels, H, W) in [0, 1] -> (N, in_channels, H*scale, W*scale), not clamped.
    """

    task = "upscale"
    LIMITS = {"scale": 4, "channels": 256, "blocks": 64}  # sr-train's; memory, not a design bound

    def __init__(self, scale: int = 2, channels: int = 16, blocks: int = 4, in_channels: int = 1,
                 res_scale: float = 1.0, bicubic_skip: bool = True):
        super().__init__()
        if channels < 1 or blocks < 0 or in_channels not in (1, 3):
            raise ValueError(f"invalid F-EDSR config: channels={channels} blocks={blocks} in_channels={in_channels}")
        self.scale = scale
        self.bicubic_skip = bicubic_skip
        self.head = nn.Conv2d(in_channels, channels, 5, padding=2)
        self.body = nn.Sequential(*[ResidualBlockNoBN(channels, res_scale) for _ in range(blocks)],
                                  nn.Conv2d(channels, channels, 3, padding=1))
        self.upsample = Upsample(scale, channels)
        self.tail = nn.Conv2d(channels, in_channels, 3, padding=1)
        if bicubic_skip:
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def receptive_radius(self) -> int:
        """How far, in input pixels, an output pixel sees: convs at input resolution (head, body, the
        first upsampling conv), then finer ones at 2x, 4x ... (later upsampling convs, the tail), or
        the bicubic skip's 2 pixels. A crop with this much context gives the same output as the
        whole frame (selective SR relies on it)."""
        radius = (self.head.kernel_size[0] // 2) + sum(m.kernel_size[0] // 2 for m in self.body.modules()
                                                     if isinstance(m, nn.Conv2d))
        resolution = 1
        for module in self.upsample:
            if isinstance(module, nn.Conv2d):
                radius += (module.kernel_size[0] // 2) / resolution
            elif isinstance(module, nn.PixelShuffle):
                resolution *= module.upscale_factor
        radius += (self.tail.kernel_size[0] // 2) / self.scale
        return math.ceil(max(radius, 2 if self.bicubic_skip else 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(x)
        features = features + self.body(features)
        out = self.tail(self.upsample(features))
        if self.bicubic_skip:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out
