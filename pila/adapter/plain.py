"""The capacity-matched plain adapter (paper Table 4, "+ Plain Adapter").

"Keeps an extra trainable adapter but removes the structured physical bank, routed
operators, and residual constraints" (App. C.1, Table 12). Here: the same condition
encoder and σ-gate as PILA, and a generic conv branch

    f  = E_plain(x̂0)                          (B, W_p, T, H, W)
    Δv = D_plain([f, broadcast(c), v_θ])       (B, C, T, H, W), last layer zero

built from the same encoder and decoder blocks, with a width W_p chosen so that the
whole plain adapter has as many parameters as the full PILA adapter of the same config.

Legend: B batch, C latent channels, W_p plain width, Dc condition width, T latent frames,
H, W latent height and width.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pila.adapter.decoder import FlowDecoder
from pila.adapter.encoder import PhysicalEncoder
from pila.adapter.layers import count_parameters


class PlainAdapterBody(nn.Module):
    """Generic conv branch of the plain adapter: (x̂0, c, v_θ) → Δv.

    Args:
        latent_channels: C.
        cond_dim: Dc.
        width: W_p.
        encoder_depth: residual blocks before the decoder.
        decoder_depth: residual blocks of the decoder.
        kernel_size: spatiotemporal kernel.
        norm_groups: GroupNorm groups; the body uses gcd(width, norm_groups) so that any
            width is allowed.
    """

    def __init__(
        self,
        latent_channels: int,
        cond_dim: int,
        width: int,
        encoder_depth: int,
        decoder_depth: int,
        kernel_size: int = 3,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        self.width = width
        groups = math.gcd(width, norm_groups)
        self.encoder = PhysicalEncoder(latent_channels, width, encoder_depth, kernel_size, groups)
        self.decoder = FlowDecoder(
            width, cond_dim, latent_channels, width, decoder_depth, kernel_size, groups
        )

    def forward(self, x0_hat: Tensor, cond: Tensor, v_theta: Tensor) -> Tensor:
        """x̂0 (B, C, T, H, W), c (B, Dc), v_θ (B, C, T, H, W) → Δv (B, C, T, H, W)."""
        return self.decoder(self.encoder(x0_hat), cond, v_theta)


def plain_body_parameters(width: int, **kwargs: int) -> int:
    """Parameter count of a :class:`PlainAdapterBody` of ``width`` (built on the meta device)."""
    with torch.device("meta"):
        return count_parameters(PlainAdapterBody(width=width, **kwargs))


def _closest_width(target: int, widths: range, **kwargs: int) -> tuple[int, float]:
    """(width, relative gap) of the width in ``widths`` whose count is closest to ``target``."""
    best, best_gap = widths[0], float("inf")
    for width in widths:
        count = plain_body_parameters(width, **kwargs)
        gap = abs(count - target) / target
        if gap < best_gap:
            best, best_gap = width, gap
        if count > target:
            break  # the count grows with the width
    return best, best_gap


def matched_plain_width(
    target: int, *, norm_groups: int, tolerance: float = 0.02, max_width: int = 4096, **kwargs: int
) -> int:
    """The plain width whose body has the parameter count closest to ``target``.

    Multiples of ``norm_groups`` are preferred (GroupNorm keeps all its groups); when none
    comes within ``tolerance`` (relative), as happens for very small adapters, every width
    is considered.

    Args:
        target: parameters the plain body should have.
        norm_groups: preferred width step.
        tolerance: relative gap accepted for a multiple of ``norm_groups``.
        max_width: search bound.
        **kwargs: the other :class:`PlainAdapterBody` arguments.
    """
    kwargs["norm_groups"] = norm_groups
    width, gap = _closest_width(target, range(norm_groups, max_width + 1, norm_groups), **kwargs)
    if gap <= tolerance:
        return width
    return _closest_width(target, range(1, max_width + 1), **kwargs)[0]
