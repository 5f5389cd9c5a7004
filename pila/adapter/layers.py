"""Convolutional building blocks shared by the encoder, the plain adapter and the decoder.

Every layer works at latent resolution on (B, C, T, H, W) video features with "same"
zero padding, so T, H and W never change.

Legend: B batch, C channels, T latent frames, H, W latent height and width, D condition
width.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def conv3d(in_channels: int, out_channels: int, kernel_size: int = 1) -> nn.Conv3d:
    """A 3-D convolution with "same" zero padding (``kernel_size`` odd)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    return nn.Conv3d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to exactly zero and return it."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def broadcast_bias(cond: Tensor, projection: nn.Linear) -> Tensor:
    """``projection(c)`` as a per-sample bias (B, C_out, 1, 1, 1) for a (B, C_out, T, H, W) map.

    A pointwise convolution over ``[x, broadcast(c)]`` equals a pointwise convolution over
    ``x`` plus this bias, without materialising the broadcast condition.
    """
    return projection(cond)[:, :, None, None, None]  # (B, C_out, 1, 1, 1)


class ResidualConvBlock(nn.Module):
    """Pre-norm residual block: ``x + conv(SiLU(GN(conv(SiLU(GN(x))))))``.

    Args:
        channels: feature width C (divisible by ``norm_groups``).
        kernel_size: spatiotemporal kernel size (odd).
        norm_groups: GroupNorm groups.
    """

    def __init__(self, channels: int, kernel_size: int = 3, norm_groups: int = 8) -> None:
        super().__init__()
        if channels % norm_groups != 0:
            raise ValueError(
                f"block width {channels} is not divisible by norm_groups={norm_groups}"
            )
        self.norm1 = nn.GroupNorm(norm_groups, channels)
        self.conv1 = conv3d(channels, channels, kernel_size)
        self.norm2 = nn.GroupNorm(norm_groups, channels)
        self.conv2 = conv3d(channels, channels, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) → (B, C, T, H, W)."""
        y = self.conv1(F.silu(self.norm1(x)))
        y = self.conv2(F.silu(self.norm2(y)))
        return x + y


def count_parameters(module: nn.Module) -> int:
    """Number of trainable-or-not parameters of ``module`` (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "ResidualConvBlock",
    "broadcast_bias",
    "conv3d",
    "count_parameters",
    "zero_module",
]
