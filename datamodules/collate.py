"""Batching clips whose prompts have different token counts.

Legend: B batch, C latent channels, T latent frames, H, W latent grid, L text tokens,
D text width, F pixel frames, H_px, W_px pixel size.

A cached clip keeps only its valid prompt tokens (L_i of them). :func:`collate_clips`
pads every prompt to a common length with zeros and a False mask, which is what
``WanPipeline`` feeds its transformer (it pads to ``max_sequence_length`` = 512), so
with ``pad_to`` = 512 a training batch conditions the frozen transformer exactly as
sampling does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

STACKED_KEYS = ("latents", "flow", "pooled", "pooled_refined", "labels", "video")
"""Per-clip tensors of equal shape that are stacked along a new batch axis."""


def pad_prompts(
    embeds: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], pad_to: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad prompt embeddings (L_i, D) to (B, L, D) with a (B, L) bool mask.

    Args:
        embeds: per clip (L_i, D).
        masks: per clip (L_i,) bool.
        pad_to: L; None pads to the longest prompt. Prompts longer than ``pad_to`` are an
            error (they were encoded with a longer max_sequence_length).

    Returns:
        (embeds (B, L, D) zero past each prompt, mask (B, L) bool).
    """
    longest = max(e.shape[0] for e in embeds)
    length = longest if pad_to is None else pad_to
    if longest > length:
        raise ValueError(
            f"a prompt has {longest} tokens, more than pad_to={length}; "
            "raise max_sequence_length"
        )
    dim = embeds[0].shape[1]
    out = embeds[0].new_zeros(len(embeds), length, dim)  # (B, L, D)
    mask = torch.zeros(len(embeds), length, dtype=torch.bool)  # (B, L)
    for i, (e, m) in enumerate(zip(embeds, masks, strict=True)):
        out[i, : e.shape[0]] = e
        mask[i, : m.shape[0]] = m
    return out, mask


def collate_clips(items: Sequence[dict[str, Any]], pad_to: int | None = None) -> dict[str, Any]:
    """Stack clips into a batch.

    Args:
        items: dicts from :class:`~pila.datamodules.cache.CachedClips` (or the on-the-fly
            dataset, whose ``video`` (3, F, H_px, W_px) uint8 is stacked the same way).
        pad_to: prompt length L of the batch (None: the longest prompt in it).

    Returns:
        ``latents`` (B, C, T, H, W), ``flow`` (B, 2, T, H, W), ``prompt_embeds`` (B, L, D),
        ``prompt_mask`` (B, L) bool, ``pooled`` (B, D), ``pooled_refined`` (B, D),
        ``labels`` (B, 8), ``prompt``, ``condition_text`` (on-the-fly items) and ``id``
        (lists of str); keys absent from the items are absent from the batch.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Any] = {}
    for key in STACKED_KEYS:
        if key in items[0]:
            batch[key] = torch.stack([item[key] for item in items])
    if "prompt_embeds" in items[0]:
        embeds = [item["prompt_embeds"] for item in items]
        masks = [item["prompt_mask"] for item in items]
        batch["prompt_embeds"], batch["prompt_mask"] = pad_prompts(embeds, masks, pad_to)
    batch["prompt"] = [item["prompt"] for item in items]
    if "condition_text" in items[0]:
        batch["condition_text"] = [item["condition_text"] for item in items]
    batch["id"] = [item["id"] for item in items]
    return batch


class ClipCollator:
    """A picklable ``collate_fn`` with a fixed prompt length (see :func:`collate_clips`).

    Args:
        pad_to: prompt length L of every batch (None: the longest prompt of each batch).
    """

    def __init__(self, pad_to: int | None = None) -> None:
        self.pad_to = pad_to

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return collate_clips(items, self.pad_to)
