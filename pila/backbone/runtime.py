"""How the frozen backbone runs: CPU offloading, VAE tiling/slicing, regional compilation.

None of these change what the backbone computes (frames with an option equal frames
without it, up to compiler rounding); they trade memory or start-up time for speed. Each
is diffusers' own mechanism, applied to the pipeline inside a :class:`WanBackbone`:

- ``offload="model"``: ``WanPipeline.enable_model_cpu_offload``, one whole component
  (text encoder, transformer, transformer_2, VAE) on the device at a time;
- ``offload="sequential"``: ``enable_sequential_cpu_offload``, one leaf module at a time
  (least memory, slowest);
- ``offload="group"``: ``enable_group_offload`` (diffusers' group offloading), groups of
  ``group_blocks`` transformer blocks at a time, optionally prefetched on a CUDA stream;
- ``vae_tiling`` / ``vae_slicing``: ``AutoencoderKLWan.enable_tiling`` / ``enable_slicing``;
- :func:`compile_backbone`: ``ModelMixin.compile_repeated_blocks`` (regional compilation:
  one compiled ``WanTransformerBlock`` reused by all blocks).

With offloading the transformer's parameters report the CPU (or the meta device) while it
runs on the execution device (:func:`execution_device`); the adapter and every tensor the
caller makes go there.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

log = logging.getLogger(__name__)

OffloadMode = Literal["none", "model", "sequential", "group"]
OFFLOAD_MODES: tuple[str, ...] = ("none", "model", "sequential", "group")


@dataclass(frozen=True)
class MemoryConfig:
    """Memory options of generation (they never change the frames).

    Args:
        offload: ``"none"`` (everything on the device), ``"model"`` (one component at a
            time), ``"sequential"`` (one leaf module at a time) or ``"group"`` (groups of
            transformer blocks). [ours: "none"; ``benchmarks/results/memory.md`` lists
            what each needs]
        group_blocks: transformer blocks per group for ``offload="group"``. [ours: 1]
        group_use_stream: prefetch the next group on a CUDA stream (``offload="group"``,
            CUDA only; about one group more memory). [ours: False]
        vae_tiling: decode the video in overlapping spatial tiles (``enable_tiling``).
            [ours: False]
        vae_slicing: decode one video of a batch at a time (``enable_slicing``). [ours: False]
    """

    offload: OffloadMode = "none"
    group_blocks: int = 1
    group_use_stream: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False

    def __post_init__(self) -> None:
        if self.offload not in OFFLOAD_MODES:
            raise ValueError(
                f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {self.offload!r}"
            )
        if self.group_blocks < 1:
            raise ValueError(f"group_blocks must be at least 1, got {self.group_blocks}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def execution_device(pipeline: Any) -> torch.device:
    """Where the pipeline computes: the offload hooks' device, else its modules' device."""
    return torch.device(pipeline._execution_device)


def apply_memory_options(pipeline: Any, config: MemoryConfig, device: torch.device | str) -> None:
    """Apply ``config`` to a ``WanPipeline`` in place, computing on ``device``.

    ``offload="none"`` moves every component to ``device``; the others leave the weights
    on the CPU and install diffusers' hooks (which also accept ``device="cpu"``).
    """
    device = torch.device(device)
    if config.offload == "none":
        pipeline.to(device)
    elif config.offload == "model":
        pipeline.enable_model_cpu_offload(device=device)
    elif config.offload == "sequential":
        pipeline.enable_sequential_cpu_offload(device=device)
    else:
        use_stream = config.group_use_stream and device.type == "cuda"
        pipeline.enable_group_offload(
            onload_device=device,
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=config.group_blocks,
            use_stream=use_stream,
        )
    vae = pipeline.vae
    if config.vae_tiling:
        vae.enable_tiling()
    if config.vae_slicing:
        vae.enable_slicing()
    log.info("memory options %s on %s", config.to_json(), device)


def compile_backbone(transformers: list[nn.Module | None], **compile_kwargs: Any) -> float:
    """Compile each transformer's repeated blocks (``compile_repeated_blocks``).

    Compilation itself is lazy: the first forward compiles one ``WanTransformerBlock``
    graph that every block then reuses. Returns the seconds spent here (logged); the
    first forward's compile time is logged by :func:`log_first_call`.

    Args:
        transformers: the backbone's ``transformer`` and ``transformer_2`` (None skipped).
        **compile_kwargs: passed to ``torch.compile`` (e.g. ``backend="aot_eager"`` in tests).
    """
    start = time.perf_counter()
    for model in transformers:
        if model is not None:
            model.compile_repeated_blocks(**compile_kwargs)
            log_first_call(model, "compiled backbone blocks")
    seconds = time.perf_counter() - start
    log.info("regional compilation set up in %.2f s (blocks compile on the first forward)", seconds)
    return seconds


def log_first_call(model: nn.Module, what: str) -> None:
    """Log how long ``model``'s first forward takes (where a lazy compile happens)."""

    def pre(module: nn.Module, args: Any, kwargs: Any) -> None:
        module._pila_first_call = time.perf_counter()  # type: ignore[attr-defined]

    def post(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        seconds = time.perf_counter() - module._pila_first_call  # type: ignore[attr-defined]
        log.info(
            "%s: first forward of %s took %.1f s (compilation included)",
            what,
            type(module).__name__,
            seconds,
        )
        handles[0].remove()
        handles[1].remove()

    handles = [
        model.register_forward_pre_hook(pre, with_kwargs=True),
        model.register_forward_hook(post, with_kwargs=True),
    ]


__all__ = [
    "OFFLOAD_MODES",
    "MemoryConfig",
    "OffloadMode",
    "apply_memory_options",
    "compile_backbone",
    "execution_device",
]
