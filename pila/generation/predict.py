"""``pila predict``: the LightningModule that batch-generates videos with a PILA adapter.

One predict step generates the videos of one batch of
:class:`~pila.generation.prompts.PredictItem` s (one per (prompt, sample), each with its
own seed) in one call of :func:`pila.generation.sampling.generate_batch`, and returns
:class:`PredictionResult` s for the writer callback
(:class:`pila.generation.writer.VideoPredictionWriter`), which writes the mp4s, the
sidecars and the benchmark layout.

The frozen backbone and the adapter are loaded in ``setup()`` straight onto this rank's
device, and are kept outside the module's parameter tree: prediction never trains, so
there is nothing for Lightning to wrap, cast or broadcast between ranks. Every bad input
(backbone folder, adapter folder that does not match the backbone, frame size) raises in
``setup()``, before the first video.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from pila.adapter.loading import adapter_config, adapter_identity, load_adapter
from pila.adapter.pretrained import resolve_adapter_folder
from pila.backbone import WanBackbone, resolve_dtype
from pila.backbone.runtime import (
    MemoryConfig,
    apply_memory_options,
    compile_backbone,
    execution_device,
)
from pila.generation.records import PredictItem
from pila.generation.sampling import CheckedAdapter, GeneratedVideo, generate_batch
from pila.generation.settings import SamplingConfig
from pila.parser import ParsedPrompt, PromptParser, default_parser, parse_with_given

log = logging.getLogger(__name__)


@dataclass
class PredictionResult:
    """One generated video and the work item it answers."""

    item: PredictItem
    video: GeneratedVideo


class PILAPredictModule(pl.LightningModule):
    """Generate videos for prompts with a frozen Wan backbone and, optionally, a PILA adapter.

    In YAML the generation settings are one block, the fields of
    :class:`~pila.generation.settings.SamplingConfig`::

        model:
          class_path: pila.generation.PILAPredictModule
          init_args:
            backbone: checkpoints/Wan2.1-T2V-1.3B-Diffusers
            adapter: checkpoints/pila-adapter
            sampling: {num_inference_steps: 50, correction_steps: "41-50"}
            memory: {offload: model, vae_tiling: true}   # Wan 2.2-A14B on a 24 GB card

    Args:
        backbone: a diffusers-format Wan folder (Wan 2.1, or Wan 2.2-A14B with
            ``transformer_2``), a hub id, or ``"tiny"`` for the embedded CPU preset.
        adapter: a folder written by ``PILAAdapter.save_pretrained`` / ``pila export``, or
            a hub id; None generates the uncorrected baseline.
        dtype: backbone dtype; ``"auto"`` is bf16 on CUDA, float32 on CPU.
        sampling: steps, guidance, frame size, corrected steps, top-k, shift, text length
            and condition scale (None: the defaults of ``SamplingConfig``, the paper's).
        parser: prompt parser for the adapter's description and labels (None: the
            rule-based parser; ``pila.parser.LLMPromptParser`` for a local LLM).
        backbone_seed: seed of the ``"tiny"`` preset's random weights.
        memory: CPU offloading (``none``, ``model``, ``sequential``, ``group``) and VAE
            tiling/slicing (:class:`~pila.backbone.runtime.MemoryConfig`; None: everything
            on the device, the fastest). They never change the frames.
        compile_backbone: compile the transformer's repeated blocks
            (``compile_repeated_blocks``, diffusers' regional compilation); the first
            step pays the compile time (logged). [ours: False]
        transformer_lora: a LoRA folder of a fine-tuned transformer (``pila export`` of a
            :class:`~pila.stages.finetune.WorldFinetune` checkpoint, the lab's capacity
            control), fused into the backbone's transformer before generation; the videos
            are then made exactly as the baseline's, with the fine-tuned weights. Not
            together with ``adapter``.
    """

    def __init__(
        self,
        backbone: str = "tiny",
        adapter: str | None = None,
        dtype: str = "auto",
        sampling: SamplingConfig | None = None,
        parser: PromptParser | None = None,
        backbone_seed: int = 0,
        memory: MemoryConfig | None = None,
        compile_backbone: bool = False,
        transformer_lora: str | None = None,
    ) -> None:
        super().__init__()
        if transformer_lora is not None and adapter is not None:
            raise ValueError(
                "transformer_lora (a fine-tuned world) and adapter are two different "
                "corrections of the backbone; give one of them"
            )
        self.transformer_lora = transformer_lora
        self.backbone_source = backbone
        self.adapter_source = adapter
        self.dtype_name = dtype
        self.backbone_seed = backbone_seed
        self.sampling = sampling if sampling is not None else SamplingConfig()
        self.parser = parser
        self.memory = memory if memory is not None else MemoryConfig()
        self.compile_backbone = compile_backbone
        # Loaded in setup(); a plain dict keeps them out of the module tree (see the module
        # docstring).
        self._frozen: dict[str, nn.Module] = {}
        self._adapter_identity: dict[str, Any] | None = None
        self._checked: CheckedAdapter | None = None

    # ------------------------------------------------------------------ loading
    @property
    def backbone(self) -> WanBackbone:
        if "backbone" not in self._frozen:
            raise RuntimeError(
                "the backbone is loaded in setup(); call module.setup('predict') first"
            )
        return self._frozen["backbone"]  # type: ignore[return-value]

    @property
    def adapter(self) -> nn.Module | None:
        return self._frozen.get("adapter")

    def _target_device(self) -> torch.device:
        trainer = self._trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:
        """Load the backbone, the adapter (checked against it) and the parser's model."""
        if "backbone" in self._frozen:
            return
        device = self._target_device()
        offloaded = self.memory.offload != "none"
        backbone = WanBackbone.from_pretrained(
            self.backbone_source,
            dtype=resolve_dtype(self.dtype_name, device),
            device=None if offloaded else device,  # offloading keeps the weights on the CPU
            seed=self.backbone_seed,
        )
        if self.transformer_lora is not None:
            from pila.stages.finetune import load_transformer_lora

            load_transformer_lora(backbone, self.transformer_lora)  # fused: the baseline's path
        apply_memory_options(backbone.pipeline, self.memory, device)
        if self.compile_backbone:
            compile_backbone([backbone.transformer, backbone.transformer_2])
        device = execution_device(backbone.pipeline)
        backbone.latent_shape(self.sampling.num_frames, self.sampling.height, self.sampling.width)
        if self.sampling.guidance_scale_2 is not None and backbone.boundary_ratio is None:
            raise ValueError(
                f"guidance_scale_2 is set but the backbone {self.backbone_source!r} has one "
                "transformer (Wan 2.1); leave guidance_scale_2 unset or load a Wan 2.2-A14B folder"
            )
        self._frozen["backbone"] = backbone
        if self.adapter_source is not None:
            folder = resolve_adapter_folder(self.adapter_source)
            adapter = load_adapter(folder, backbone, device=device)  # checked against the backbone
            self._frozen["adapter"] = adapter
            self._checked = CheckedAdapter(adapter, adapter_config(adapter))  # once per run
            self._adapter_identity = adapter_identity(adapter, folder)
            self.parser = self.parser or default_parser()
            self.parser.load(str(device))
        log.info(
            "backbone %s (%s), adapter %s, %d steps, %d×%d×%d",
            self.backbone_source,
            "Wan 2.2, two transformers" if backbone.boundary_ratio is not None else "Wan 2.1",
            self.adapter_source or "none (baseline)",
            self.sampling.num_inference_steps,
            self.sampling.num_frames,
            self.sampling.height,
            self.sampling.width,
        )

    # ------------------------------------------------------------------ settings
    def generation_settings(self) -> dict[str, Any]:
        """Every setting that shaped the videos, for the sidecars."""
        backbone = self.backbone
        scheduler = backbone.scheduler
        shift = self.sampling.shift
        if shift is None:  # the scheduler's own
            shift = scheduler.config.get("flow_shift", scheduler.config.get("shift"))
        parses = self.parser is not None and self.adapter is not None
        return {
            **self.sampling.to_json(),
            "shift_used": shift,
            "backbone": self.backbone_source,
            "backbone_dtype": str(backbone.dtype).removeprefix("torch."),
            "boundary_ratio": backbone.boundary_ratio,
            "two_stage": backbone.transformer_2 is not None,
            "scheduler": type(scheduler).__name__,
            "parser": self.parser.describe() if parses else None,
            "transformer_lora": self.transformer_lora,
        }

    @property
    def adapter_info(self) -> dict[str, Any] | None:
        return self._adapter_identity

    # ------------------------------------------------------------------ predict
    def parsed_prompt(self, item: PredictItem) -> ParsedPrompt | None:
        """The adapter's description and labels: the prompt file's, else the parser's."""
        if self.adapter is None:
            return None
        record = item.record
        return parse_with_given(
            self.parser, record.prompt, labels=record.labels, refined_prompt=record.refined_prompt
        )

    def predict_step(self, batch: list[PredictItem], batch_idx: int = 0) -> list[PredictionResult]:
        """Generate the batch's items in one pipeline call, each with its own seed.

        The writer may have dropped every item (made or held by another run): nothing to do.
        """
        if not batch:
            return []
        parsed = [self.parsed_prompt(item) for item in batch]
        videos = generate_batch(
            self.backbone,
            [item.record.prompt for item in batch],
            seeds=[item.seed for item in batch],
            config=self.sampling,
            adapter=self._checked,
            parsed=None if self._checked is None else parsed,
        )
        return [
            PredictionResult(item=item, video=video)
            for item, video in zip(batch, videos, strict=True)
        ]

    def configure_optimizers(self) -> None:
        """Prediction only: nothing trains."""
        return None


__all__ = ["PILAPredictModule", "PredictionResult"]
