"""``pila.generate``: videos from prompts with diffusers' own Wan loop, corrected by a PILA adapter.

Legend: B batch (the videos of one pipeline call), C latent channels, T latent frames,
H, W latent height and width, F pixel frames, E experts (8).

:func:`generate_video` calls ``WanPipeline.__call__`` with the pipeline's scheduler
temporarily replaced by the correcting proxy (:mod:`pila.generation.proxy`), which applies
Eq. (10) on the guided velocity at the corrected steps. Everything else (text encoding,
latent noise, the Wan 2.2 transformer switch at ``boundary_ratio``, VAE decoding,
post-processing) is the pipeline's. Consequences:

- without an adapter, or with a freshly built one (its last layer is zero, so Δv = 0),
  the frames are exactly ``WanPipeline.__call__(prompt, …, generator=
  torch.Generator().manual_seed(seed), output_type="np").frames[0]``;
- steps before the first corrected step are untouched;
- on a Wan 2.2-A14B pipeline both regimes are corrected.

Each video has its own ``torch.Generator``, so it depends only on its prompt, its seed and
the settings (:class:`~pila.generation.settings.SamplingConfig`), never on the other prompts
of a call; :func:`generate_batch` runs several in one pipeline call, equal to one at a time
up to float rounding.

The adapter is conditioned on the parser's description (its pooled text embedding) and
labels (:mod:`pila.parser`; the rule-based parser by default). Its config's
``prompt_source="raw"`` and ``label_source="random"`` ablations are honoured.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from pila.adapter.condition import AdapterCondition, randomize_labels
from pila.adapter.config import AdapterConfig
from pila.adapter.loading import adapter_config, check_backbone_sizes, load_adapter
from pila.backbone import WanBackbone
from pila.backbone.folders import WAN22_REGIMES
from pila.backbone.runtime import MemoryConfig, apply_memory_options, execution_device
from pila.categories import labels_to_multihot
from pila.generation.proxy import (
    AdapterCorrection,
    ConditionalVelocityTap,
    CorrectingScheduler,
    StepClock,
    expert_record,
    patched_pipeline,
    scheduler_copy,
    top_k_override,
)
from pila.generation.settings import SamplingConfig, StepCallback, resolve_seeds
from pila.parser import ParsedPrompt, PromptParser, default_parser, parse_with_given


# ----------------------------------------------------------------------------- outputs
@dataclass
class GeneratedVideo:
    """One generated video and everything its sidecar records.

    Attributes:
        frames: (F, H, W, 3) float32 in [0, 1] (None once a writer has released them).
        prompt: the prompt that conditioned the generator.
        seed: the seed of its ``torch.Generator``.
        parsed: the parser's description and labels (None without an adapter).
        routing_weights: per-expert routing weight averaged over the corrected steps.
        corrected_steps: the 1-based steps the adapter actually corrected.
        corrected_by_regime: on a Wan 2.2 pipeline, the corrected steps by the regime of the
            transformer that ran them (``high_noise``: ``transformer``, ``low_noise``:
            ``transformer_2``, as observed during the call); None with one transformer or
            without an adapter.
        timings: seconds spent in text encoding, the backbone's denoising, the adapter,
            VAE decoding and in all (``text_encoding``, ``denoise_backbone``, ``adapter``,
            ``vae_decode``, ``total``); for a video of a batch (:func:`generate_batch`) the
            call's seconds divided by its size, which ``batch`` records.
    """

    frames: np.ndarray | None
    prompt: str
    seed: int
    parsed: ParsedPrompt | None = None
    routing_weights: dict[str, float] | None = None
    corrected_steps: tuple[int, ...] = ()
    corrected_by_regime: dict[str, list[int]] | None = None
    timings: dict[str, float | int] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckedAdapter:
    """An adapter checked against its backbone once per run, with its config read once.

    Build it with :func:`check_adapter` (or, for an adapter :func:`~pila.adapter.load_adapter`
    has already checked, from the adapter and ``adapter_config(adapter)``) and hand it to
    every :func:`generate_video` or :func:`generate_batch` call of the run.
    """

    module: nn.Module
    config: AdapterConfig


def check_adapter(adapter: nn.Module, backbone: WanBackbone) -> CheckedAdapter:
    """Read the adapter's config and refuse it when it was built for another backbone."""
    config = adapter_config(adapter)
    check_backbone_sizes(config, backbone)
    return CheckedAdapter(adapter, config)


def as_backbone(pipeline: Any) -> WanBackbone:
    """A :class:`WanBackbone` for a ``WanPipeline`` (its modules are frozen in place) or itself."""
    if isinstance(pipeline, WanBackbone):
        return pipeline
    from diffusers import WanPipeline

    if not isinstance(pipeline, WanPipeline):
        raise TypeError(
            "expected a diffusers WanPipeline or a pila WanBackbone, "
            f"got {type(pipeline).__name__}"
        )
    return WanBackbone(pipeline)


def adapter_condition(
    backbone: WanBackbone,
    adapter: CheckedAdapter,
    parsed: Sequence[ParsedPrompt],
    seeds: Sequence[int],
    config: SamplingConfig,
) -> AdapterCondition:
    """The adapter's condition for B videos: pooled text (B, D) and labels (B, E).

    The text is the parser's description, or the raw prompt under the ``prompt_source="raw"``
    ablation; ``label_source="random"`` replaces video i's labels with random ones drawn
    from ``seeds[i]`` (the same draw whatever else is in the batch).
    """
    acfg = adapter.config
    raw = getattr(acfg, "prompt_source", "refined") == "raw"
    texts = [p.prompt if raw else p.refined_prompt for p in parsed]
    pooled = backbone.encode_prompt(texts, max_sequence_length=config.max_sequence_length).pooled
    labels = torch.stack([labels_to_multihot(list(p.labels)) for p in parsed])  # (B, E)
    if getattr(acfg, "label_source", "parsed") == "random":
        labels = torch.cat([
            randomize_labels(row[None], generator=torch.Generator().manual_seed(seed))
            for row, seed in zip(labels, seeds, strict=True)
        ])  # fmt: skip
    param = next(adapter.module.parameters())
    return AdapterCondition(
        pooled_text=pooled.to(param.device, param.dtype),
        labels=labels.to(param.device, param.dtype),
        cond_scale=config.cond_scale,
    )


def generate_video(
    pipeline: Any,
    prompt: str,
    *,
    seed: int,
    config: SamplingConfig | None = None,
    adapter: nn.Module | CheckedAdapter | None = None,
    parsed: ParsedPrompt | None = None,
    parser: PromptParser | None = None,
    on_step: StepCallback | None = None,
    progress: bool = False,
) -> GeneratedVideo:
    """Generate one video with the real ``WanPipeline`` loop, corrected by ``adapter``.

    Args:
        pipeline: a ``WanPipeline`` or :class:`WanBackbone`.
        prompt: the prompt (conditions the generator unchanged).
        seed: seed of the noise generator (``torch.Generator().manual_seed(seed)``).
        config: the settings (default :class:`SamplingConfig`).
        adapter: a PILA adapter (checked against the backbone on every call), the
            :class:`CheckedAdapter` of a run (checked once, by :func:`check_adapter`), or
            None for the uncorrected baseline.
        parsed: description and labels for the adapter (default: ``parser``'s answer).
        parser: used when ``parsed`` is None and an adapter is given (default: the
            rule-based parser).
        on_step: called after every denoising step with the new latents.
        progress: show the pipeline's own progress bar.

    Returns:
        The :class:`GeneratedVideo`.
    """
    return generate_batch(
        pipeline,
        [prompt],
        seeds=[seed],
        config=config,
        adapter=adapter,
        parsed=None if parsed is None else [parsed],
        parser=parser,
        on_step=on_step,
        progress=progress,
    )[0]


def generate_batch(
    pipeline: Any,
    prompts: Sequence[str],
    *,
    seeds: Sequence[int],
    config: SamplingConfig | None = None,
    adapter: nn.Module | CheckedAdapter | None = None,
    parsed: Sequence[ParsedPrompt] | None = None,
    parser: PromptParser | None = None,
    on_step: StepCallback | None = None,
    progress: bool = False,
) -> list[GeneratedVideo]:
    """Generate B videos in one ``WanPipeline`` call (batch B), each from its own generator.

    The pipeline draws video i's noise from ``torch.Generator().manual_seed(seeds[i])``
    alone, the adapter conditions it on its own description and labels, and guidance,
    scheduler and correction act per sample; so video i is :func:`generate_video`'s for
    prompt i and seed i up to float rounding (batched matrix products sum in another order:
    measured ≤ 1e-5 on [0, 1] frames, ``tests/generation/test_generation_sampling.py``).
    A batch is worth it where one video leaves the device idle (small models, CPUs): on the
    lab world on two free CPU threads four videos in one call take 0.58 of four calls
    (``benchmarks/results/lab_predict_batch.md``).

    Args:
        pipeline: a ``WanPipeline`` or :class:`WanBackbone`.
        prompts: B prompts.
        seeds: B seeds, one per prompt.
        config, adapter, parser, on_step, progress: as :func:`generate_video`'s; ``on_step``
            sees the batch's latents (B, C, T, H, W).
        parsed: B descriptions and labels for the adapter (default: ``parser``'s answers).

    Returns:
        B :class:`GeneratedVideo` s, in the prompts' order; their ``timings`` are the
        call's divided by B (``batch``: B).
    """
    prompts = list(prompts)
    batch = len(prompts)
    if batch == 0 or len(seeds) != batch or (parsed is not None and len(parsed) != batch):
        raise ValueError(
            f"generate_batch needs one seed (and one parsed prompt, when given) per prompt: got "
            f"{batch} prompts, {len(seeds)} seeds"
            + ("" if parsed is None else f", {len(parsed)} parsed prompts")
        )
    config = config or SamplingConfig()
    backbone = as_backbone(pipeline)
    pipe = backbone.pipeline
    # With offloading the transformer's parameters report the CPU (or meta); the pipeline
    # computes on its execution device, and so does the adapter.
    device = execution_device(pipe)
    clock = StepClock(device=device)
    clock.start = clock.now()
    correction: AdapterCorrection | None = None
    tap: ConditionalVelocityTap | None = None
    text_seconds = 0.0
    checked = check_adapter(adapter, backbone) if isinstance(adapter, nn.Module) else adapter
    parsed_list: list[ParsedPrompt | None] = [None] * batch
    if checked is not None:
        if next(checked.module.parameters()).device != device:
            checked.module.to(device)
        if parsed is None:
            chosen = parser or default_parser()
            parsed = [chosen.parse(prompt) for prompt in prompts]
        parsed_list = list(parsed)
        cond = adapter_condition(backbone, checked, parsed, seeds, config)
        text_seconds = clock.now() - clock.start
        if config.adapter_velocity == "conditional":
            tap = ConditionalVelocityTap([pipe.transformer, getattr(pipe, "transformer_2", None)])
        correction = AdapterCorrection(checked.module, cond, config.steps, clock, tap=tap)
    scheduler = CorrectingScheduler(
        scheduler_copy(pipe.scheduler, config.shift), correction, clock, on_step=on_step
    )
    call_start = clock.now()
    with contextlib.ExitStack() as stack:
        stack.enter_context(patched_pipeline(pipe, scheduler, progress))
        if checked is not None:
            stack.enter_context(top_k_override(checked.module, checked.config, config.top_k))
        if tap is not None:
            stack.enter_context(tap)
        ran = stack.enter_context(expert_record(pipe, scheduler))
        result = pipe(
            prompt=prompts,
            negative_prompt=config.negative_prompt,
            height=config.height,
            width=config.width,
            num_frames=config.num_frames,
            num_inference_steps=config.num_inference_steps,
            guidance_scale=config.guidance_scale,
            guidance_scale_2=config.guidance_scale_2,
            generator=[torch.Generator().manual_seed(seed) for seed in seeds],
            output_type="np",
            max_sequence_length=config.max_sequence_length,
        )
    end = clock.now()
    if len(scheduler.timesteps) != config.num_inference_steps:
        raise RuntimeError(
            f"the scheduler ran {len(scheduler.timesteps)} steps for num_inference_steps="
            f"{config.num_inference_steps}; correction_steps assume one scheduler step per "
            "denoising step"
        )
    denoise_start = clock.denoise_start if clock.denoise_start is not None else call_start
    denoise_end = clock.denoise_end if clock.denoise_end is not None else end
    timings = {
        "text_encoding": text_seconds + (denoise_start - call_start),
        "denoise_backbone": (denoise_end - denoise_start) - clock.adapter_seconds,
        "adapter": clock.adapter_seconds,
        "vae_decode": end - denoise_end,
        "total": end - clock.start,
    }
    per_video = {name: seconds / batch for name, seconds in timings.items()}
    if batch > 1:
        per_video["batch"] = batch
    applied = tuple(correction.applied) if correction is not None else ()
    by_regime = None
    if ran and correction is not None:  # Wan 2.2: which expert ran each corrected step
        by_regime = {regime: [s for s in applied if ran.get(s) == name]
                     for name, regime in WAN22_REGIMES.items()}  # fmt: skip
    return [
        GeneratedVideo(
            frames=np.asarray(result.frames[i], dtype=np.float32),  # (F, H, W, 3)
            prompt=prompt,
            seed=seed,
            parsed=parsed_list[i],
            routing_weights=correction.mean_routing(i) if correction is not None else None,
            corrected_steps=applied,
            corrected_by_regime=by_regime,
            timings=dict(per_video),
        )
        for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True))
    ]


def generate(
    pipeline: Any,
    prompts: str | Sequence[str],
    *,
    adapter: nn.Module | str | os.PathLike | None = None,
    seed: int | Sequence[int] = 0,
    config: SamplingConfig | None = None,
    parser: PromptParser | None = None,
    labels: Sequence[Sequence[str]] | None = None,
    refined_prompts: Sequence[str] | None = None,
    progress: bool = False,
    memory: MemoryConfig | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 1,
    **settings: Any,
) -> list[np.ndarray]:
    """Generate one video per prompt, corrected by a PILA adapter (or not).

    With ``adapter=None``, or a freshly built adapter, prompt i's frames equal
    ``WanPipeline.__call__(prompts[i], …, generator=torch.Generator().manual_seed(seeds[i]),
    output_type="np").frames[0]`` for the same arguments.

    Args:
        pipeline: a diffusers ``WanPipeline`` (Wan 2.1, or Wan 2.2 with ``transformer_2``)
            or a :class:`WanBackbone`.
        prompts: one prompt or a list.
        adapter: a PILA adapter, an adapter folder or hub id (loaded with
            :func:`pila.adapter.load_adapter`), or None for the uncorrected baseline.
        seed: an int (prompt i gets ``seed + i``) or one seed per prompt.
        config: the generation settings (default: :class:`SamplingConfig`'s, the paper's).
        parser: prompt parser for the adapter's description and labels (default: rules).
        labels: per-prompt category names, overriding the parser's.
        refined_prompts: per-prompt descriptions, overriding the parser's.
        progress: show the pipeline's progress bar.
        memory: offloading and VAE tiling/slicing (:class:`pila.backbone.runtime.MemoryConfig`),
            applied to the pipeline in place before the first video; they never change the
            frames. None leaves the pipeline as it is.
        device: where the pipeline computes under ``memory`` (default: CUDA when
            available, else the CPU); ignored without ``memory``.
        batch_size: videos per pipeline call (:func:`generate_batch`; ours: 1, which gives
            the frames above exactly; more are equal up to float rounding and faster where
            one video leaves the device idle).
        **settings: fields of :class:`SamplingConfig` overriding ``config``'s, as keywords:
            ``num_inference_steps``, ``guidance_scale``, ``guidance_scale_2``,
            ``negative_prompt``, ``height``, ``width``, ``num_frames``,
            ``correction_steps`` (``(41, 50)``, ``"41-50"`` or step numbers), ``top_k``,
            ``shift``, ``max_sequence_length``, ``cond_scale``.

    Returns:
        One float32 array (F, H, W, 3) in [0, 1] per prompt.

    Raises:
        TypeError: a keyword that is no field of :class:`SamplingConfig`.
        ValueError: a bad setting, seed list or per-prompt list (named).
    """
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list:
        raise ValueError("prompts is empty")
    seeds = resolve_seeds(seed, len(prompt_list))
    for name, given in (("labels", labels), ("refined_prompts", refined_prompts)):
        if given is not None and len(given) != len(prompt_list):
            raise ValueError(f"got {len(given)} {name} for {len(prompt_list)} prompts")
    config = (config or SamplingConfig()).replace(**settings)
    backbone = as_backbone(pipeline)
    if memory is not None:
        target = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        apply_memory_options(backbone.pipeline, memory, target)
    if isinstance(adapter, (str, os.PathLike)):
        adapter = load_adapter(adapter, backbone, device=execution_device(backbone.pipeline))
    checked = check_adapter(adapter, backbone) if adapter is not None else None
    if checked is not None:
        parser = parser or default_parser()
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    parsed = None
    if checked is not None:
        parsed = [
            parse_with_given(
                parser,
                prompt,
                labels=labels[i] if labels is not None else None,
                refined_prompt=refined_prompts[i] if refined_prompts is not None else None,
            )
            for i, prompt in enumerate(prompt_list)
        ]
    videos = []
    for start in range(0, len(prompt_list), batch_size):
        part = slice(start, start + batch_size)
        generated = generate_batch(
            backbone,
            prompt_list[part],
            seeds=seeds[part],
            config=config,
            adapter=checked,
            parsed=None if parsed is None else parsed[part],
            parser=parser,
            progress=progress,
        )
        videos.extend(video.frames for video in generated)
    return videos


__all__ = [
    "CheckedAdapter",
    "GeneratedVideo",
    "adapter_condition",
    "as_backbone",
    "check_adapter",
    "generate",
    "generate_batch",
    "generate_video",
]
