"""TCSR: temporal refinement of consecutive F-EDSR outputs by flow alignment and attention fusion.

F-EDSR upscales each frame on its own; TCSR takes 2k+1 consecutive upscaled frames
I(t-k) .. I(t+k) at output resolution and refines the middle one with what its neighbours show:

1. :class:`OFRNet` estimates, for every neighbour I(t+i), the optical flow O(t+i) that aligns it
   onto I(t), coarse-to-fine: a flow at a coarse level, upsampled and refined at the next.
2. Each neighbour is warped by its flow (:func:`~srtools.archs.blocks.flow_warp`) to I(t+i,t).
3. Attention fusion: embeddings of I(t+i,t) and I(t) (a conv3x3 each), their element-wise product
   through a sigmoid is a distance map D(t+i,t) that weights the neighbour's embedding; the weighted
   neighbour features and the features of I(t) are concatenated and fused by a conv1x1.
4. Reconstruction: conv3x3, one :class:`~srtools.archs.blocks.ResidualBlockNoBN`, conv3x3 to the
   image channels, added to I(t).

``grid`` sets the resolution the network works at. With ``grid=1`` (the design as published) the
flow levels are 1/2 and full size and fusion and reconstruction run at full size. With ``grid=2``
(the default) everything runs on the half-size grid, which for a x2 upscaler is the low-resolution grid the
frames came from: the flow levels are 1/4 and 1/2 (the finer one upsampled to full size for the
warp, which stays at full size), and fusion and reconstruction see each frame folded into 2x2
pixel blocks (pixel unshuffle), their output unfolded again (pixel shuffle). That costs a quarter
of the convolutions at full size, the difference between TCSR being unaffordable and affordable
on a CPU (benchmarks/bench_tcsr.py).

The last reconstruction conv and the last conv of both flow stages start at zero, so an untrained
TCSR outputs I(t) exactly, with zero flows: training starts from F-EDSR's own output.

Flows are in pixels, channel 0 horizontal and channel 1 vertical, in the backward-warp convention
of :func:`~srtools.archs.blocks.flow_warp`: aligned(y, x) = neighbour(y + O_y, x + O_x).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import ResidualBlockNoBN, flow_warp


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """Halve an image: 2x2 average pooling, an odd last row / column first replicated.

    Half-size pixel i covers full-size pixels 2i and 2i+1, whatever the parity of the size, so
    :func:`upsample_flow2x` is its exact geometric inverse.

    Shape:
        (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2))
    """
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
    return F.avg_pool2d(x, 2)


def upsample_flow2x(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bring a half-size flow (from :func:`downsample2x` inputs) to full size ``size``.

    Bilinear x2 upsampling, cropped to ``size`` (the inverse of :func:`downsample2x`'s padding),
    with the values doubled: a flow is in pixels, and a full-size pixel is half a half-size pixel.

    Shape:
        (N, 2, ceil(H/2), ceil(W/2)) -> (N, 2, H, W) for ``size`` (H, W)
    """
    up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=False)
    return 2 * up[..., :size[0], :size[1]]


class FlowStage(nn.Sequential):
    """conv3x3-LeakyReLU, ``blocks`` x ResidualBlockNoBN, conv3x3 to a 2-channel flow (zero-initialised).

    Args:
        in_channels: input channels.
        channels: feature channels.
        blocks: residual blocks.

    Shape:
        (N, in_channels, H, W) -> (N, 2, H, W), in pixels; all zero untrained.
    """

    def __init__(self, in_channels: int, channels: int, blocks: int):
        out = nn.Conv2d(channels, 2, 3, padding=1)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        super().__init__(nn.Conv2d(in_channels, channels, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                         *[ResidualBlockNoBN(channels) for _ in range(blocks)], out)


def downsample_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Halve ``x`` with :func:`downsample2x` until it has ``size`` (H, W): a frame at the size of a
    coarser flow level.

    Raises:
        ValueError: ``size`` is not reached by halving.
    """
    while tuple(x.shape[-2:]) != tuple(size):
        if x.shape[-2] <= size[0] and x.shape[-1] <= size[1]:
            raise ValueError(f"{tuple(x.shape[-2:])} does not halve to {tuple(size)}")
        x = downsample2x(x)
    return x


class OFRNet(nn.Module):
    """Optical flow reconstruction net: the flow aligning a neighbour frame onto the reference, coarse to fine.

    The fine level works at 1/``grid`` size (the frames halved with :func:`downsample2x`), the
    coarse level at half that. Coarse level: from a zero flow, :class:`FlowStage` on the reference
    and the neighbour predicts the coarse flow. (Warping by the zero starting flow is the identity
    and its channels would add nothing to the first conv, so both are left out.) Fine level: the
    coarse flow upsampled (:func:`upsample_flow2x`), the neighbour warped by it, and a second
    :class:`FlowStage` on (reference, warped neighbour, upsampled flow) predicts a residual added to
    the upsampled flow. With ``grid=2`` the fine flow is then upsampled to full size.

    Args:
        in_channels: image channels C.
        channels: feature channels of both flow stages.
        blocks: residual blocks per flow stage.
        grid: 1 or 2, the fine level's size divisor.

    Shape:
        reference, neighbour (N, C, H, W) -> coarse flow (N, 2, ceil(H/2g), ceil(W/2g)) for ``grid`` g,
        full-size flow (N, 2, H, W); both in pixels at their own size, zero untrained.
    """

    def __init__(self, in_channels: int = 1, channels: int = 16, blocks: int = 2, grid: int = 1):
        super().__init__()
        self.grid = grid
        self.level1 = FlowStage(2 * in_channels, channels, blocks)
        self.level2 = FlowStage(2 * in_channels + 2, channels, blocks)

    def forward(self, reference: torch.Tensor, neighbour: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = reference.shape[-2:]
        if self.grid == 2:
            reference, neighbour = downsample2x(reference), downsample2x(neighbour)
        flow_coarse = self.level1(torch.cat((downsample2x(reference), downsample2x(neighbour)), dim=1))
        flow_up = upsample_flow2x(flow_coarse, reference.shape[-2:])
        warped = flow_warp(neighbour, flow_up)
        flow_fine = flow_up + self.level2(torch.cat((reference, warped, flow_up), dim=1))
        return flow_coarse, flow_fine if self.grid == 1 else upsample_flow2x(flow_fine, size)


class TCSR(nn.Module):
    """TCSR temporal refinement network (see the module docstring for the design).

    Args:
        k: neighbours on each side of the middle frame (2k+1 input frames).
        channels: feature channels F of the fusion and reconstruction.
        flow_channels: feature channels of the flow estimation (:class:`OFRNet`).
        flow_blocks: residual blocks per flow stage.
        in_channels: 1 for luma-only models, 3 for YUV/RGB models.
        grid: 2 (on the half-size grid, the default) or 1 (the published design); see the module docstring.

    Shape:
        (N, 2k+1, in_channels, H, W) in [0, 1], frames t-k .. t+k at output resolution
        -> (N, in_channels, H, W), the refined frame t, not clamped. Any H, W >= 1.
    """

    task = "refine"
    # k: what sr-tcsr's window keeps (srtools.tcsr.K_MAX); the sizes: sr-train's.
    LIMITS = {"k": 8, "channels": 256, "flow_channels": 256, "flow_blocks": 64}
    # No ``scale`` attribute, on purpose: TCSR keeps the resolution, and its model file records the
    # scale of the upscaler whose output it refines, which modelfile.load then checks alone.

    def __init__(self, k: int = 1, channels: int = 16, flow_channels: int = 16, flow_blocks: int = 1,
                 in_channels: int = 1, grid: int = 2):
        super().__init__()
        ints = {"k": k, "channels": channels, "flow_channels": flow_channels, "flow_blocks": flow_blocks,
                "in_channels": in_channels, "grid": grid}
        bad = [f"{name}={value!r}" for name, value in ints.items()
               if not isinstance(value, int) or isinstance(value, bool)]
        if bad or k < 1 or channels < 1 or flow_channels < 1 or flow_blocks < 0 or in_channels not in (1, 3) \
                or grid not in (1, 2):
            raise ValueError("invalid TCSR config: " + " ".join(bad or [f"{n}={v}" for n, v in ints.items()]))
        self.k = k
        self.in_channels = in_channels
        self.grid = grid
        folded = in_channels * grid * grid  # a frame's channels once folded onto the grid
        self.ofrnet = OFRNet(in_channels, flow_channels, flow_blocks, grid)
        self.embed_neighbour = nn.Conv2d(folded, channels, 3, padding=1)
        self.embed_reference = nn.Conv2d(folded, channels, 3, padding=1)
        self.fusion = nn.Conv2d((2 * k + 1) * channels, channels, 1)
        self.reconstruction = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            ResidualBlockNoBN(channels),
            nn.Conv2d(channels, folded, 3, padding=1))
        nn.init.zeros_(self.reconstruction[-1].weight)
        nn.init.zeros_(self.reconstruction[-1].bias)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)

    def scale_correction(self, strength: float) -> None:
        """Multiply the correction added to I(t) by ``strength``, in place (0: the identity).

        The last reconstruction conv and the pixel shuffle after it are linear, so scaling that
        conv's weights and bias scales the correction exactly, at no cost per frame: a model of a
        given strength is an ordinary model file.
        """
        with torch.no_grad():
            self.reconstruction[-1].weight.mul_(strength)
            self.reconstruction[-1].bias.mul_(strength)

    def neighbour_indices(self) -> list[int]:
        """Positions of the 2k neighbours in the frame axis, in time order (t-k .. t-1, t+1 .. t+k)."""
        return [i for i in range(2 * self.k + 1) if i != self.k]

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Refine the middle frame.

        Args:
            frames: (N, 2k+1, C, H, W), frames t-k .. t+k.

        Returns:
            (N, C, H, W), the refined frame t.
        """
        return self.forward_with_flows(frames)[0]

    def forward_with_flows(self, frames: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor],
                                                                   list[torch.Tensor], list[torch.Tensor]]:
        """Refine the middle frame and return the flows the losses need (see :func:`tcsr_loss`).

        Args:
            frames: (N, 2k+1, C, H, W), frames t-k .. t+k.

        Returns:
            output (N, C, H, W); then, one entry per neighbour in :meth:`neighbour_indices` order,
            coarse flows (see :class:`OFRNet`), full-size flows (N, 2, H, W) and the neighbour frames
            warped onto frame t by them (N, C, H, W).
        """
        if frames.dim() != 5 or frames.shape[1] != 2 * self.k + 1 or frames.shape[2] != self.in_channels:
            raise ValueError(f"TCSR(k={self.k}, in_channels={self.in_channels}) expects frames of shape "
                             f"(N, {2 * self.k + 1}, {self.in_channels}, H, W), got {tuple(frames.shape)}")
        n, _, c, h, w = frames.shape
        k2 = 2 * self.k
        reference = frames[:, self.k]
        # All neighbours in one batch: (N * 2k, C, H, W), neighbour-major within each sample.
        neighbours = frames[:, self.neighbour_indices()].reshape(n * k2, c, h, w)
        references = reference.unsqueeze(1).expand(n, k2, c, h, w).reshape(n * k2, c, h, w)
        flows_coarse, flows_full = self.ofrnet(references, neighbours)
        aligned = flow_warp(neighbours, flows_full)

        ref_features = self.embed_reference(self._fold(reference))  # (N, F, H/g, W/g)
        nbr_features = self.embed_neighbour(self._fold(aligned))  # (N * 2k, F, H/g, W/g)
        channels, gh, gw = ref_features.shape[1:]
        distance = torch.sigmoid(nbr_features.view(n, k2, channels, gh, gw) * ref_features.unsqueeze(1))
        weighted = distance * nbr_features.view(n, k2, channels, gh, gw)
        # Time order, the reference's own features in the middle: (N, (2k+1) * F, H/g, W/g).
        features = torch.cat((weighted[:, :self.k], ref_features.unsqueeze(1), weighted[:, self.k:]), dim=1)
        fused = self.lrelu(self.fusion(features.reshape(n, (k2 + 1) * channels, gh, gw)))
        residual = F.pixel_shuffle(self.reconstruction(fused), self.grid)[..., :h, :w]
        output = reference + residual

        def per_neighbour(t: torch.Tensor) -> list[torch.Tensor]:
            return list(t.reshape(n, k2, *t.shape[1:]).unbind(1))

        return output, per_neighbour(flows_coarse), per_neighbour(flows_full), per_neighbour(aligned)

    def _fold(self, x: torch.Tensor) -> torch.Tensor:
        """(M, C, H, W) -> (M, C g^2, ceil(H/g), ceil(W/g)) for ``grid`` g: each g x g pixel block folded
        into channels (an odd last row or column first replicated)."""
        if self.grid == 1:
            return x
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
        return F.pixel_unshuffle(x, self.grid)


def charbonnier(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier (smooth L1) loss: mean of sqrt((x - y)^2 + eps^2)."""
    return torch.sqrt((x - y) ** 2 + eps * eps).mean()


def total_variation(flow: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontally and vertically adjacent flow vectors.

    Shape:
        (N, 2, H, W) -> scalar
    """
    dx = (flow[..., :, 1:] - flow[..., :, :-1]).abs().mean() if flow.shape[-1] > 1 else flow.new_zeros(())
    dy = (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean() if flow.shape[-2] > 1 else flow.new_zeros(())
    return dx + dy


def tcsr_loss(model_out: torch.Tensor, target: torch.Tensor, frames: torch.Tensor,
              flows_coarse: list[torch.Tensor], flows_full: list[torch.Tensor],
              alpha: float = 0.01, beta: float = 0.1, smooth: float = 0.01) -> torch.Tensor:
    """TCSR training loss: L_SR + beta * L_OFR2 + alpha * L_OFR1.

    L_SR is the Charbonnier loss of the output against the high-resolution frame t. L_OFR1 and
    L_OFR2 score the coarse and full-size flows by how well they warp each neighbour onto frame t
    at that size (Charbonnier), plus ``smooth`` times their :func:`total_variation`; both are
    averaged over the 2k neighbours. The flows serve the reconstruction, and the coarse one only
    the fine one, so the weights are meant as alpha < beta < 1.

    Args:
        model_out: (N, C, H, W), the output of :meth:`TCSR.forward_with_flows`.
        target: (N, C, H, W), the ground-truth frame t.
        frames: (N, 2k+1, C, H, W), the network's input.
        flows_coarse / flows_full: the flows returned with ``model_out``, in neighbour order.
        alpha / beta: weights of L_OFR1 / L_OFR2.
        smooth: weight of the flow smoothness term inside L_OFR1 and L_OFR2.

    Returns:
        The scalar loss.
    """
    if min(alpha, beta, smooth) < 0:
        raise ValueError(f"negative loss weight: alpha={alpha} beta={beta} smooth={smooth}")
    k = frames.shape[1] // 2
    neighbours = [frames[:, i] for i in range(frames.shape[1]) if i != k]
    if not len(neighbours) == len(flows_coarse) == len(flows_full):
        raise ValueError(f"{len(neighbours)} neighbours but {len(flows_coarse)} / {len(flows_full)} flows")
    reference = frames[:, k]
    coarse_size = flows_coarse[0].shape[-2:]
    reference_coarse = downsample_to(reference, coarse_size)
    ofr1 = ofr2 = model_out.new_zeros(())
    for neighbour, flow_coarse, flow_full in zip(neighbours, flows_coarse, flows_full, strict=True):
        ofr1 = ofr1 + charbonnier(flow_warp(downsample_to(neighbour, coarse_size), flow_coarse), reference_coarse) \
            + smooth * total_variation(flow_coarse)
        ofr2 = ofr2 + charbonnier(flow_warp(neighbour, flow_full), reference) + smooth * total_variation(flow_full)
    return charbonnier(model_out, target) + (beta * ofr2 + alpha * ofr1) / len(neighbours)
