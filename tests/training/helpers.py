"""Tiny in-memory batches and adapter settings shared by the training tests."""

from __future__ import annotations

import torch

from pila.adapter import AdapterConfig

T, H, W, L_TEXT, TEXT_DIM = 5, 8, 8, 7, 32


def tiny_adapter_config(**changes) -> AdapterConfig:
    """An adapter small enough for CPU tests, sized for the tiny backbone's text width."""
    base = dict(text_dim=TEXT_DIM, hidden=16, cond_dim=16, expert_width=8, norm_groups=4, sigma_embed_dim=16)
    base.update(changes)
    return AdapterConfig(**base)


def clip_item(i: int, labels: tuple[int, ...] | None = None) -> dict:
    """One cached-clip item in the datamodules' format, deterministic from ``i``."""
    g = torch.Generator().manual_seed(i)
    y = torch.zeros(8)
    for k in labels if labels is not None else (i % 8,):
        y[k] = 1
    return {
        "latents": torch.randn(16, T, H, W, generator=g),
        "prompt_embeds": torch.randn(L_TEXT, TEXT_DIM, generator=g),
        "prompt_mask": torch.ones(L_TEXT, dtype=torch.bool),
        "pooled": torch.randn(TEXT_DIM, generator=g),
        "labels": y,
        "flow": torch.randn(2, T, H, W, generator=g),
        "id": f"clip{i}",
    }


def batch_of(items: list[dict]) -> dict:
    out = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "id"}
    out["id"] = [it["id"] for it in items]
    return out
