"""How hard each loss pulls on each part of the adapter, and the gradient-balanced weighting.

A stage's loss is a sum of parts: stage C's flow matching ``fm`` and ``residual``
(λ_phys·L_res), stage B's ``anchor`` (its weight × stage A's observable anchor) and
``recovery`` (the recovery residuals). On a diagnostic step :func:`gradient_norms` takes
the gradient of each part alone with ``torch.autograd.grad`` (the graph is kept for the
step's own backward; ``.grad``, the optimizer and the random streams are left alone) and
reduces it to one L2 norm per parameter group (:data:`pila.adapter.PARAMETER_GROUPS`).
:func:`gradient_scalars` turns the norms into the TensorBoard tags::

    train/grad_norm/<part>/<group>    ‖∇_group part‖₂
    train/grad_ratio/<group>          ‖∇_group auxiliary‖₂ / ‖∇_group main‖₂

with the main part ``fm`` (stage C) or ``anchor`` (stage B) and the auxiliary part
``residual`` or ``recovery``.

:class:`GradientBalance` is the ``"grad_balanced"`` reading of the adaptive weights
(design/pila-method.md R6): from the same norms it scales λ_phys·L_res so that on each
shared group (every group but the decoder, which L_res does not reach) its gradient is
at most ρ times the flow-matching gradient, smoothed as in Wang et al. 2021's
learning-rate annealing for PINNs.

The norms are of this process's batch; on several processes :class:`GradientBalance` is
fed norms averaged over them (:meth:`pila.stages.StageC.balance_scale`), the logged ones
are rank zero's. Under ZeRO stage 3 the parameters are sharded and the norms would read
one shard: use ZeRO 1–2 or DDP for these diagnostics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

GroupNorms = dict[str, Tensor]
"""group → ‖∇_group loss‖₂, a float32 scalar tensor."""


def gradient_norms(
    losses: Mapping[str, Tensor], groups: Mapping[str, Sequence[nn.Parameter]]
) -> dict[str, GroupNorms]:
    """‖∇ loss‖₂ over each group's trainable parameters, for each loss alone.

    Args:
        losses: part name → scalar loss with its graph (kept: ``retain_graph=True``).
        groups: group name → parameters; groups without a trainable parameter are left out.

    Returns:
        ``{part: {group: norm}}``; a part that does not reach a group has norm 0 there.
    """
    named = [(g, p) for g, params in groups.items() for p in params if p.requires_grad]
    present = list(dict.fromkeys(g for g, _ in named))
    out: dict[str, GroupNorms] = {}
    for part, loss in losses.items():
        squares = {g: torch.zeros((), dtype=torch.float32) for g in present}
        if loss.requires_grad and named:
            grads = torch.autograd.grad(
                loss, [p for _, p in named], retain_graph=True, allow_unused=True
            )
            for (group, _), grad in zip(named, grads, strict=True):
                if grad is not None:
                    squares[group] = squares[group] + grad.detach().float().square().sum().cpu()
        out[part] = {g: s.sqrt() for g, s in squares.items()}
    return out


def gradient_scalars(
    norms: Mapping[str, GroupNorms], main: str, auxiliary: str, prefix: str = "train"
) -> dict[str, float]:
    """The TensorBoard scalars of one diagnostic step (module docstring); non-finite
    values (a ratio over a zero norm) are left out."""
    values: dict[str, float] = {}
    for part, by_group in norms.items():
        for group, norm in by_group.items():
            values[f"{prefix}/grad_norm/{part}/{group}"] = float(norm)
    for group, main_norm in norms[main].items():
        ratio = (
            float(norms[auxiliary][group]) / float(main_norm) if float(main_norm) > 0 else math.nan
        )
        values[f"{prefix}/grad_ratio/{group}"] = ratio
    return {k: v for k, v in values.items() if math.isfinite(v)}


def worst_ratio(flow: GroupNorms, physics: GroupNorms, groups: Iterable[str]) -> float:
    """max over ``groups`` of ‖∇ physics‖ / ‖∇ flow‖ (groups the flow does not reach are
    skipped: nothing to balance against); 0 when no group has a physics gradient."""
    ratios = [
        float(physics[g]) / float(flow[g])
        for g in groups
        if g in flow and g in physics and float(flow[g]) > 0
    ]
    return max(ratios, default=0.0)


class GradientBalance:
    """The ``"grad_balanced"`` scale s of λ_phys·L_res (module docstring).

    Each training step measures ŝ = min(1, ρ / r) with r the worst ratio of physics to flow
    gradient norm over the shared groups, and sets s ← min(ŝ, (1 − α)·s + α·ŝ) (the first
    step takes ŝ): the moving average of Wang et al. 2021, never above the newest bound,
    so the scaled physics gradient stays at most ρ times the flow gradient on every
    shared group. s never exceeds 1: the balance only ever weakens the physics loss.

    Args:
        ratio: ρ > 0.
        smoothing: α in (0, 1], the weight of the newest ŝ.
    """

    def __init__(self, ratio: float, smoothing: float) -> None:
        if not ratio > 0 or not 0 < smoothing <= 1:
            raise ValueError(
                f"GradientBalance needs ratio > 0 and smoothing in (0, 1], got {ratio}, {smoothing}"
            )
        self.ratio, self.smoothing = float(ratio), float(smoothing)
        self.scale = 1.0
        self.updates = 0

    def update(self, worst: float) -> float:
        """The scale for this step from the unscaled worst ratio r; returns the new s."""
        if not math.isfinite(worst):
            return self.scale  # a non-finite step (skipped by training) leaves s alone
        bound = 1.0 if worst <= self.ratio else self.ratio / worst
        averaged = (
            bound
            if self.updates == 0
            else (1 - self.smoothing) * self.scale + self.smoothing * bound
        )
        self.scale = min(bound, averaged)
        self.updates += 1
        return self.scale

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scale, self.updates = float(state["scale"]), int(state["updates"])
