"""Where each routed expert changes the bank (paper Fig. 7).

For a clip and a selected expert k, the map is the channel mean of the expert's update
magnitude over the latent frames,

    map_k(t, y, x) = (1/P) Σ_p |ΔP_k(p, t, y, x)|          ΔP_k = M_k ⊙ O_k(P, c)

and zero for experts the router did not select. ``weighted=True`` multiplies each map by
the expert's routing weight π_k, i.e. its share of the refined bank P̃ = P + Σ π_k ΔP_k.

Legend: B batch, K top-k, P bank channels (32), T latent frames, H, W latent height and
width, E experts (8).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from pila.adapter import PILAAdapter
from pila.analysis.forward import adapter_step, as_cpu, clip_batches
from pila.backbone import WanBackbone
from pila.stages.metrics import expert_update_maps


@dataclass
class ExpertMaps:
    """Expert update maps of some clips at one noise level.

    Attributes:
        ids: (N,) clip ids.
        prompts: (N,) prompts.
        labels: (N, C) ground-truth multi-hot labels.
        sigma: the noise level.
        maps: (N, E, T, H, W) mean |ΔP_k| over channels (× π_k when weighted), zero for
            unselected experts.
        weights: (N, E) routing weights π.
        selected: (N, E) bool selections.
    """

    ids: list[str]
    prompts: list[str]
    labels: Tensor
    sigma: float
    maps: Tensor
    weights: Tensor
    selected: Tensor

    def index(self, clip_id: str) -> int:
        """Row of ``clip_id``."""
        try:
            return self.ids.index(clip_id)
        except ValueError:
            raise KeyError(f"clip {clip_id!r} is not among the mapped clips {self.ids}") from None


def collect_expert_maps(
    adapter: PILAAdapter,
    backbone: WanBackbone,
    clips: Dataset,
    sigma: float = 0.5,
    *,
    text_length: int,
    batch_size: int = 8,
    seed: int = 0,
    weighted: bool = False,
    cond_scale: float = 1.0,
) -> ExpertMaps:
    """Run the adapter on ``clips`` at ``sigma`` and keep every clip's expert maps.

    Args:
        adapter: the trained adapter; it needs its MoE operator (``moe_operator=True``).
        backbone: the frozen backbone it was trained with.
        clips: the clips to map (``CachedClips.subset(ids)`` picks a few).
        sigma: noise level σ ∈ [0, 1].
        text_length: text positions fed to the backbone (the training config's).
        batch_size: clips per forward pass.
        seed: seed of the noise ε.
        weighted: scale each expert's map by its routing weight π_k.
        cond_scale: conditioning scale s.

    Returns:
        :class:`ExpertMaps` (maps on the CPU: N·E·T·H·W floats).
    """
    if adapter.experts is None:
        raise ValueError(
            "this adapter has no MoE operator experts (moe_operator=False or the plain adapter)"
        )
    generator = torch.Generator().manual_seed(seed)
    ids: list[str] = []
    prompts: list[str] = []
    parts: dict[str, list[Tensor]] = {"labels": [], "maps": [], "weights": [], "selected": []}
    for batch in clip_batches(clips, batch_size):
        out = adapter_step(
            adapter,
            backbone,
            batch,
            sigma,
            text_length=text_length,
            generator=generator,
            cond_scale=cond_scale,
        )
        routing = out.routing
        maps = expert_update_maps(
            out.expert_updates,
            routing.indices,
            num_experts=adapter.config.num_experts,
            topk_weights=routing.topk_weights if weighted else None,
        )  # (B, E, T, H, W)
        ids.extend(batch["id"])
        prompts.extend(batch["prompt"])
        parts["labels"].append(batch["labels"].float())
        parts["maps"].append(as_cpu(maps))
        parts["weights"].append(as_cpu(routing.weights))
        parts["selected"].append(as_cpu(routing.selected))
    if not ids:
        raise ValueError("no clips to map: the clip set is empty")
    joined = {name: torch.cat(values) for name, values in parts.items()}
    return ExpertMaps(
        ids,
        prompts,
        joined["labels"],
        float(sigma),
        joined["maps"],
        joined["weights"],
        joined["selected"],
    )


def latent_frame_times(num_latent_frames: int, temporal_factor: int = 4) -> list[int]:
    """Pixel frame of each latent frame: Wan's VAE keeps frame 0 and then one latent per
    ``temporal_factor`` frames, so latent frame t ends at pixel frame ``temporal_factor·t``.
    """
    if num_latent_frames < 1 or temporal_factor < 1:
        raise ValueError(
            f"need num_latent_frames >= 1 and temporal_factor >= 1, got {num_latent_frames}, "
            f"{temporal_factor}"
        )
    return [temporal_factor * t for t in range(num_latent_frames)]


def pick_clips(labels: Tensor, ids: Sequence[str], categories: Sequence[int]) -> dict[int, str]:
    """For each category index, the first clip (in ``ids`` order) labelled with it and not
    already picked for an earlier category.

    Args:
        labels: (N, C) multi-hot labels of the clips.
        ids: (N,) clip ids.
        categories: category indices, in the order to pick for.

    Returns:
        ``{category index: clip id}``; a category with no clip left is absent.
    """
    if labels.ndim != 2 or labels.shape[0] != len(ids):
        raise ValueError(
            f"labels must have shape ({len(ids)}, C) to match ids, got {tuple(labels.shape)}"
        )
    chosen: dict[int, str] = {}
    for c in categories:
        for row, clip_id in enumerate(ids):
            if labels[row, c] > 0.5 and clip_id not in chosen.values():
                chosen[c] = clip_id
                break
    return chosen
