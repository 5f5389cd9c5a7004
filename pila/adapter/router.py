"""LPMER: label-prior masked expert routing (paper Eq. 4, App. A.2 Eq. 21–23).

    (21) ℓ   = W_r·c + b_r                       learned logits          (B, E)
    (22) ℓ̃   = ℓ + β·y                           label prior             (B, E)
    (23) S   = TopK(ℓ̃, k),  π_k = softmax_{j∈S}(ℓ̃_j / τ) for k ∈ S, else 0

The routing statistics that training logs (selection counts, mean weights, agreement
with labels, entropy, co-activation) live here too, as sums that add across batches.

Legend: B batch, E experts (8, one per category), K top-k, Dc condition width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pila.categories import CATEGORIES, NUM_CATEGORIES


@dataclass
class Routing:
    """A routing decision for a batch.

    Attributes:
        logits: (B, E) learned logits ℓ (zeros for dense, non-routed experts).
        scores: (B, E) prior-biased scores ℓ̃ = ℓ + β·y.
        indices: (B, K) selected experts, highest score first.
        topk_weights: (B, K) π of the selected experts (each row sums to 1 when K > 0).
        weights: (B, E) π scattered densely, zero for unselected experts.
    """

    logits: Tensor
    scores: Tensor
    indices: Tensor
    topk_weights: Tensor
    weights: Tensor

    @property
    def top_k(self) -> int:
        return self.indices.shape[1]

    @property
    def selected(self) -> Tensor:
        """(B, E) bool: expert k is in S for sample b."""
        sel = torch.zeros_like(self.weights, dtype=torch.bool)
        return sel.scatter(1, self.indices, True) if self.top_k > 0 else sel


def route(logits: Tensor, labels: Tensor, *, beta: float, top_k: int, tau: float) -> Routing:
    """Eq. (22)–(23): label prior, top-k, temperature softmax renormalised over S.

    Args:
        logits: (B, E) learned logits ℓ.
        labels: (B, E) multi-hot labels y.
        beta: label-prior strength β.
        top_k: number of selected experts k (0 selects none).
        tau: softmax temperature τ (> 0).

    Returns:
        The :class:`Routing`; with ``top_k = 0`` every weight is zero.
    """
    if tau <= 0:
        raise ValueError(f"routing temperature tau must be positive, got {tau}")
    num_experts = logits.shape[-1]
    if not 0 <= top_k <= num_experts:
        raise ValueError(f"top_k must lie in [0, {num_experts}], got {top_k}")
    scores = logits + beta * labels.to(logits.dtype)  # (B, E)
    top_scores, indices = scores.topk(top_k, dim=-1)  # (B, K), (B, K)
    topk_weights = torch.softmax(top_scores / tau, dim=-1)  # (B, K)
    weights = torch.zeros_like(scores).scatter(1, indices, topk_weights)  # (B, E)
    return Routing(logits, scores, indices, topk_weights, weights)


def dense_routing(
    batch_size: int, num_experts: int, *, device: torch.device, dtype: torch.dtype
) -> Routing:
    """Non-routed experts ("w/o Expert Routing"): every expert active with weight 1/E."""
    zeros = torch.zeros(batch_size, num_experts, device=device, dtype=dtype)
    indices = torch.arange(num_experts, device=device).expand(batch_size, num_experts)  # (B, E)
    topk_weights = torch.full(
        (batch_size, num_experts), 1.0 / num_experts, device=device, dtype=dtype
    )
    return Routing(zeros, zeros, indices, topk_weights, topk_weights.clone())


class LPMERRouter(nn.Module):
    """Holds W_r, b_r of Eq. (21) and applies :func:`route`.

    Args:
        cond_dim: width Dc of the condition vector c.
        num_experts: E (8).
        beta: label-prior strength β.
        top_k: k.
        tau: temperature τ.
    """

    def __init__(
        self, cond_dim: int, num_experts: int, beta: float, top_k: int, tau: float
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, num_experts)
        self.beta, self.top_k, self.tau = beta, top_k, tau

    def forward(self, cond: Tensor, labels: Tensor) -> Routing:
        """c (B, Dc), y (B, E) → :class:`Routing`."""
        return route(self.proj(cond), labels, beta=self.beta, top_k=self.top_k, tau=self.tau)


@dataclass
class RoutingStatistics:
    """Router statistics as sums over samples; ``a + b`` merges two batches.

    Attributes:
        num_samples: number of samples seen.
        selection_counts: (E,) times each expert was selected.
        weight_sums: (E,) sum over samples of π_k (zero when unselected).
        selected_labelled: (sample, expert) pairs both selected and labelled, |S ∩ Y| summed.
        selected_total: selected experts in all, |S| summed.
        labels_total: labels in all, |Y| summed.
        entropy_sum: sum over samples of the routing entropy −Σ π log π (nats).
        coactivation: (E, E) times experts i and j were selected together (diagonal =
            selection counts).
    """

    num_samples: int
    selection_counts: Tensor
    weight_sums: Tensor
    selected_labelled: int
    selected_total: int
    labels_total: int
    entropy_sum: float
    coactivation: Tensor

    def __add__(self, other: RoutingStatistics) -> RoutingStatistics:
        return RoutingStatistics(
            self.num_samples + other.num_samples,
            self.selection_counts + other.selection_counts,
            self.weight_sums + other.weight_sums,
            self.selected_labelled + other.selected_labelled,
            self.selected_total + other.selected_total,
            self.labels_total + other.labels_total,
            self.entropy_sum + other.entropy_sum,
            self.coactivation + other.coactivation,
        )

    @property
    def mean_weight(self) -> Tensor:
        """(E,) mean routing weight per expert over samples (zeros count)."""
        return self.weight_sums / max(self.num_samples, 1)

    @property
    def selection_rate(self) -> Tensor:
        """(E,) fraction of samples that selected each expert."""
        return self.selection_counts / max(self.num_samples, 1)

    @property
    def label_precision(self) -> float:
        """Fraction of selected experts that are labelled (NaN when nothing was selected)."""
        return self.selected_labelled / self.selected_total if self.selected_total else float("nan")

    @property
    def label_recall(self) -> float:
        """Fraction of labels whose expert was selected (NaN when there were no labels)."""
        return self.selected_labelled / self.labels_total if self.labels_total else float("nan")

    @property
    def mean_entropy(self) -> float:
        """Mean routing entropy in nats."""
        return self.entropy_sum / max(self.num_samples, 1)

    def as_log_dict(self, prefix: str = "router") -> dict[str, float]:
        """Flat ``{name: value}`` for a logger, one entry per expert where per-expert.

        The tags training logs (``train/router/…``, read back by :mod:`pila.analysis`); a
        statistic without samples (NaN) is left out.
        """
        out = {
            f"{prefix}/label_precision": self.label_precision,
            f"{prefix}/label_recall": self.label_recall,
            f"{prefix}/entropy": self.mean_entropy,
        }
        for k, name in enumerate(CATEGORIES[: self.selection_counts.numel()]):
            out[f"{prefix}/selection_rate/{name}"] = float(self.selection_rate[k])
            out[f"{prefix}/mean_weight/{name}"] = float(self.mean_weight[k])
        return {k: v for k, v in out.items() if math.isfinite(v)}


def routing_statistics(routing: Routing, labels: Tensor) -> RoutingStatistics:
    """Statistics of one routing decision against the labels y (B, E); no gradient."""
    with torch.no_grad():
        selected = routing.selected  # (B, E)
        labelled = labels > 0.5  # (B, E)
        weights = routing.weights.float()  # (B, E)
        plogp = torch.where(
            weights > 0, weights * weights.clamp_min(1e-30).log(), torch.zeros_like(weights)
        )
        sel = selected.float()  # (B, E)
        return RoutingStatistics(
            num_samples=selected.shape[0],
            selection_counts=sel.sum(0).cpu(),
            weight_sums=weights.sum(0).cpu(),
            selected_labelled=int((selected & labelled).sum()),
            selected_total=int(selected.sum()),
            labels_total=int(labelled.sum()),
            entropy_sum=float(-plogp.sum()),
            coactivation=(sel.T @ sel).cpu(),  # (E, E)
        )


__all__ = [
    "LPMERRouter",
    "NUM_CATEGORIES",
    "Routing",
    "RoutingStatistics",
    "dense_routing",
    "route",
    "routing_statistics",
]
