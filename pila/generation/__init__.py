"""Generation: videos from prompts with the frozen Wan generator and a PILA adapter.

Modules, in the order a prompt meets them on its way through ``pila predict``:

- :mod:`.records` prompt records and work items; :mod:`.readers` the prompt readers' base
  and shared parsing
- :mod:`.benchmarks` one module per benchmark (plain, PhyGenBench, VBench-2.0, VideoPhy,
  WISA prompts): its prompt reader and its output layout
- :mod:`.prompts` :class:`PromptDataModule`, the per-rank split of the work items
- :mod:`.predict` :class:`PILAPredictModule`, the LightningModule ``pila predict`` runs
- :mod:`.settings` :class:`SamplingConfig`: every setting that shapes a video
- :mod:`.sampling` :func:`generate` (``pila.generate``), :func:`generate_video` and
  :func:`generate_batch`
- :mod:`.proxy` the correcting scheduler proxy: Eq. (10) inside ``WanPipeline``'s own loop
- :mod:`.layouts` :class:`OutputLayout`, the base of the benchmarks' layouts
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
    "generate_batch": "sampling",
    "GeneratedVideo": "sampling",
    "SamplingConfig": "settings",
    "resolve_correction_steps": "settings",
    "resolve_seeds": "settings",
    "AdapterCorrection": "proxy",
    "CorrectingScheduler": "proxy",
    "PILAPredictModule": "predict",
    "PredictionResult": "predict",
    "PromptDataModule": "prompts",
    "PromptFileError": "records",
    "PromptRecord": "records",
    "PredictItem": "records",
    "PromptReader": "readers",
    "read_prompt_file": "benchmarks",
    "OutputLayout": "layouts",
    "read_sidecar": "layouts",
    "PlainLayout": "benchmarks.plain",
    "PhyGenBenchLayout": "benchmarks.phygenbench",
    "VBench2Layout": "benchmarks.vbench2",
    "VideoPhy2Layout": "benchmarks.videophy",
    "SIDECAR_FORMAT": "writer",
    "VideoPredictionWriter": "writer",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
