"""How a backbone's parts are loaded: which components, in which dtype, from where.

:func:`open_pipeline` finds the source (``"tiny"``, a shipped name, a folder or a hub id)
and loads the components asked for now; the :class:`ComponentLoader` it returns builds
the others when :class:`~pila.backbone.WanBackbone` first needs them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import WanPipeline

from pila.backbone.folders import WAN_FOLDER_LAYOUT, check_wan_folder, named_folder
from pila.io import is_hub_id

log = logging.getLogger(__name__)

COMPONENTS: tuple[str, ...] = ("transformer", "text_encoder", "vae")
"""What a backbone can hold: the frozen transformer (both experts on Wan 2.2-A14B), the text
encoder and the VAE. A backbone built with fewer loads the rest on first use."""


def resolve_dtype(
    dtype: str | torch.dtype, device: torch.device | str | None = None
) -> torch.dtype:
    """``"auto"`` → bf16 on CUDA, float32 elsewhere; names such as ``"bf16"`` → torch dtypes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if dtype == "auto":
        dev = torch.device(device) if device is not None else None
        on_cuda = dev.type == "cuda" if dev is not None else torch.cuda.is_available()
        return torch.bfloat16 if on_cuda else torch.float32
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(names)}")
    return names[dtype]


def component_dtypes(
    dtype: str | torch.dtype,
    vae_dtype: str | torch.dtype,
    device: torch.device | str | None = None,
) -> dict[str, torch.dtype]:
    """Per-component dtypes for ``WanPipeline.from_pretrained``: ``dtype`` everywhere but the VAE.

    Given at load time, they keep diffusers' float32-only submodules (norms, time
    embedding, RoPE) in float32.
    """
    target = resolve_dtype(dtype, device)
    return {
        "transformer": target,
        "transformer_2": target,
        "text_encoder": target,
        "vae": resolve_dtype(vae_dtype, device),
        "default": target,
    }


def check_components(components: Sequence[str]) -> tuple[str, ...]:
    """``components`` in :data:`COMPONENTS` order; an unknown name is a ``ValueError``."""
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or isinstance(components, str):
        raise ValueError(
            f"unknown backbone components {unknown or components!r}; "
            f"use a list of {', '.join(COMPONENTS)}"
        )
    return tuple(c for c in COMPONENTS if c in components)


class ComponentLoader:
    """Builds a ``WanPipeline`` holding some components of one backbone, the others ``None``.

    A folder or hub id goes through ``WanPipeline.from_pretrained`` with the left-out
    components passed as ``None`` (diffusers then neither reads nor downloads their
    weights); ``"tiny"`` builds the preset from its seed and drops the rest. Tokenizer,
    scheduler and ``model_index.json`` (Wan 2.2's ``boundary_ratio``) always come along.

    Args:
        source: a diffusers Wan folder, a hub id, or ``"tiny"``.
        dtypes: per-component dtypes (``transformer``, ``transformer_2``, ``text_encoder``,
            ``vae``, ``default``), as ``WanPipeline.from_pretrained`` takes them (None:
            float32 everywhere).
        seed: the tiny preset's seed.
        two_stage: the tiny preset's Wan 2.2 layout.
    """

    def __init__(
        self,
        source: str,
        dtypes: dict[str, torch.dtype] | None = None,
        seed: int = 0,
        two_stage: bool = False,
    ) -> None:
        self.source = source
        self.dtypes = dtypes
        self.seed = seed
        self.two_stage = two_stage

    def __call__(self, components: Sequence[str]) -> WanPipeline:
        # Loading must not move the caller's random streams: diffusers draws from the global
        # CPU generator while it builds a component (the lab world's folder does), and a
        # training run loads its backbone at its first step, which in a resumed run is a
        # different step than in the run it continues.
        with torch.random.fork_rng(devices=[]):
            return self._load(components)

    def _load(self, components: Sequence[str]) -> WanPipeline:
        left_out = {name: None for name in COMPONENTS if name not in components}
        if left_out.get("transformer", 1) is None:
            left_out["transformer_2"] = None
        if self.source != "tiny":
            dtype = self.dtypes or torch.float32
            return WanPipeline.from_pretrained(self.source, dtype=dtype, **left_out)
        from pila.backbone.tiny import build_tiny_pipeline

        pipeline = build_tiny_pipeline(seed=self.seed, two_stage=self.two_stage)
        for name in ("transformer", "transformer_2", "text_encoder", "vae"):
            module = getattr(pipeline, name, None)
            if name in left_out:
                pipeline.register_modules(**{name: None})
            elif (
                module is not None and self.dtypes is not None and module.dtype != self.dtypes[name]
            ):
                module.to(dtype=self.dtypes[name])
        return pipeline


def open_pipeline(
    name: str, dtypes: dict[str, torch.dtype], components: Sequence[str], *, seed: int = 0
) -> tuple[WanPipeline, ComponentLoader]:
    """The pipeline of ``name`` holding ``components``, and the loader of the others.

    Args:
        name: ``"tiny"`` (built from ``seed``), a name of a shipped or built folder
            (:func:`~pila.backbone.folders.named_folder`: ``lab``, ``lab-moe``), a
            diffusers Wan folder or a hub id.
        dtypes: per-component dtypes (:func:`component_dtypes`).
        components: what to load now (of :data:`COMPONENTS`).
        seed: the tiny preset's seed (ignored otherwise).

    Raises:
        FileNotFoundError: the folder is missing or incomplete, or the hub id cannot be
            loaded (with the fix).
    """
    components = check_components(components)
    if name == "tiny":
        loader = ComponentLoader("tiny", dtypes, seed=seed)
        return loader(components), loader
    path = named_folder(name) or Path(name).expanduser()
    if not path.exists() and is_hub_id(name):
        log.info("loading Wan backbone %s from the hub", name)
        loader = ComponentLoader(name, dtypes)
        try:
            return loader(components), loader
        except OSError as err:
            raise FileNotFoundError(
                f"could not load Wan backbone {name!r} from the hub ({err}). Without network "
                f"access, download it once and pass the local folder ({WAN_FOLDER_LAYOUT})."
            ) from err
    check_wan_folder(path)
    loader = ComponentLoader(str(path), dtypes)
    return loader(components), loader
