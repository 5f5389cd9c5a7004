"""The weighted residual loss of one category (pila-method.md Eq. 6).

    L_k = Σ_j λ_{k,j} · mean(m · r_{k,j}²)

The mean runs over channels and interior points of each sample, so ``L_k`` is a (B,)
vector the adapter can weight per sample with the routing weights (Eq. 7). ``m`` is the
spatial mask (B, 1, T, H, W), cropped here to the interior points where every residual
lives.

Weights λ_{k,j} and the sum over terms, one setting each (design/pila-method.md R6: the
paper says only "its adaptive weight"):

* ``"inverse_running_mean"`` (default; also spelled ``"adaptive"``): λ = w_{k,j} /
  (μ_{k,j} + eps), with μ a running mean of the term's batch value ``mean(m·r²)``,
  detached. The first training update sets μ to the observed value, later ones follow
  ``μ ← momentum·μ + (1 − momentum)·value``; μ is updated before it is used, so every
  term enters at O(1) from the first step. Running means live in buffers and are saved in
  checkpoints; they change only in training mode. A term never seen in training is
  normalised by its current detached value in eval.
* ``"frozen"``: λ = w_{k,j} / (μ_{k,j} + eps) with μ the plain mean of the term's first
  ``freeze_steps`` values, fixed afterwards, so a term that falls below its early scale
  stops pulling at O(1).
* ``"category_mean"``: λ as ``"inverse_running_mean"``, and L_k is the mean over the
  category's terms instead of their sum, so no category weighs more for having more terms.
* ``"grad_balanced"``: λ as ``"inverse_running_mean"`` here; stage C scales λ_phys·L_res
  so that on the shared parameters its gradient stays at most ρ times the flow-matching
  gradient (:class:`pila.stages.gradients.GradientBalance`).
* ``"fixed"``: λ = w_{k,j}.

w_{k,j} are the optional fixed per-term weights (default 1).

Shapes: B batch, C_r residual channels, T latent frames, H, W latent height and width.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from pila.physics.ops import crop_interior
from pila.physics.residuals import TERM_KEYS

Weighting = Literal[
    "inverse_running_mean", "frozen", "category_mean", "grad_balanced", "fixed", "adaptive"
]
WEIGHTINGS: tuple[str, ...] = (
    "inverse_running_mean", "frozen", "category_mean", "grad_balanced", "fixed"
)
"""The readings of the adaptive weights λ_{k,j} (module docstring)."""
LEGACY_WEIGHTINGS: dict[str, str] = {"adaptive": "inverse_running_mean"}
"""Earlier spellings still accepted, and the setting each stands for."""


def canonical_weighting(weighting: str) -> str:
    """The setting ``weighting`` names (an earlier spelling mapped to today's), checked."""
    weighting = LEGACY_WEIGHTINGS.get(weighting, weighting)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    return weighting


@dataclass
class ResidualLossOutput:
    """Result of :class:`ResidualLoss`.

    Attributes:
        per_category: category → L_k per sample (B,), with gradients.
        per_term: (category, term) → mean(m·r²) over the batch, detached (for logging).
        weights: (category, term) → λ used this step, detached.
    """

    per_category: dict[str, Tensor]
    per_term: dict[tuple[str, str], Tensor]
    weights: dict[tuple[str, str], Tensor]


def masked_square_mean(residual: Tensor, mask: Tensor) -> Tensor:
    """mean over (C, T, H, W) of m·r² per sample.

    Shapes: r (B, C_r, T', H', W'), m (B, 1, T', H', W') → (B,).
    """
    if residual.dtype in (torch.float16, torch.bfloat16):
        residual = residual.float()  # accumulate squares of low-precision residuals in float32
    if torch.compiler.is_compiling():
        # One reduction per term: the compiler fuses r, r² and m·r² into it.
        return (residual.square() * mask).mean(dim=(1, 2, 3, 4))  # (B,)
    squared = residual.square().mean(dim=1, keepdim=True)  # (B, 1, T', H', W')
    return (squared * mask).flatten(1).mean(dim=1)  # (B,)


def term_key(category: str, term: str) -> str:
    """The string form ``"category/term"`` used for fixed weights in configs."""
    return f"{category}/{term}"


class ResidualLoss(nn.Module):
    """Weighted masked mean of squared residuals per category, with adaptive term weights.

    Args:
        weighting: the reading of the adaptive weights (module docstring); ``"adaptive"``
            is the earlier spelling of ``"inverse_running_mean"``. [paper, Sec. 3.2 (Eq.
            6): adaptive weights; their form is ours: ``"inverse_running_mean"``]
        momentum: running-mean momentum in [0, 1); 0 uses only the current batch.
            [ours: an average over about 100 steps]
        eps: added to the running mean before inverting it. [ours: only guards a
            division by zero]
        fixed_weights: ``"category/term"`` → weight w (default 1 for every term); in the
            adaptive readings it multiplies the adaptive weight.
        freeze_steps: with ``"frozen"``, how many of a term's values its scale averages
            before it is fixed. [ours: 100, the window of the running mean's momentum]
    """

    def __init__(
        self,
        weighting: Weighting = "inverse_running_mean",
        momentum: float = 0.99,
        eps: float = 1e-8,
        fixed_weights: Mapping[str, float] | None = None,
        freeze_steps: int = 100,
    ) -> None:
        super().__init__()
        weighting = canonical_weighting(weighting)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        if freeze_steps < 1:
            raise ValueError(f"freeze_steps must be >= 1, got {freeze_steps}")
        self.weighting = weighting
        self.momentum = momentum
        self.eps = eps
        self.freeze_steps = int(freeze_steps)
        self.index = {key: i for i, key in enumerate(TERM_KEYS)}
        names = {term_key(*key): i for key, i in self.index.items()}
        weights = torch.ones(len(TERM_KEYS))
        for name, value in (fixed_weights or {}).items():
            if name not in names:
                raise ValueError(
                    f"unknown residual term {name!r} in fixed_weights; write 'category/term', "
                    f"one of: {', '.join(names)}"
                )
            if value < 0:
                raise ValueError(f"fixed weight of {name!r} must be >= 0, got {value}")
            weights[names[name]] = float(value)
        self.register_buffer("fixed_weight", weights, persistent=True)
        self.register_buffer("running_mean", torch.zeros(len(TERM_KEYS)), persistent=True)
        self.register_buffer("num_updates", torch.zeros(len(TERM_KEYS), dtype=torch.long))

    def _update(self, i: int, value: Tensor) -> None:
        """One training update of term ``i``'s scale from its batch value (detached scalar)."""
        seen = self.num_updates[i] > 0
        if self.weighting == "frozen":
            # the plain mean of the first freeze_steps values, then nothing moves
            count = self.num_updates[i].to(value.dtype)
            updated = self.running_mean[i] + (value - self.running_mean[i]) / (count + 1)
            measuring = self.num_updates[i] < self.freeze_steps
        else:
            updated = self.momentum * self.running_mean[i] + (1.0 - self.momentum) * value
            measuring = torch.ones((), dtype=torch.bool, device=value.device)
        # A non-finite step (which training skips) must not poison the statistics.
        take = torch.isfinite(value) & measuring
        self.running_mean[i] = torch.where(
            take, torch.where(seen, updated, value), self.running_mean[i]
        )
        self.num_updates[i] += take.to(self.num_updates.dtype)

    def _weight(self, key: tuple[str, str], value: Tensor) -> Tensor:
        """λ for one term, updating its scale in training mode (value: detached scalar)."""
        i = self.index[key]
        if self.weighting == "fixed":
            return self.fixed_weight[i]
        if self.training:
            self._update(i, value)
            scale = self.running_mean[i]
        elif int(self.num_updates[i]) > 0:
            scale = self.running_mean[i]
        else:
            scale = value
        return self.fixed_weight[i] / (scale + self.eps)

    def forward(
        self, residuals: Mapping[str, Mapping[str, Tensor]], mask: Tensor
    ) -> ResidualLossOutput:
        """Per-category losses L_k (Eq. 6) from residual tensors.

        Args:
            residuals: category → term → residual (B, C_r, T−2, H−2, W−2), as returned
                by :func:`pila.physics.residuals.residuals_for_categories`.
            mask: spatial mask (B, 1, T, H, W), uncropped; used detached.

        Returns:
            :class:`ResidualLossOutput`; a category with no terms gets zeros (B,).
        """
        return self.weigh(masked_means(residuals, mask), batch_size=mask.shape[0])

    def weigh(
        self, means: Mapping[str, Mapping[str, Tensor]], *, batch_size: int | None = None
    ) -> ResidualLossOutput:
        """Per-category losses L_k (Eq. 6) from the per-term means mean(m·r²).

        Args:
            means: category → term → mean(m·r²) per sample (B,), as returned by
                :func:`masked_means` or :class:`pila.physics.fused.ResidualPass`.
            batch_size: B, needed only when no category has a term (the zeros of an
                empty category are otherwise sized from the other terms).

        Returns:
            :class:`ResidualLossOutput`; a category with no terms gets zeros (B,).
        """
        per_category: dict[str, Tensor] = {}
        per_term: dict[tuple[str, str], Tensor] = {}
        weights: dict[tuple[str, str], Tensor] = {}
        for category, terms in means.items():
            total: Tensor | None = None
            for term, value in terms.items():
                key = (category, term)
                if key not in self.index:
                    raise ValueError(
                        f"unknown residual term {category}/{term}; see "
                        f"pila.physics.residuals.RESIDUAL_TERMS"
                    )
                if value.ndim != 1:
                    raise ValueError(
                        f"the mean of {category}/{term} must be one value per sample (B,), "
                        f"got shape {tuple(value.shape)}"
                    )
                batch_value = value.detach().mean()
                weight = self._weight(key, batch_value).detach()
                total = weight * value if total is None else total + weight * value
                per_term[key] = batch_value
                weights[key] = weight
            if total is not None and self.weighting == "category_mean":
                total = total / len(terms)  # L_k: the mean over the category's terms
            per_category[category] = total if total is not None else self._zeros(means, batch_size)
        return ResidualLossOutput(per_category=per_category, per_term=per_term, weights=weights)

    def _zeros(self, means: Mapping[str, Mapping[str, Tensor]], batch_size: int | None) -> Tensor:
        """L_k = 0 (B,) for a category whose terms were all dropped."""
        for terms in means.values():
            for value in terms.values():
                return torch.zeros_like(value)
        if batch_size is None:
            raise ValueError("ResidualLoss.weigh needs batch_size when no category has a term")
        return self.running_mean.new_zeros(batch_size)


def masked_means(
    residuals: Mapping[str, Mapping[str, Tensor]], mask: Tensor
) -> dict[str, dict[str, Tensor]]:
    """mean(m·r²) per sample for every residual, with the mask cropped to the interior.

    Args:
        residuals: category → term → residual (B, C_r, T−2, H−2, W−2).
        mask: spatial mask (B, 1, T, H, W), uncropped; used detached.

    Returns:
        category → term → (B,) means, in the order given: float32 (float64 for float64
        residuals). A residual tensor shared by two categories (a relation common to
        both) is reduced once and both entries hold the same mean.
    """
    if mask.ndim != 5 or mask.shape[1] != 1:
        raise ValueError(f"mask must have shape (B, 1, T, H, W), got {tuple(mask.shape)}")
    interior = crop_interior(mask.detach()).float()  # (B, 1, T', H', W')
    done: list[tuple[Tensor, Tensor]] = []  # (residual, its mean), compared by identity
    out: dict[str, dict[str, Tensor]] = {}
    for category, terms in residuals.items():
        out[category] = {}
        for term, residual in terms.items():
            if residual.shape[0] != interior.shape[0] or residual.shape[2:] != interior.shape[2:]:
                raise ValueError(
                    f"residual {category}/{term} has shape {tuple(residual.shape)}, which does "
                    f"not fit the interior-cropped mask {tuple(interior.shape)}: residuals must "
                    f"be (B, C_r, T−2, H−2, W−2) for a (B, 1, T, H, W) mask"
                )
            mean = next((m for r, m in done if r is residual), None)
            if mean is None:
                mean = masked_square_mean(residual, interior)  # (B,)
                done.append((residual, mean))
            out[category][term] = mean
    return out
