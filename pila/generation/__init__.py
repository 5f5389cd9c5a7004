"""Generation: videos from prompts with the frozen Wan generator and a PILA adapter.

Modules, in the order a prompt meets them on its way through ``pila predict``:

- :mod:`.prompts` prompt files (txt, jsonl/json/csv, PhyGenBench, VideoPhy, VBench-2.0),
  work items, the per-rank split and :class:`PromptDataModule`
- :mod:`.predict` :class:`PILAPredictModule`, the LightningModule ``pila predict`` runs
- :mod:`.settings` :class:`SamplingConfig`: every setting that shapes a video
- :mod:`.sampling` :func:`generate` (``pila.generate``) and :func:`generate_video`
- :mod:`.proxy` the correcting scheduler proxy: Eq. (10) inside ``WanPipeline``'s own loop
- :mod:`.layouts` where each video goes, so that each benchmark's evaluator finds it
- :mod:`.writer` :class:`VideoPredictionWriter`: mp4s, JSON sidecars, CSV indexes

The adapter's folder, hub loading and its check against a backbone are the adapter's
(:mod:`pila.adapter.pretrained`); the prompt parser is :mod:`pila.parser`.

Names are imported on first use, so importing one module does not load the others.
"""

from __future__ import annotations

from pila.lazy import lazy_exports

_EXPORTS = {
    "generate": "sampling",
    "generate_video": "sampling",
    "GeneratedVideo": "sampling",
    "SamplingConfig": "settings",
    "resolve_correction_steps": "settings",
    "resolve_seeds": "settings",
    "AdapterCorrection": "proxy",
    "CorrectingScheduler": "proxy",
    "PILAPredictModule": "predict",
    "PredictionResult": "predict",
    "PromptDataModule": "prompts",
    "PromptFileError": "prompts",
    "PromptRecord": "prompts",
    "PredictItem": "prompts",
    "read_prompt_file": "prompts",
    "LAYOUTS": "layouts",
    "make_layout": "layouts",
    "read_sidecar": "layouts",
    "SIDECAR_FORMAT": "writer",
    "VideoPredictionWriter": "writer",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
