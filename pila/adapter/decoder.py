"""Attribute-to-flow decoder D (paper Eq. 9) and the gated composition (Eq. 10).

    (9)  Δv     = D([P̃, broadcast(c), v_θ])                 (B, C, T, H, W)
    (10) v_PILA = v_θ + g(σ)·Δv,   g(σ) = g_min + (1 − g_min)(1 − σ)²

D is a shared attribute decoder (a pointwise read of the refined bank with c as a
per-sample bias), a pointwise read of the reference flow v_θ, residual spatiotemporal
conv blocks, and a correction head whose last layer starts at exactly zero: a fresh
adapter returns v_PILA = v_θ.

Legend: B batch, C latent channels (16), A attribute input channels (32 bank channels,
or the plain adapter's feature width), Dc condition width, T latent frames, H, W latent
height and width.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pila.adapter.layers import ResidualConvBlock, broadcast_bias, conv3d, zero_module


class FlowDecoder(nn.Module):
    """D: [attributes, broadcast c, v_θ] → Δv.

    Args:
        attribute_channels: A, channels of the attribute input (0: no attribute input,
            the "w/o Flow correction" ablation reads only c and v_θ).
        cond_dim: Dc.
        latent_channels: C of v_θ and Δv.
        hidden: width of the decoder's blocks.
        depth: number of residual blocks.
        kernel_size: spatiotemporal kernel of the blocks.
        norm_groups: GroupNorm groups.
    """

    def __init__(
        self,
        attribute_channels: int,
        cond_dim: int,
        latent_channels: int,
        hidden: int,
        depth: int,
        kernel_size: int = 3,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        self.attribute_channels = attribute_channels
        self.attribute = conv3d(attribute_channels, hidden, 1) if attribute_channels > 0 else None
        self.cond = nn.Linear(cond_dim, hidden)
        self.flow = conv3d(latent_channels, hidden, 1)
        self.blocks = nn.ModuleList(
            ResidualConvBlock(hidden, kernel_size, norm_groups) for _ in range(depth)
        )
        self.norm_out = nn.GroupNorm(norm_groups, hidden)
        self.head = zero_module(conv3d(hidden, latent_channels, 1))

    def forward(self, attributes: Tensor | None, cond: Tensor, v_theta: Tensor) -> Tensor:
        """Eq. (9).

        Args:
            attributes: (B, A, T, H, W) refined bank (or plain feature); None iff A = 0.
            cond: (B, Dc) condition c.
            v_theta: (B, C, T, H, W) frozen backbone velocity.

        Returns:
            Δv (B, C, T, H, W).
        """
        x = self.flow(v_theta) + broadcast_bias(cond, self.cond)  # (B, hidden, T, H, W)
        if self.attribute is not None:
            if attributes is None:
                raise ValueError("this decoder reads attributes but none were given")
            x = x + self.attribute(attributes)
        for block in self.blocks:
            x = block(x)
        return self.head(F.silu(self.norm_out(x)))  # (B, C, T, H, W)
