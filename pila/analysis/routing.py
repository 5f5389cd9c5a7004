"""Router statistics over a set of cached clips (paper Fig. 6).

:func:`collect_routing` runs the trained adapter on every clip at one or more noise
levels and keeps each routing decision; from those:

- :func:`selection_rate_by_category` — Fig. 6 left: for each ground-truth category c and
  expert k, the share of the clips labelled c whose routing selected k,

      rate[c, k] = Σ_n y[n, c]·s[n, k] / Σ_n y[n, c]

  (a clip with several labels counts once for each of them);
- :func:`mean_weight_by_category` — the same average of the routing weights π;
- :func:`coactivation_correlation_matrix` — Fig. 6 right: the Pearson correlation of the
  experts' selection indicators over the clips (via
  :func:`pila.stages.metrics.coactivation_correlation`, as training logs it).

For prompts, :func:`read_generated_routing` reads the routing that generation recorded in
each video's JSON sidecar (``pila predict``): the parser's labels and each expert's weight
averaged over the corrected steps.

Legend: N samples (clips × noise levels), E experts (8), C ground-truth categories (8),
K top-k, S noise levels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from pila.adapter import PILAAdapter, Routing, RoutingStatistics, routing_statistics
from pila.analysis.forward import adapter_step, as_cpu, check_sigmas, clip_batches
from pila.backbone import WanBackbone
from pila.categories import CATEGORIES, NUM_CATEGORIES, labels_to_multihot
from pila.generation.layouts import read_sidecar
from pila.stages.metrics import coactivation_correlation

log = logging.getLogger(__name__)


@dataclass
class ClipRouting:
    """The routing of N clips at S noise levels.

    Attributes:
        ids: (N,) clip ids, in the order of the clips.
        prompts: (N,) the clips' prompts.
        labels: (N, C) ground-truth multi-hot labels (float 0/1, ``CATEGORIES`` order).
        sigmas: (S,) the noise levels.
        routing: S decisions, one per noise level, each over the N clips (on the CPU):
            ``indices`` (N, K), ``weights`` (N, E), ``logits``/``scores`` (N, E).
    """

    ids: list[str]
    prompts: list[str]
    labels: Tensor
    sigmas: tuple[float, ...]
    routing: list[Routing]

    def __post_init__(self) -> None:
        if len(self.routing) != len(self.sigmas):
            raise ValueError(
                f"{len(self.routing)} routing decisions for {len(self.sigmas)} noise levels"
            )
        n = len(self.ids)
        covered = all(r.weights.shape[0] == n for r in self.routing)
        if self.labels.shape != (n, NUM_CATEGORIES) or not covered:
            raise ValueError(f"labels and every routing decision must cover the {n} clips")

    def _levels(self, sigma: float | None) -> list[int]:
        if sigma is None:
            return list(range(len(self.sigmas)))
        matches = [i for i, s in enumerate(self.sigmas) if abs(s - float(sigma)) < 1e-9]
        if not matches:
            raise KeyError(f"no routing at sigma {sigma}; collected at {list(self.sigmas)}")
        return matches

    def selected(self, sigma: float | None = None) -> Tensor:
        """(N·S', E) bool selections at ``sigma`` (None: every level, stacked level by level)."""
        return torch.cat([self.routing[i].selected for i in self._levels(sigma)])

    def weights(self, sigma: float | None = None) -> Tensor:
        """(N·S', E) routing weights π, stacked like :meth:`selected`."""
        return torch.cat([self.routing[i].weights for i in self._levels(sigma)])

    def sample_labels(self, sigma: float | None = None) -> Tensor:
        """(N·S', C) labels repeated to match :meth:`selected`."""
        return self.labels.repeat(len(self._levels(sigma)), 1)

    def statistics(self, sigma: float | None = None) -> RoutingStatistics:
        """Selection counts, weights, label agreement, entropy and co-activation (as logged)."""
        levels = self._levels(sigma)
        stats = routing_statistics(self.routing[levels[0]], self.labels)
        for i in levels[1:]:
            stats = stats + routing_statistics(self.routing[i], self.labels)
        return stats


def _concat_routing(parts: Sequence[Routing]) -> Routing:
    return Routing(
        logits=torch.cat([p.logits for p in parts]),
        scores=torch.cat([p.scores for p in parts]),
        indices=torch.cat([p.indices for p in parts]),
        topk_weights=torch.cat([p.topk_weights for p in parts]),
        weights=torch.cat([p.weights for p in parts]),
    )


def collect_routing(
    adapter: PILAAdapter,
    backbone: WanBackbone,
    clips: Dataset,
    sigmas: float | Sequence[float] = 0.5,
    *,
    text_length: int,
    batch_size: int = 8,
    seed: int = 0,
    cond_scale: float = 1.0,
) -> ClipRouting:
    """Route every clip of ``clips`` at each noise level (eval mode, no gradients).

    Args:
        adapter: the trained adapter (with a router, i.e. not the plain adapter).
        backbone: the frozen backbone it was trained with.
        clips: cached clips (:class:`~pila.datamodules.cache.CachedClips`).
        sigmas: noise level(s) σ ∈ [0, 1].
        text_length: text positions fed to the backbone (the training config's).
        batch_size: clips per forward pass.
        seed: seed of the noise ε (level i uses ``seed + i``).
        cond_scale: conditioning scale s.

    Returns:
        :class:`ClipRouting`.
    """
    if adapter.plain is not None:
        raise ValueError(
            "the plain adapter (AdapterConfig.plain_adapter=True) has no router to analyse"
        )
    levels = check_sigmas(sigmas)
    ids: list[str] = []
    prompts: list[str] = []
    labels: list[Tensor] = []
    per_level: list[list[Routing]] = [[] for _ in levels]
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(levels))]
    for batch in clip_batches(clips, batch_size):
        ids.extend(batch["id"])
        prompts.extend(batch["prompt"])
        labels.append(batch["labels"].float())
        for i, sigma in enumerate(levels):
            out = adapter_step(
                adapter, backbone, batch, sigma,
                text_length=text_length, generator=generators[i], cond_scale=cond_scale,
            )  # fmt: skip
            r = out.routing
            per_level[i].append(
                Routing(
                    as_cpu(r.logits),
                    as_cpu(r.scores),
                    as_cpu(r.indices),
                    as_cpu(r.topk_weights),
                    as_cpu(r.weights),
                )
            )
    if not ids:
        raise ValueError("no clips to route: the clip set is empty")
    log.info("routed %d clips at sigma %s", len(ids), ", ".join(f"{s:g}" for s in levels))
    routing = [_concat_routing(p) for p in per_level]
    return ClipRouting(ids, prompts, torch.cat(labels), levels, routing)


def _check_pair(values: Tensor, labels: Tensor, what: str) -> None:
    if values.ndim != 2 or labels.ndim != 2 or values.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{what} (N, E) and labels (N, C) must be 2-D with one row per sample, "
            f"got {tuple(values.shape)} and {tuple(labels.shape)}"
        )


def category_counts(labels: Tensor) -> Tensor:
    """(C,) number of samples labelled with each category (labels (N, C), > 0.5 counts)."""
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (N, C), got {tuple(labels.shape)}")
    return (labels > 0.5).sum(0)


def mean_by_category(values: Tensor, labels: Tensor) -> Tensor:
    """(C, E) mean of ``values`` (N, E) over the samples labelled with each category.

    A category no sample carries gets a row of NaN.
    """
    _check_pair(values, labels, "values")
    y = (labels > 0.5).double()  # (N, C)
    sums = y.T @ values.double()  # (C, E)
    counts = y.sum(0)[:, None]  # (C, 1)
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))


def selection_rate_by_category(selected: Tensor, labels: Tensor) -> Tensor:
    """Fig. 6 left: rate[c, k], the share of samples labelled c whose routing selected expert k.

    Args:
        selected: (N, E) selections: bool, or routing weights π (a nonzero weight counts
            as selected).
        labels: (N, C) ground-truth multi-hot labels.

    Returns:
        (C, E) float64 in [0, 1]; NaN rows for categories without samples.
    """
    _check_pair(selected, labels, "selected")
    return mean_by_category((selected != 0).double(), labels)


def mean_weight_by_category(weights: Tensor, labels: Tensor) -> Tensor:
    """(C, E) mean routing weight π_k over the samples labelled c.

    The zero weights of unselected experts count.
    """
    _check_pair(weights, labels, "weights")
    return mean_by_category(weights, labels)


def coactivation_counts(selected: Tensor) -> Tensor:
    """(E, E) number of samples that selected experts i and j together.

    The diagonal holds the selection counts.
    """
    if selected.ndim != 2:
        raise ValueError(f"selected must have shape (N, E), got {tuple(selected.shape)}")
    s = (selected != 0).double()  # (N, E)
    return s.T @ s  # (E, E)


def coactivation_correlation_matrix(selected: Tensor) -> Tensor:
    """Fig. 6 right: (E, E) Pearson correlation of the experts' selection indicators over samples.

    Experts selected by every sample or by none have no variance and correlate 0 with the
    others (1 on the diagonal), as in :func:`pila.stages.metrics.coactivation_correlation`.
    """
    return coactivation_correlation(coactivation_counts(selected), selected.shape[0])


@dataclass
class GeneratedRouting:
    """The routing of generated videos, from their JSON sidecars.

    Attributes:
        videos: (N,) each video's path relative to the folder read.
        prompts: (N,) the prompts.
        labels: (N, C) the parser's multi-hot labels.
        weights: (N, E) each expert's routing weight averaged over the corrected steps.
    """

    videos: list[str]
    prompts: list[str]
    labels: Tensor
    weights: Tensor


def read_generated_routing(videos_dir: str | os.PathLike) -> GeneratedRouting:
    """Read the routing recorded in every video sidecar under ``videos_dir`` (recursively).

    Sidecars of videos generated without an adapter (no routing) are skipped, and so are
    JSON files that are not video sidecars.

    Raises:
        FileNotFoundError: ``videos_dir`` does not exist or holds no sidecar with routing.
    """
    from pila.generation.writer import SIDECAR_FORMAT

    root = Path(videos_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"videos folder {str(root)!r} does not exist; `pila predict` writes it"
        )
    videos: list[str] = []
    prompts: list[str] = []
    labels: list[Tensor] = []
    weights: list[Tensor] = []
    for path in sorted(root.rglob("*.json")):
        meta = read_sidecar(path)
        if meta is None or meta.get("format") != SIDECAR_FORMAT or not meta.get("routing_weights"):
            continue
        routing = meta["routing_weights"]
        videos.append(str(meta.get("video", path.with_suffix(".mp4").relative_to(root).as_posix())))
        prompts.append(str(meta["prompt"]))
        labels.append(labels_to_multihot(list(meta.get("labels") or [])))
        weights.append(torch.tensor([float(routing.get(name, 0.0)) for name in CATEGORIES]))
    if not videos:
        raise FileNotFoundError(
            f"no video sidecar with routing weights under {str(root)!r}; generate with an adapter "
            "(`pila predict ... --model.init_args.adapter ADAPTER_FOLDER`)"
        )
    return GeneratedRouting(videos, prompts, torch.stack(labels), torch.stack(weights))
