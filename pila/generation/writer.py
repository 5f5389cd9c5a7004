"""Writes what ``pila predict`` generates: mp4s, JSON sidecars and benchmark layouts.

:class:`VideoPredictionWriter` is a ``BasePredictionWriter`` that writes every video of a
predict batch as soon as it exists:

1. the mp4 (H.264 through PyAV at ``fps``, atomically),
2. then the JSON sidecar (atomically): prompt, refined prompt, labels, per-expert routing
   weights averaged over the corrected steps, seed, every generation setting, the
   adapter's identity (folder and SHA-256 of its weights) and the time spent per phase.

The sidecar is written last, so an output is complete exactly when both files exist.
The writer receives its layout as an object (:class:`~pila.generation.layouts.OutputLayout`;
the benchmarks' are in :mod:`pila.generation.benchmarks`), in YAML::

    - class_path: pila.generation.VideoPredictionWriter
      init_args:
        output_dir: outputs/vbench2
        layout:
          class_path: pila.generation.benchmarks.vbench2.VBench2Layout
          init_args: {dimension: Mechanics}

Before prediction starts the writer plans every output path over the whole prompt list
(the layout, bound to ``output_dir``), removes the temporary files a killed run left next to
them, and tells :class:`~pila.generation.prompts.PromptDataModule` which items are
already complete, so a re-run (or a killed run started again) generates only what is
missing. A complete output made with other settings (its sidecar's ``settings_sha256``
differs) is an error, so a benchmark folder never mixes settings.

Runs sharing a folder split the work: right before a batch is generated the writer claims
each of its outputs (:mod:`pila.generation.claims`); an output another live run holds, or
that became complete meanwhile, is dropped from the batch, and a crashed run's stale claim
is taken over. The claim is released once the sidecar is written.

Sample counts: the datamodule's ``videos_per_prompt``, or, when it is None, the layout's
default (VBench-2.0's count per dimension for ``vbench2``, else 1); a count below what
the evaluator reads is warned about. At the end, rank 0 rebuilds the layout's CSV index
from the complete outputs on disk (in ``teardown``, after a barrier, so all ranks have
finished) and the run's summary names every prompt that got no evaluator name.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from pila.generation.benchmarks import load as load_benchmarks
from pila.generation.benchmarks.plain import PlainLayout
from pila.generation.claims import ClaimBook, claim_path, remove_stale_temporaries
from pila.generation.layouts import OutputLayout, read_sidecar
from pila.generation.prompts import PromptDataModule
from pila.generation.records import PredictItem, PromptRecord
from pila.io import write_json_atomic, write_video

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "pila-video/1"
CLAIM_TIMEOUT_S = 7200.0
"""Ours: a claim older than this is stale (about 20× the slowest published single-video
time, Wan 2.2 A14B at 480p: 327 s on one H100). A batch's items are claimed together before
it starts, so a run on several hosts keeps batch size × seconds per video well under it
(or raises ``claim_timeout_s``)."""


load_benchmarks()  # every benchmark's layout class, so YAML may name one by its class name


def items_for_counts(
    records: Sequence[PromptRecord], counts: dict[int, int], seed: int
) -> list[PredictItem]:
    """One item per (record, sample) with a count per record, in file order.

    Seeds as :func:`pila.generation.prompts.build_items` with N the largest count:
    ``record.seed + k``, else ``seed + index·N + k``; with one count for every record the
    items are exactly ``build_items``'.
    """
    stride = max(counts.values(), default=1)
    items = []
    for record in records:
        base = record.seed if record.seed is not None else seed + record.index * stride
        items += [
            PredictItem(record=record, sample=k, seed=base + k)
            for k in range(counts[record.index])
        ]
    return items


def _settings(pl_module: pl.LightningModule) -> dict[str, Any]:
    """The module's generation settings (none for a module that has no such method)."""
    if hasattr(pl_module, "generation_settings"):
        return pl_module.generation_settings()
    return {}


class VideoPredictionWriter(BasePredictionWriter):
    """Write generated videos, their sidecars and a benchmark layout.

    Args:
        output_dir: the output folder.
        layout: where each video goes (an :class:`~pila.generation.layouts.OutputLayout`:
            ``PlainLayout``, ``PhyGenBenchLayout(model_name)``, ``VBench2Layout(dimension)``,
            ``VideoPhy2Layout(version, csv_paths)`` or a benchmark's own); None: the plain
            layout.
        fps: frame rate of the mp4s.
        crf: x264 constant-rate factor (lower is better quality).
        overwrite: regenerate outputs that are already complete.
        claim_timeout_s: age after which another run's claim counts as abandoned (a claim
            made on this host is also abandoned as soon as its process is gone).
    """

    def __init__(
        self,
        output_dir: str,
        layout: OutputLayout | None = None,
        fps: float = 16.0,
        crf: int = 18,
        overwrite: bool = False,
        claim_timeout_s: float = CLAIM_TIMEOUT_S,
    ) -> None:
        super().__init__(write_interval="batch")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must lie in [0, 51], got {crf}")
        self.output_dir = Path(output_dir).expanduser()
        self.fps = fps
        self.crf = crf
        self.overwrite = overwrite
        if layout is not None and not isinstance(layout, OutputLayout):
            raise TypeError(
                f"layout must be an OutputLayout (e.g. pila.generation.benchmarks.plain."
                f"PlainLayout()), got {type(layout).__name__}"
            )
        # A copy bound to this folder: the object given may serve other writers too.
        self.layout: OutputLayout = (layout or PlainLayout()).bind(self.output_dir)
        self.claims = ClaimBook(timeout_s=claim_timeout_s)
        self.written = 0
        self.held_elsewhere = 0
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------ planning
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Plan every output path and mark the complete ones for the datamodule to skip."""
        datamodule = trainer.datamodule
        if not isinstance(datamodule, PromptDataModule):
            raise TypeError(
                "VideoPredictionWriter needs data: pila.generation.PromptDataModule (it plans the "
                f"output names over the whole prompt list), got {type(datamodule).__name__}"
            )
        datamodule.setup(stage)
        records = datamodule.records
        requested = datamodule.videos_per_prompt  # None: the layout's default
        for warning in self.layout.sample_warnings(records, requested):
            log.warning(warning)
        counts = {r.index: self.layout.samples_for(r, requested) for r in records}
        if any(count != requested for count in counts.values()):
            datamodule.items = items_for_counts(records, counts, datamodule.seed)
        self.layout.plan(records, counts)
        for index, reason in sorted(self.layout.unnamed.items()):
            log.warning("prompt %d gets no video: %s", index, reason)
        for index, note in sorted(self.layout.renamed.items()):
            log.warning("prompt %d: %s", index, note)
        self._remove_stale_temporaries()
        datamodule.skip = functools.partial(self._needs_no_work, pl_module)
        self._fingerprint = None
        self.written = 0
        self.held_elsewhere = 0

    def _remove_stale_temporaries(self) -> None:
        claim_of = {}
        for paths in self.layout.planned_paths():
            claim = claim_path(paths.sidecar)
            claim_of[paths.video] = claim_of[paths.sidecar] = claim
        files = [*claim_of, *self.layout.index_paths()]
        for path in remove_stale_temporaries(files, self.claims, claim_of):
            log.info("removed %s, left by an interrupted run", path)

    def _needs_no_work(self, pl_module: pl.LightningModule, item: PredictItem) -> bool:
        if not self.layout.has_output(item):
            return True
        return not self.overwrite and self.is_done(pl_module, item)

    def settings_fingerprint(self, pl_module: pl.LightningModule) -> str:
        """SHA-256 of everything that shapes a video: generation settings, adapter, fps, crf."""
        if self._fingerprint is None:
            settings = _settings(pl_module)
            adapter = getattr(pl_module, "adapter_info", None)
            payload = {
                "settings": settings,
                "adapter_sha256": adapter["sha256"] if adapter else None,
                "fps": self.fps,
                "crf": self.crf,
            }
            text = json.dumps(payload, sort_keys=True, default=str)
            self._fingerprint = hashlib.sha256(text.encode()).hexdigest()
        return self._fingerprint

    def is_done(self, pl_module: pl.LightningModule, item: Any) -> bool:
        """Whether ``item``'s output is complete (asked when the dataloader is built).

        Raises:
            ValueError: the output exists but was made with other settings; a benchmark
                folder must not mix them.
        """
        if not self.layout.is_complete(item):
            return False
        sidecar = self.layout.paths(item).sidecar
        recorded = (read_sidecar(sidecar) or {}).get("settings_sha256")
        if recorded is not None and recorded != self.settings_fingerprint(pl_module):
            raise ValueError(
                f"{self.output_dir} already holds {self.layout.paths(item).video.name} made "
                f"with other generation settings (see {sidecar}); use another output_dir, or set "
                "overwrite: true on the writer to regenerate everything"
            )
        return True

    # ------------------------------------------------------------------ claiming
    def on_predict_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Claim the batch's outputs; drop (in place) those another run holds or finished."""
        kept = []
        for item in batch:
            if not self.layout.has_output(item):
                continue
            claim = claim_path(self.layout.paths(item).sidecar)
            if not self.claims.acquire(claim):
                self.held_elsewhere += 1
                log.info("%s is being made by another run; skipped", self.layout.paths(item).video)
                continue
            if self._needs_no_work(pl_module, item):
                self.claims.release(claim)
                continue
            kept.append(item)
        batch[:] = kept

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.claims.release_all()

    # ------------------------------------------------------------------ writing
    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        for result in prediction:
            self.write_result(result, pl_module)

    def write_result(self, result: Any, pl_module: pl.LightningModule) -> Path:
        """Write one result's mp4, then its sidecar; the frames are released afterwards."""
        item, video = result.item, result.video
        paths = self.layout.paths(item)
        claim = claim_path(paths.sidecar)
        if not self.claims.acquire(claim):  # already held when claimed before the batch
            log.warning(
                "%s was taken over by another run meanwhile; this run's video is not written",
                paths.video,
            )
            video.frames = None
            return paths.video
        try:
            start = time.perf_counter()
            write_video(paths.video, video.frames, fps=self.fps, crf=self.crf)
            video.timings["mp4_write"] = time.perf_counter() - start
            write_json_atomic(paths.sidecar, self.sidecar(result, paths.video, pl_module))
        finally:
            self.claims.release(claim)
        video.frames = None  # keep memory flat when Lightning also collects predictions
        self.written += 1
        return paths.video

    def sidecar(
        self, result: Any, video_path: Path, pl_module: pl.LightningModule
    ) -> dict[str, Any]:
        """The JSON record of one video."""
        item, video = result.item, result.video
        record = item.record
        parsed = video.parsed
        settings = _settings(pl_module)
        return {
            "format": SIDECAR_FORMAT,
            "prompt": record.prompt,
            "refined_prompt": parsed.refined_prompt if parsed is not None else None,
            "labels": list(parsed.labels) if parsed is not None else None,
            "label_source": parsed.source if parsed is not None else None,
            "seed": item.seed,
            "prompt_index": record.index,
            "sample": item.sample,
            "video": video_path.relative_to(self.output_dir).as_posix(),
            "layout": self.layout.name,
            "fps": self.fps,
            "crf": self.crf,
            "settings": settings,
            "settings_sha256": self.settings_fingerprint(pl_module),
            "adapter": getattr(pl_module, "adapter_info", None),
            "routing_weights": video.routing_weights,
            "corrected_steps": list(video.corrected_steps),
            "corrected_by_regime": video.corrected_by_regime,
            "record": {
                "labels": list(record.labels) if record.labels is not None else None,
                "dimension": record.dimension,
                "caption": record.caption,
                "extra": record.extra,
            },
            "timings": video.timings,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }

    # ------------------------------------------------------------------ indexes
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Rank 0 rebuilds the index files once every rank is done.

        ``teardown`` (not ``on_predict_end``) because Lightning skips the predict loop, and
        its end hooks, on a rank whose share is already complete; every rank reaches this.
        """
        if stage != "predict":
            return
        self.claims.release_all()
        trainer.strategy.barrier("pila_predict_indexes")
        if trainer.is_global_zero:
            for path in self.layout.write_indexes():
                log.info("wrote %s", path)
        rank = trainer.global_rank
        log.info("rank %d wrote %d videos under %s", rank, self.written, self.output_dir)
        folded = getattr(trainer.datamodule, "folded_duplicates", 0)
        if folded and trainer.is_global_zero:
            log.info(
                "%d duplicate prompt rows were folded into their first row (one prompt each)",
                folded,
            )
        for line in self.summary(unnamed=trainer.is_global_zero):
            log.warning(line)

    def summary(self, unnamed: bool = True) -> list[str]:
        """What this run left to others or could not name as the evaluator expects, one line each.

        Args:
            unnamed: include the prompts without an evaluator name (rank 0 reports them).
        """
        lines = []
        if self.held_elsewhere:
            lines.append(
                f"{self.held_elsewhere} videos were left to another run writing into "
                f"{self.output_dir}"
            )
        if not unnamed:
            return lines
        if self.layout.unnamed:
            lines.append(
                f"{len(self.layout.unnamed)} prompts got no video because the "
                f"{self.layout.name} layout cannot give them the evaluator's file name:"
            )
            lines += [f"  prompt {i}: {why}" for i, why in sorted(self.layout.unnamed.items())]
        if self.layout.renamed:
            lines.append(
                f"{len(self.layout.renamed)} prompts share the evaluator's name with an "
                "earlier prompt:"
            )
            lines += [f"  prompt {i}: {note}" for i, note in sorted(self.layout.renamed.items())]
        return lines


__all__ = ["CLAIM_TIMEOUT_S", "SIDECAR_FORMAT", "VideoPredictionWriter", "items_for_counts"]
