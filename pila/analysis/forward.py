"""One evaluation pass of the frozen backbone and the adapter on cached clips at a chosen σ.

What the analyses see is what training saw, at a σ the caller fixes:

    x_t = (1 − σ)·x0 + σ·ε                      x0 the clip's cached latents, ε seeded
    v_θ = backbone(x_t, σ, text)                 frozen, no autograd
    out = adapter(x_t, σ, v_θ, c(pooled, y))     eval mode, no autograd, no residuals

y is the clip's ground-truth multi-hot labels (randomised with a seeded generator when the
adapter was trained with ``label_source="random"``, as its training did).

Legend: B batch, C latent channels (16), T latent frames, H, W latent height and width,
L text tokens, D text width, E experts (8).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pila.adapter import AdapterOutput, PILAAdapter
from pila.adapter.condition import AdapterCondition, batch_pooled_text, randomize_labels
from pila.backbone import WanBackbone
from pila.datamodules.collate import ClipCollator
from pila.flow import noisy_latent, pad_text


def check_sigmas(sigmas: float | Sequence[float]) -> tuple[float, ...]:
    """σ values as a non-empty tuple of floats in [0, 1] (a clear ``ValueError`` otherwise)."""
    if isinstance(sigmas, int | float):
        values: tuple[float, ...] = (float(sigmas),)
    else:
        values = tuple(float(s) for s in sigmas)
    if not values:
        raise ValueError("sigmas is empty; pass at least one noise level in [0, 1]")
    bad = [s for s in values if not 0.0 <= s <= 1.0]
    if bad:
        raise ValueError(f"noise levels must lie in [0, 1], got {bad}")
    return values


def clip_batches(clips: Dataset, batch_size: int = 8) -> Iterator[dict[str, Any]]:
    """Batches of cached clips in dataset order (:func:`pila.datamodules.collate.collate_clips`).

    Args:
        clips: a :class:`~pila.datamodules.cache.CachedClips` (or any dataset of clip dicts).
        batch_size: clips per batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    yield from DataLoader(clips, batch_size=batch_size, shuffle=False, collate_fn=ClipCollator())


def adapter_condition(
    adapter: PILAAdapter,
    batch: dict[str, Any],
    *,
    cond_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> AdapterCondition:
    """The adapter's condition for a batch: pooled text and labels, AFE phase 4 (all slots).

    Reads the pooled text as training does (:func:`pila.adapter.condition.batch_pooled_text`)
    and honours ``label_source="random"``, drawing from ``generator``.
    """
    param = next(adapter.parameters())
    labels = batch["labels"].float()  # (B, E)
    if adapter.config.label_source == "random":
        labels = randomize_labels(labels, generator=generator)
    return AdapterCondition(
        pooled_text=batch_pooled_text(batch, adapter.config.prompt_source).to(
            param.device, torch.float32
        ),
        labels=labels.to(param.device),
        cond_scale=cond_scale,
        phase=4,
    )


@torch.no_grad()
def adapter_step(
    adapter: PILAAdapter,
    backbone: WanBackbone,
    batch: dict[str, Any],
    sigma: float,
    *,
    text_length: int,
    generator: torch.Generator | None = None,
    cond_scale: float = 1.0,
) -> AdapterOutput:
    """Noise a batch of clips to ``sigma``, query the backbone, run the adapter in eval mode.

    Args:
        adapter: the trained adapter (left in the train/eval mode it came in).
        backbone: the frozen backbone the adapter was trained with, on the adapter's device.
        batch: clip batch with ``latents`` (B, C, T, H, W), ``prompt_embeds`` (B, L, D),
            ``pooled`` (B, D) (or ``pooled_refined``, see :func:`adapter_condition`) and
            ``labels`` (B, E).
        sigma: noise level σ ∈ [0, 1] for every clip of the batch.
        text_length: text positions fed to the backbone (the training config's ``text_length``).
        generator: source of the noise ε (and of random labels for ``label_source="random"``).
        cond_scale: conditioning scale s (1 after stage C's warm-up).

    Returns:
        The :class:`~pila.adapter.AdapterOutput` (routing, expert updates, banks, …).
    """
    (sigma,) = check_sigmas(sigma)
    param = next(adapter.parameters())
    device = param.device
    x0 = batch["latents"].to(device, torch.float32)  # (B, C, T, H, W)
    b = x0.shape[0]
    sigmas = torch.full((b,), sigma, device=device)  # (B,)
    noise = torch.randn(x0.shape, generator=generator).to(device)  # (B, C, T, H, W)
    x_t = noisy_latent(x0, noise, sigmas)  # (B, C, T, H, W)
    text = pad_text(batch["prompt_embeds"].float(), text_length).to(device)  # (B, L, D)
    v_theta = backbone.velocity(x_t, sigmas, text).float()  # (B, C, T, H, W)
    cond = adapter_condition(adapter, batch, cond_scale=cond_scale, generator=generator)
    was_training = adapter.training
    adapter.eval()
    try:
        return adapter(x_t, sigmas, v_theta, cond, residuals=False)
    finally:
        adapter.train(was_training)


def as_cpu(t: Tensor) -> Tensor:
    """A detached float CPU copy (indices keep their integer dtype)."""
    t = t.detach().to("cpu")
    return t.float() if t.is_floating_point() else t
