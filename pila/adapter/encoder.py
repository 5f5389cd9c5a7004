"""Physical encoder E and scaffold head (paper Eq. 2 and 13).

    h = E(x̂0)              (B, hidden, T, H, W)   physical feature at latent resolution
    S = H_scaffold(h)      (B, 32, T, H, W)       pre-AFE slot scaffold

Legend: B batch, C latent channels (16), T latent frames, H, W latent height and width.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pila.adapter.layers import ResidualConvBlock, conv3d


class PhysicalEncoder(nn.Module):
    """E: a pointwise lift of the latent estimate followed by residual conv blocks.

    Args:
        in_channels: latent channels of x̂0 (16 for Wan).
        hidden: feature width of h.
        depth: number of residual blocks.
        kernel_size: spatiotemporal kernel of the blocks.
        norm_groups: GroupNorm groups inside the blocks.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        depth: int,
        kernel_size: int = 3,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        self.lift = conv3d(in_channels, hidden, kernel_size)
        self.blocks = nn.ModuleList(
            ResidualConvBlock(hidden, kernel_size, norm_groups) for _ in range(depth)
        )
        self.norm_out = nn.GroupNorm(norm_groups, hidden)

    def forward(self, x0_hat: Tensor) -> Tensor:
        """Eq. (2): x̂0 (B, C, T, H, W) → h (B, hidden, T, H, W)."""
        h = self.lift(x0_hat)
        for block in self.blocks:
            h = block(h)
        return F.silu(self.norm_out(h))


class ScaffoldHead(nn.Module):
    """H_scaffold, Eq. (13): pointwise projection of h to the 32-channel slot scaffold.

    Args:
        hidden: width of h.
        bank_channels: scaffold width (the bank's 32 channels).
    """

    def __init__(self, hidden: int, bank_channels: int) -> None:
        super().__init__()
        self.proj = conv3d(hidden, bank_channels, 1)

    def forward(self, h: Tensor) -> Tensor:
        """h (B, hidden, T, H, W) → S (B, 32, T, H, W)."""
        return self.proj(h)
