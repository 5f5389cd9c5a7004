"""The routed residual objective (paper Eq. 5–7).

    (5) F_k   = R_k(P + ΔP_k)                             expert k's own field readout
    (6) L_k   = Σ_j λ_{k,j} · mean(m · r_{k,j}(F_k)²)       per sample (B,)
    (7) L_res = Σ_{k ∈ S∩Y} (π_k / Z) · L_k,   Z = Σ_{k ∈ S∩Y} π_k,   0 when S∩Y = ∅

Only experts that are both selected (S) and label-consistent (Y) contribute. Each of
them is evaluated on *its own* refined bank P + ΔP_k, read out into the ten component
fields; the masked means of its category's residual terms (one shared derivative pass
per expert, eager or compiled: :class:`pila.physics.fused.ResidualPass`) are weighted by
:class:`pila.physics.loss.ResidualLoss`.

Legend: B batch, E experts, K top-k, C bank channels (32), T latent frames, H, W latent
height and width, N samples whose selected, labelled set contains a given expert.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from pila.adapter.router import Routing
from pila.categories import CATEGORIES
from pila.physics.bank import unpack_bank
from pila.physics.fused import ResidualPass
from pila.physics.loss import ResidualLoss
from pila.physics.residuals import ResidualScales


@dataclass
class RoutedResidual:
    """Result of :func:`routed_residual_objective`.

    Attributes:
        loss: (B,) L_res per sample (with gradients); zero where S∩Y is empty.
        per_expert: category → (B,) L_k, detached, zero where the expert was not in S∩Y.
        active: (B, E) bool, expert k ∈ S∩Y for sample b.
        per_term: (category, term) → batch mean of m·r² over the samples that evaluated
            it, detached (for logging).
    """

    loss: Tensor
    per_expert: dict[str, Tensor]
    active: Tensor
    per_term: dict[tuple[str, str], Tensor]


def label_consistent(routing: Routing, labels: Tensor) -> Tensor:
    """(B, E) bool mask of S∩Y: experts both selected and labelled."""
    return routing.selected & (labels > 0.5)


def consistent_weights(routing: Routing, active: Tensor) -> Tensor:
    """π_k / Z over S∩Y (Eq. 7): (B, E), rows summing to 1, or to 0 where S∩Y is empty."""
    weights = routing.weights * active.to(routing.weights.dtype)  # (B, E)
    z = weights.sum(dim=1, keepdim=True)  # (B, 1)
    return torch.where(
        z > 0, weights / z.clamp_min(torch.finfo(weights.dtype).tiny), torch.zeros_like(weights)
    )


def routed_residual_objective(
    bank: Tensor,
    updates: Tensor | None,
    routing: Routing,
    labels: Tensor,
    mask: Tensor,
    loss_fn: ResidualLoss,
    *,
    scales: ResidualScales,
    families: Iterable[str],
    residual_pass: ResidualPass | None = None,
) -> RoutedResidual:
    """Eq. (6)–(7) over the selected, label-consistent experts.

    Args:
        bank: P (B, C, T, H, W).
        updates: (B, K, C, T, H, W) expert updates ΔP aligned with ``routing.indices``,
            or None when experts make no update ("w/o MoE operator": F_k = R_k(P)).
        routing: the routing decision (S and π).
        labels: (B, E) multi-hot labels y.
        mask: (B, 1, T, H, W) spatial mask m (used detached).
        loss_fn: the weighted residual loss of Eq. (6) (holds the adaptive weights).
        scales: latent-scale normalisers of the residuals.
        families: residual families kept.
        residual_pass: how the masked residual means are computed (eager by default;
            ``ResidualPass(compile=True)`` fuses them).

    Returns:
        :class:`RoutedResidual`.
    """
    families = tuple(families)
    residual_pass = residual_pass if residual_pass is not None else ResidualPass()
    batch = bank.shape[0]
    active = label_consistent(routing, labels)  # (B, E)
    norm_weights = consistent_weights(routing, active)  # (B, E)
    total = bank.new_zeros(batch, dtype=torch.float32)  # (B,)
    per_expert: dict[str, Tensor] = {}
    per_term: dict[tuple[str, str], Tensor] = {}
    for k, category in enumerate(CATEGORIES):
        rows = active[:, k].nonzero(as_tuple=True)[0]  # (N,)
        per_expert[category] = total.new_zeros(batch)
        if rows.numel() == 0:
            continue
        refined = bank[rows]  # (N, C, T, H, W)
        if updates is not None:
            slots = (routing.indices[rows] == k).int().argmax(dim=1)  # (N,) position of k in S
            refined = refined + updates[rows, slots]  # (N, C, T, H, W)  P + ΔP_k
        means = residual_pass([category], unpack_bank(refined), mask[rows], scales, families)
        if not means[category]:
            continue  # every term of this category belongs to a dropped family
        out = loss_fn.weigh(means)
        loss_k = out.per_category[category].float()  # (N,)
        total = total.index_add(0, rows, norm_weights[rows, k].float() * loss_k)
        per_expert[category] = per_expert[category].index_put((rows,), loss_k.detach())
        per_term.update(out.per_term)
    return RoutedResidual(loss=total, per_expert=per_expert, active=active, per_term=per_term)
