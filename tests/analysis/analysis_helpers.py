"""Tiny adapters and clip sets for the analysis tests (CPU, no download)."""

from __future__ import annotations

import torch

from pila.adapter import AdapterConfig, PILAAdapter

TEXT_DIM = 32  # the tiny backbone's text width
LATENT_GRID = (5, 4, 4)  # T, H, W
TEXT_TOKENS = 6


def tiny_adapter(seed: int = 0, **changes) -> PILAAdapter:
    """A small adapter whose zero-initialised expert outputs get random weights, so ΔP ≠ 0."""
    torch.manual_seed(seed)
    base = dict(
        text_dim=TEXT_DIM,
        hidden=16,
        cond_dim=16,
        sigma_embed_dim=8,
        encoder_depth=1,
        decoder_depth=1,
        expert_width=8,
        expert_depth=1,
        norm_groups=4,
    )
    base.update(changes)
    adapter = PILAAdapter(AdapterConfig(**base))
    if adapter.experts is not None:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for t in (adapter.experts.out_weight, adapter.experts.out_bias):
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
    return adapter


def clip_items(labels: list[tuple[int, ...]], seed: int = 0) -> list[dict]:
    """Cached-clip items (the datamodules' format), one per label tuple."""
    gen = torch.Generator().manual_seed(seed)
    items = []
    for i, cats in enumerate(labels):
        y = torch.zeros(8)
        y[list(cats)] = 1.0
        items.append(
            {
                "latents": torch.randn(16, *LATENT_GRID, generator=gen),
                "flow": torch.randn(2, *LATENT_GRID, generator=gen),
                "prompt_embeds": torch.randn(TEXT_TOKENS - i % 3, TEXT_DIM, generator=gen),
                "prompt_mask": torch.ones(TEXT_TOKENS - i % 3, dtype=torch.bool),
                "pooled": torch.randn(TEXT_DIM, generator=gen),
                "labels": y,
                "prompt": f"clip number {i}",
                "id": f"clip{i}",
            }
        )
    return items
