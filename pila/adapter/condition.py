"""Condition encoder: c from [pooled text, multi-hot labels y, embedding of σ] (Sec. 3.1, App. A.2).

    c = s · MLP( W_t·LN(text) + W_y·y + W_σ·sin-embed(1000·σ) )      s ∈ [0, 1]

``s`` is the conditioning scale that stage C's warm-up ramps from 0 to 1. The pooled text
is the mean-pooled embedding of the *refined* prompt (or of the raw prompt in the
"w/o prompt refine" ablation; the data side chooses, see ``AdapterConfig.prompt_source``).

Legend: B batch, D text width, E experts/categories (8), Dc condition width, F σ-embedding size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pila.categories import NUM_CATEGORIES
from pila.flow import sigma_to_timestep


def sinusoidal_embedding(x: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Transformer-style sinusoidal embedding of a scalar per sample.

    Shapes: (B,) → (B, dim), laid out as [cos | sin].
    """
    if dim < 2 or dim % 2 != 0:
        raise ValueError(f"the sinusoidal embedding size must be a positive even number, got {dim}")
    half = dim // 2
    exponent = (
        -math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half
    )
    angles = x.float()[:, None] * torch.exp(exponent)[None, :]  # (B, F/2)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B, F)


def randomize_labels(labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random labels with as many active categories per sample (Table 11, "w/ Random Label").

    Each sample keeps its label count but the categories are drawn uniformly without
    replacement, breaking the correspondence between prompt and routed experts.

    Args:
        labels: (B, E) multi-hot labels.
        generator: optional RNG for reproducibility.

    Returns:
        (B, E) multi-hot labels in ``labels``' dtype.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (B, E), got {tuple(labels.shape)}")
    counts = (labels > 0.5).sum(dim=1)  # (B,)
    noise = torch.rand(labels.shape, generator=generator, device="cpu").to(labels.device)  # (B, E)
    ranks = noise.argsort(dim=1).argsort(dim=1)  # (B, E) rank of each category
    return (ranks < counts[:, None]).to(labels.dtype)


def batch_pooled_text(batch: Mapping[str, Any], prompt_source: str = "refined") -> Tensor:
    """The pooled text (B, D) that conditions the adapter for a training batch.

    ``pooled_refined`` (the parser's refined description, as at generation time) unless
    ``prompt_source`` is ``"raw"`` or the batch has none (an older cache): then
    ``pooled``, the caption's.
    """
    if prompt_source == "refined" and "pooled_refined" in batch:
        return batch["pooled_refined"]
    return batch["pooled"]


@dataclass
class AdapterCondition:
    """What conditions the adapter besides the latents.

    Attributes:
        pooled_text: (B, D) pooled text embedding of the (refined) prompt.
        labels: (B, 8) multi-hot category labels y in ``CATEGORIES`` order.
        cond_scale: conditioning scale in [0, 1], driven by the conditioning warm-up.
        phase: AFE recovery phase (0 core … 4 all slots), driven by stage B.
        mask_blend: motion → physical mask blend factor in [0, 1], driven by a callback.
    """

    pooled_text: Tensor
    labels: Tensor
    cond_scale: float = 1.0
    phase: int = 4
    mask_blend: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.cond_scale) <= 1.0:
            raise ValueError(
                f"AdapterCondition.cond_scale must lie in [0, 1], got {self.cond_scale}"
            )
        if not 0.0 <= float(self.mask_blend) <= 1.0:
            raise ValueError(
                f"AdapterCondition.mask_blend must lie in [0, 1], got {self.mask_blend}"
            )
        if self.pooled_text.ndim != 2:
            raise ValueError(
                "AdapterCondition.pooled_text must have shape (B, D), got "
                f"{tuple(self.pooled_text.shape)}"
            )
        if self.labels.ndim != 2 or self.labels.shape[1] != NUM_CATEGORIES:
            raise ValueError(
                f"AdapterCondition.labels must have shape (B, {NUM_CATEGORIES}), "
                f"got {tuple(self.labels.shape)}"
            )
        if self.labels.shape[0] != self.pooled_text.shape[0]:
            raise ValueError(
                f"AdapterCondition: pooled_text has batch {self.pooled_text.shape[0]} "
                f"but labels has batch {self.labels.shape[0]}"
            )

    @property
    def batch_size(self) -> int:
        return self.labels.shape[0]


class ConditionEncoder(nn.Module):
    """The label/σ condition encoder producing c (B, Dc).

    Args:
        text_dim: width D of the pooled text embedding.
        cond_dim: width Dc of c.
        sigma_embed_dim: size F of the sinusoidal σ embedding (of the timestep 1000·σ).
        num_categories: number of label entries E.
    """

    def __init__(
        self,
        text_dim: int,
        cond_dim: int,
        sigma_embed_dim: int,
        num_categories: int = NUM_CATEGORIES,
    ) -> None:
        super().__init__()
        self.text_dim = text_dim
        self.sigma_embed_dim = sigma_embed_dim
        self.text_norm = nn.LayerNorm(text_dim, elementwise_affine=False)
        self.text_proj = nn.Linear(text_dim, cond_dim)
        self.label_proj = nn.Linear(num_categories, cond_dim)
        self.sigma_proj = nn.Linear(sigma_embed_dim, cond_dim)
        self.out = nn.Linear(cond_dim, cond_dim)

    def forward(
        self, pooled_text: Tensor, labels: Tensor, sigma: Tensor, cond_scale: float = 1.0
    ) -> Tensor:
        """(B, D), (B, E), (B,) → c (B, Dc), scaled by ``cond_scale``."""
        if pooled_text.shape[-1] != self.text_dim:
            raise ValueError(
                f"pooled text has width {pooled_text.shape[-1]} but the adapter was built for "
                f"text_dim={self.text_dim}; set AdapterConfig.text_dim to the text encoder's width"
            )
        dtype = self.text_proj.weight.dtype
        sigma_emb = sinusoidal_embedding(sigma_to_timestep(sigma), self.sigma_embed_dim)  # (B, F)
        z = (
            self.text_proj(self.text_norm(pooled_text.to(dtype)))
            + self.label_proj(labels.to(dtype))
            + self.sigma_proj(sigma_emb.to(dtype))
        )  # (B, Dc)
        return cond_scale * self.out(F.silu(z))  # (B, Dc)
