"""Analytic fields on the latent grid for the physics tests (float64, spacing 1)."""

from __future__ import annotations

import torch
from torch import Tensor

DTYPE = torch.float64


def grid(frames: int, height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Coordinates t, y, x, each (1, 1, T, H, W), float64, integer-valued."""
    t = (
        torch.arange(frames, dtype=DTYPE)
        .reshape(1, 1, -1, 1, 1)
        .expand(1, 1, frames, height, width)
    )
    y = (
        torch.arange(height, dtype=DTYPE)
        .reshape(1, 1, 1, -1, 1)
        .expand(1, 1, frames, height, width)
    )
    x = torch.arange(width, dtype=DTYPE).reshape(1, 1, 1, 1, -1).expand(1, 1, frames, height, width)
    return t.clone(), y.clone(), x.clone()


def interior(x: Tensor) -> Tensor:
    """Interior points (B, C, T−2, H−2, W−2)."""
    return x[:, :, 1:-1, 1:-1, 1:-1]


def rms(x: Tensor) -> float:
    """Root mean square of a tensor."""
    return float(x.square().mean().sqrt())


def constant(value: float, channels: int, like: Tensor) -> Tensor:
    """A constant field (1, channels, T, H, W) on the grid of ``like``."""
    return torch.full((1, channels, *like.shape[2:]), value, dtype=DTYPE)
