"""Analyses of a trained adapter: router statistics, expert maps, training curves.

What the paper's Figs. 6–7 show, computed from a run's output folder:

- :mod:`pila.analysis.routing` — route cached clips at chosen noise levels
  (:func:`collect_routing`); each expert's selection rate by ground-truth category
  (:func:`selection_rate_by_category`); the experts' co-activation correlation
  (:func:`coactivation_correlation_matrix`); the routing generation recorded for prompts
  (:func:`read_generated_routing`);
- :mod:`pila.analysis.maps` — per-expert spatial update magnitude over frames
  (:func:`expert_update_maps`, :func:`collect_expert_maps`);
- :mod:`pila.analysis.scalars` — TensorBoard event files as a tidy table
  (:func:`read_scalars`) and its per-term residual, per-expert and per-group
  gradient curves;
- :mod:`pila.analysis.run` — the output folder of ``pila demo`` (:class:`RunFolder`);
- :mod:`pila.analysis.plots` — matplotlib figures of all of the above.

The functions compute; only :mod:`pila.analysis.plots` draws (import it explicitly).
"""

from pila.analysis.forward import adapter_step, check_sigmas, clip_batches
from pila.analysis.maps import (
    ExpertMaps,
    collect_expert_maps,
    expert_update_maps,
    latent_frame_times,
    pick_clips,
)
from pila.analysis.routing import (
    ClipRouting,
    GeneratedRouting,
    category_counts,
    coactivation_correlation_matrix,
    coactivation_counts,
    collect_routing,
    mean_by_category,
    mean_weight_by_category,
    read_generated_routing,
    selection_rate_by_category,
)
from pila.analysis.run import RunFolder, TrainingSettings
from pila.analysis.scalars import (
    EXPERT_METRICS,
    CurveMatrix,
    ScalarTable,
    Series,
    align_curves,
    event_files,
    expert_curves,
    gradient_curves,
    read_scalars,
    residual_curves,
)

__all__ = [
    "EXPERT_METRICS",
    "ClipRouting",
    "CurveMatrix",
    "ExpertMaps",
    "GeneratedRouting",
    "RunFolder",
    "ScalarTable",
    "Series",
    "TrainingSettings",
    "adapter_step",
    "align_curves",
    "category_counts",
    "check_sigmas",
    "clip_batches",
    "coactivation_correlation_matrix",
    "coactivation_counts",
    "collect_expert_maps",
    "collect_routing",
    "event_files",
    "expert_curves",
    "expert_update_maps",
    "gradient_curves",
    "latent_frame_times",
    "mean_by_category",
    "mean_weight_by_category",
    "pick_clips",
    "read_generated_routing",
    "read_scalars",
    "residual_curves",
    "selection_rate_by_category",
]
