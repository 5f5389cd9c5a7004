"""What training logs: router statistics, per-expert and per-term residuals, expert maps.

:class:`RouterMetrics` and :class:`ResidualMetrics` are torchmetrics;
:func:`expert_update_maps` is where each routed expert changes the bank (paper Fig. 7),
the ``train/expert_maps`` image of stage C and the maps of :mod:`pila.analysis`.

Both metrics keep sums in states reduced with ``"sum"``, so ``compute()`` on several
processes returns the statistics of the whole global batch, not of one rank's share.
``compute()`` synchronises, so every rank must call it at the same step.

Legend: B batch, E experts (8), K top-k, P bank channels (32), T latent frames, H, W
latent height and width.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from pila.adapter.router import Routing, RoutingStatistics, routing_statistics
from pila.categories import CATEGORIES, NUM_CATEGORIES
from pila.physics.residuals import TERM_KEYS


class RouterMetrics(Metric):
    """Selection counts, routing weights, label agreement, entropy and co-activation."""

    full_state_update = False

    def __init__(self, num_experts: int = len(CATEGORIES), **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_experts = num_experts
        f64 = torch.float64
        self.add_state("num_samples", torch.tensor(0.0, dtype=f64), dist_reduce_fx="sum")
        self.add_state(
            "selection_counts", torch.zeros(num_experts, dtype=f64), dist_reduce_fx="sum"
        )
        self.add_state("weight_sums", torch.zeros(num_experts, dtype=f64), dist_reduce_fx="sum")
        self.add_state("selected_labelled", torch.tensor(0.0, dtype=f64), dist_reduce_fx="sum")
        self.add_state("selected_total", torch.tensor(0.0, dtype=f64), dist_reduce_fx="sum")
        self.add_state("labels_total", torch.tensor(0.0, dtype=f64), dist_reduce_fx="sum")
        self.add_state("entropy_sum", torch.tensor(0.0, dtype=f64), dist_reduce_fx="sum")
        self.add_state(
            "coactivation", torch.zeros(num_experts, num_experts, dtype=f64), dist_reduce_fx="sum"
        )

    def update(self, routing: Routing, labels: Tensor) -> None:  # type: ignore[override]
        stats = routing_statistics(routing, labels)
        device = self.selection_counts.device
        self.num_samples += stats.num_samples
        self.selection_counts += stats.selection_counts.to(device, torch.float64)
        self.weight_sums += stats.weight_sums.to(device, torch.float64)
        self.selected_labelled += stats.selected_labelled
        self.selected_total += stats.selected_total
        self.labels_total += stats.labels_total
        self.entropy_sum += stats.entropy_sum
        self.coactivation += stats.coactivation.to(device, torch.float64)

    def compute(self) -> RoutingStatistics:
        """The sums of every update since the last reset (all processes'), as
        :class:`~pila.adapter.router.RoutingStatistics`: its rates and its log dict are the
        one definition of the router statistics, shared with :mod:`pila.analysis`."""
        return RoutingStatistics(
            num_samples=int(self.num_samples),
            selection_counts=self.selection_counts.cpu(),  # (E,)
            weight_sums=self.weight_sums.cpu(),  # (E,)
            selected_labelled=int(self.selected_labelled),
            selected_total=int(self.selected_total),
            labels_total=int(self.labels_total),
            entropy_sum=float(self.entropy_sum),
            coactivation=self.coactivation.cpu(),  # (E, E) counts
        )


def coactivation_correlation(coactivation: Tensor, num_samples: Tensor | float) -> Tensor:
    """Pearson correlation (E, E) of the experts' selection indicators from co-activation counts.

    With s_i the selection indicator of expert i over samples, E[s_i s_j] = C_ij / n, so
    corr = (C_ij/n − p_i p_j) / sqrt(p_i(1 − p_i) p_j(1 − p_j)); experts never or always
    selected have zero variance and get correlation 0 (1 on the diagonal).
    """
    n = torch.as_tensor(num_samples, dtype=torch.float64).clamp_min(1)
    joint = coactivation.double() / n
    p = torch.diagonal(joint)
    cov = joint - p[:, None] * p[None, :]
    std = (p * (1 - p)).clamp_min(0).sqrt()
    denom = std[:, None] * std[None, :]
    corr = torch.where(denom > 1e-12, cov / denom.clamp_min(1e-12), torch.zeros_like(cov))
    corr.fill_diagonal_(1.0)
    return corr


class ResidualMetrics(Metric):
    """Mean of each (category, term) residual value and of each expert's loss L_k.

    Terms are only evaluated for the experts a sample routes to, so every entry keeps its
    own count and an entry never seen in the window computes to NaN (and is not logged).
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.term_index = {key: i for i, key in enumerate(TERM_KEYS)}
        self.expert_index = {cat: i for i, cat in enumerate(CATEGORIES)}
        n_terms, n_experts = len(TERM_KEYS), len(CATEGORIES)
        f64 = torch.float64
        self.add_state("term_sums", torch.zeros(n_terms, dtype=f64), dist_reduce_fx="sum")
        self.add_state("term_counts", torch.zeros(n_terms, dtype=f64), dist_reduce_fx="sum")
        self.add_state("expert_sums", torch.zeros(n_experts, dtype=f64), dist_reduce_fx="sum")
        self.add_state("expert_counts", torch.zeros(n_experts, dtype=f64), dist_reduce_fx="sum")

    def update(  # type: ignore[override]
        self,
        per_term: dict[tuple[str, str], Tensor],
        per_expert: dict[str, Tensor] | None = None,
    ) -> None:
        """Add one step's values.

        Args:
            per_term: {(category, term): scalar} mean residual value of the step.
            per_expert: {category: (B,) per-sample L_k} of the experts evaluated; samples
                whose value is NaN (the expert did not run for them) are skipped.
        """
        for key, value in per_term.items():
            i = self.term_index[key]
            v = value.detach().double().to(self.term_sums.device)
            if torch.isfinite(v):
                self.term_sums[i] += v
                self.term_counts[i] += 1
        for cat, values in (per_expert or {}).items():
            v = values.detach().double().reshape(-1).to(self.expert_sums.device)
            finite = torch.isfinite(v)
            self.expert_sums[self.expert_index[cat]] += v[finite].sum()
            self.expert_counts[self.expert_index[cat]] += finite.sum()

    def compute(self) -> dict[str, Tensor]:
        nan = torch.full_like(self.term_sums, float("nan"))
        terms = torch.where(
            self.term_counts > 0, self.term_sums / self.term_counts.clamp_min(1), nan
        )
        nan_e = torch.full_like(self.expert_sums, float("nan"))
        experts = torch.where(
            self.expert_counts > 0, self.expert_sums / self.expert_counts.clamp_min(1), nan_e
        )
        return {"terms": terms, "experts": experts}

    def log_dict(self, prefix: str = "train") -> dict[str, float]:
        """``{prefix}/residual/<category>/<term>`` and ``{prefix}/expert_loss/<category>``.

        Only entries seen so far are included.
        """
        values = self.compute()
        out: dict[str, float] = {}
        for (cat, term), v in zip(TERM_KEYS, values["terms"].tolist(), strict=True):
            if v == v:  # not NaN
                out[f"{prefix}/residual/{cat}/{term}"] = v
        for cat, v in zip(CATEGORIES, values["experts"].tolist(), strict=True):
            if v == v:
                out[f"{prefix}/expert_loss/{cat}"] = v
        return out


def expert_update_maps(
    expert_updates: Tensor,
    indices: Tensor,
    *,
    num_experts: int = NUM_CATEGORIES,
    topk_weights: Tensor | None = None,
) -> Tensor:
    """Per-expert spatial update magnitude, mean |ΔP_k| over bank channels.

    Args:
        expert_updates: (B, K, P, T, H, W) ΔP of the selected experts, aligned with ``indices``
            (``AdapterOutput.expert_updates``).
        indices: (B, K) the selected experts (``AdapterOutput.routing.indices``).
        num_experts: E.
        topk_weights: (B, K) routing weights π of the selected experts; when given each map
            is scaled by its weight.

    Returns:
        (B, E, T, H, W) float32, zero for the experts a sample did not select.
    """
    if expert_updates.ndim != 6:
        raise ValueError(
            "expert_updates must have shape (B, K, P, T, H, W), "
            f"got {tuple(expert_updates.shape)}"
        )
    b, k = expert_updates.shape[:2]
    if indices.shape != (b, k):
        raise ValueError(
            f"indices must have shape ({b}, {k}) to match expert_updates, "
            f"got {tuple(indices.shape)}"
        )
    magnitude = expert_updates.detach().float().abs().mean(dim=2)  # (B, K, T, H, W)
    if topk_weights is not None:
        if topk_weights.shape != (b, k):
            raise ValueError(
                f"topk_weights must have shape ({b}, {k}), got {tuple(topk_weights.shape)}"
            )
        magnitude = magnitude * topk_weights.detach().float()[:, :, None, None, None]
    maps = magnitude.new_zeros(b, num_experts, *magnitude.shape[2:])  # (B, E, T, H, W)
    rows = torch.arange(b, device=indices.device)[:, None].expand(b, k)  # (B, K)
    maps[rows, indices] = magnitude
    return maps
