"""Helpers of the adapter tests: a tiny adapter config and a small batch (CPU, seconds)."""

from __future__ import annotations

import torch

from pila.adapter import AdapterCondition, AdapterConfig, PILAAdapter

TEXT_DIM = 32
GRID = (5, 6, 7)  # T, H, W: enough interior points for every residual


def tiny_config(**changes) -> AdapterConfig:
    """A small adapter with every part present (hidden 16, experts of width 8)."""
    base = dict(
        hidden=16,
        text_dim=TEXT_DIM,
        cond_dim=16,
        sigma_embed_dim=8,
        encoder_depth=1,
        decoder_depth=1,
        expert_width=8,
        expert_depth=1,
    )
    base.update(changes)
    return AdapterConfig(**base)


def randomize_zero_layers(adapter: PILAAdapter, scale: float = 0.05, seed: int = 0) -> None:
    """Give the zero-initialised output layers (decoder head, expert outputs) random weights."""
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    if adapter.decoder is not None:
        tensors += list(adapter.decoder.head.parameters())
    if adapter.plain is not None:
        tensors += list(adapter.plain.decoder.head.parameters())
    if adapter.experts is not None:
        tensors += [adapter.experts.out_weight, adapter.experts.out_bias]
    with torch.no_grad():
        for t in tensors:
            t.copy_(scale * torch.randn(t.shape, generator=gen, dtype=t.dtype))


def make_batch(
    batch: int = 2,
    labels: torch.Tensor | None = None,
    seed: int = 0,
    grid: tuple[int, int, int] = GRID,
    **cond_kwargs,
):
    """x_t, σ, v_θ and an AdapterCondition on a tiny grid."""
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn(batch, 16, *grid, generator=gen)
    v_theta = torch.randn(batch, 16, *grid, generator=gen)
    sigma = torch.rand(batch, generator=gen)
    if labels is None:
        labels = torch.zeros(batch, 8)
        labels[:, 0] = 1.0  # rigid_body
        labels[0, 5] = 1.0  # collision
        labels[-1, 2] = 1.0  # fluid
    cond = AdapterCondition(torch.randn(batch, TEXT_DIM, generator=gen), labels, **cond_kwargs)
    return x_t, sigma, v_theta, cond


def tiny_adapter(seed: int = 0, **changes) -> PILAAdapter:
    """A seeded tiny adapter (see :func:`tiny_config`)."""
    torch.manual_seed(seed)
    return PILAAdapter(tiny_config(**changes))
