"""The frozen Wan generator: a diffusers ``WanPipeline`` wrapped for the adapter's needs.

Shapes: B batch, L text tokens, D text width, F pixel frames, C latent channels (16),
T latent frames (``(F − 1)/4 + 1``), H, W latent height and width (pixels / 8).

:class:`WanBackbone` never trains: every parameter has ``requires_grad=False``, it stays
in eval mode whatever ``train()`` is called with, and its forward passes run under
``torch.no_grad()``. It holds the pipeline's components as submodules so that ``.to()``
moves them; the training stages keep it out of their checkpoints.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import WanPipeline
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from torch import Tensor, nn

from pila.backbone.folders import named_folder
from pila.backbone.loading import (
    COMPONENTS,
    ComponentLoader,
    check_components,
    component_dtypes,
    open_pipeline,
)
from pila.flow import sigma_to_timestep
from pila.io import atomic_folder

log = logging.getLogger(__name__)

DEFAULT_MAX_SEQUENCE_LENGTH = 512

TRAINING_COMPONENTS: tuple[str, ...] = ("transformer",)
"""What a training stage calls when it reads a cache: the transformer(s) alone."""
ENCODING_COMPONENTS: tuple[str, ...] = ("text_encoder", "vae")
"""What ``pila prepare`` and on-the-fly encoding call: the text encoder and the VAE."""


@dataclass
class PromptEmbedding:
    """Text-encoder output for a batch of prompts.

    Attributes:
        embeds: (B, L, D) last hidden states, zero past each prompt's valid tokens (as
            ``WanPipeline`` feeds them to the transformer).
        mask: (B, L) bool, True on valid tokens.
        pooled: (B, D) mean of the valid tokens' embeddings.
    """

    embeds: Tensor
    mask: Tensor
    pooled: Tensor


class WanBackbone(nn.Module):
    """A frozen Wan 2.1 (one transformer) or Wan 2.2-A14B (two, split at a boundary) generator.

    A component the pipeline lacks (``None``: left out by ``components``) is loaded on its
    first use (:meth:`load_component`) from ``loader``, onto the device the backbone was
    moved to.

    Args:
        pipeline: a diffusers ``WanPipeline``; its modules are frozen in place.
        source: where it came from (a folder, a hub id or ``"tiny"``), recorded in outputs.
        loader: builds a ``WanPipeline`` holding the named components only (the others
            ``None``); None: the missing components cannot be loaded.
    """

    def __init__(
        self,
        pipeline: WanPipeline,
        source: str = "in-memory",
        loader: ComponentLoader | None = None,
    ) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.source = source
        self._loader = loader
        self._home: torch.device | None = None  # where `.to()` last put the backbone
        # Registered as submodules so `.to()` and `.named_parameters()` see them.
        self.transformer = pipeline.transformer
        self.transformer_2 = getattr(pipeline, "transformer_2", None)
        self.vae = pipeline.vae
        self.text_encoder = pipeline.text_encoder
        self.requires_grad_(False)
        super().train(False)

    # ------------------------------------------------------------ components
    @property
    def loaded_components(self) -> tuple[str, ...]:
        """The components held now (of :data:`COMPONENTS`)."""
        return tuple(name for name in COMPONENTS if getattr(self, name) is not None)

    def load_component(self, name: str) -> nn.Module:
        """The component ``name`` (of :data:`COMPONENTS`), loaded now if it was left out.

        ``"transformer"`` loads Wan 2.2's ``transformer_2`` with it. The new modules are
        frozen, in eval mode, and on the backbone's device.
        """
        if name not in COMPONENTS:
            raise ValueError(
                f"unknown backbone component {name!r}; use one of {', '.join(COMPONENTS)}"
            )
        module = getattr(self, name)
        if module is not None:
            return module
        if self._loader is None:
            raise RuntimeError(
                f"backbone {self.source!r} was built without its {name} and has no loader for it"
            )
        log.info("loading the %s of backbone %s on first use", name, self.source)
        device = self.device
        loaded = self._loader((name,))
        names = ("transformer", "transformer_2") if name == "transformer" else (name,)
        for key in names:
            part = getattr(loaded, key, None)
            if part is None:
                continue
            part.requires_grad_(False).eval().to(device)
            self.pipeline.register_modules(**{key: part})
            setattr(self, key, part)
        if name == "vae":
            pipe = self.pipeline
            pipe.vae_scale_factor_temporal = int(self.vae.config.scale_factor_temporal)
            pipe.vae_scale_factor_spatial = int(self.vae.config.scale_factor_spatial)
            processor = type(pipe.video_processor)
            pipe.video_processor = processor(vae_scale_factor=pipe.vae_scale_factor_spatial)
        return getattr(self, name)

    def to(self, *args, **kwargs) -> WanBackbone:
        """``nn.Module.to``, remembering the device for components loaded later."""
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None:
            self._home = torch.device(device)
        return super().to(*args, **kwargs)

    # ----------------------------------------------------------------- construction
    @classmethod
    def tiny(
        cls, seed: int = 0, two_stage: bool = False, components: Sequence[str] = COMPONENTS
    ) -> WanBackbone:
        """The embedded tiny preset (see :mod:`pila.backbone.tiny`); nothing is downloaded.

        ``components`` left out are built (from the same seed) on first use.
        """
        loader = ComponentLoader("tiny", seed=seed, two_stage=two_stage)
        return cls(loader(check_components(components)), source="tiny", loader=loader)

    @staticmethod
    def named_folder(name: str) -> Path | None:
        """The folder a shipped backbone name stands for (``"lab"``: the lab world;
        ``"lab-moe"``: its two-expert sibling, built on first use), else None."""
        return named_folder(name)

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        *,
        dtype: str | torch.dtype = "auto",
        vae_dtype: str | torch.dtype = "float32",
        device: str | torch.device | None = None,
        seed: int = 0,
        components: Sequence[str] = COMPONENTS,
    ) -> WanBackbone:
        """Load a diffusers-format Wan folder, a hub id, ``"tiny"`` or ``"lab"``.

        Args:
            path_or_id: local folder, hub id (needs network on first use), ``"tiny"`` (the
                embedded random preset) or ``"lab"`` (the lab world shipped in the package,
                :mod:`pila.lab.world`).
            dtype: transformer and text-encoder dtype; ``"auto"`` is bf16 on CUDA, else float32.
            vae_dtype: the VAE's dtype (Wan's reference code keeps it in float32).
            device: where to put the modules (default: stay on CPU).
            seed: seed of the tiny preset (ignored otherwise).
            components: what to load now (of :data:`COMPONENTS`; training from a cache
                needs :data:`TRAINING_COMPONENTS` only); the rest load on first use. A hub
                download fetches only these components' weights.
        """
        name = os.fspath(path_or_id)
        dtypes = component_dtypes(dtype, vae_dtype, device)
        pipeline, loader = open_pipeline(name, dtypes, components, seed=seed)
        backbone = cls(pipeline, source=name, loader=loader)
        if device is not None:
            backbone.to(device)
        return backbone

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write the pipeline as a diffusers folder (``WanPipeline.save_pretrained``), every
        component included (those left out are loaded first); the folder replaces ``path``
        whole, its files readable as the umask allows (:func:`pila.io.atomic_folder`)."""
        if self._loader is not None:
            for name in COMPONENTS:
                self.load_component(name)
        with atomic_folder(path) as folder:
            self.pipeline.save_pretrained(os.fspath(folder))

    # ------------------------------------------------------------------- freezing
    def train(self, mode: bool = True) -> WanBackbone:
        """The backbone stays in eval mode: dropout and friends never switch on."""
        return super().train(False)

    # ----------------------------------------------------------------- properties
    @property
    def boundary_ratio(self) -> float | None:
        return self.pipeline.config.get("boundary_ratio")

    @property
    def latent_channels(self) -> int:
        if self.transformer is not None:
            return int(self.transformer.config.in_channels)
        return int(self.load_component("vae").config.z_dim)

    @property
    def text_dim(self) -> int:
        """D, the text encoder's width (the transformer's ``text_dim`` when it is loaded alone)."""
        if self.text_encoder is None and self.transformer is not None:
            return int(self.transformer.config.text_dim)
        return int(self.load_component("text_encoder").config.d_model)

    @property
    def vae_scale_factor_temporal(self) -> int:
        return int(self.load_component("vae").config.scale_factor_temporal)

    @property
    def vae_scale_factor_spatial(self) -> int:
        return int(self.load_component("vae").config.scale_factor_spatial)

    @property
    def tokenizer(self):
        return self.pipeline.tokenizer

    @property
    def scheduler(self):
        return self.pipeline.scheduler

    @property
    def device(self) -> torch.device:
        """The device of the loaded components (the last ``.to()``'s when none is loaded)."""
        first = next(self.parameters(), None)
        if first is not None:
            return first.device
        return self._home or torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return next(self.load_component("transformer").parameters()).dtype

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T, H, W) of the latent for ``num_frames`` frames of ``height × width`` pixels."""
        ft, fs = self.vae_scale_factor_temporal, self.vae_scale_factor_spatial
        if (num_frames - 1) % ft or height % fs or width % fs:
            raise ValueError(
                f"Wan needs num_frames = {ft}·k + 1 and height, width divisible by {fs}; "
                f"got {num_frames} × {height} × {width}"
            )
        return self.latent_channels, (num_frames - 1) // ft + 1, height // fs, width // fs

    # ---------------------------------------------------------------------- text
    @torch.no_grad()
    def encode_prompt(
        self, prompts: list[str], max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH
    ) -> PromptEmbedding:
        """Encode prompts exactly as ``WanPipeline`` does, plus the mask and a pooled vector.

        Args:
            prompts: B strings.
            max_sequence_length: L, the padded token length (the pipeline's default is 512).

        Returns:
            :class:`PromptEmbedding` with embeds (B, L, D), mask (B, L), pooled (B, D).
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        cleaned = [prompt_clean(p) for p in prompts]
        tokens = self.tokenizer(
            cleaned,
            padding="max_length",
            max_length=max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        # loaded on first use when the backbone was built without it
        self.load_component("text_encoder")
        # The pipeline's execution device: with CPU offloading the encoder's parameters report
        # the CPU (or meta) while its hooks run it on the accelerator.
        device = torch.device(self.pipeline._execution_device)
        ids = tokens.input_ids.to(device)
        mask = tokens.attention_mask.to(device).gt(0)  # (B, L)
        hidden = self.text_encoder(ids, mask.long()).last_hidden_state  # (B, L, D)
        hidden = hidden * mask.unsqueeze(-1).to(hidden.dtype)
        counts = mask.sum(dim=1, keepdim=True).clamp_min(1).to(hidden.dtype)  # (B, 1)
        pooled = hidden.sum(dim=1) / counts  # (B, D)
        return PromptEmbedding(embeds=hidden, mask=mask, pooled=pooled)

    # ----------------------------------------------------------------------- VAE
    def _latent_stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.load_component("vae").config
        shape = (1, cfg.z_dim, 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean, device=like.device, dtype=like.dtype).view(shape)
        std = torch.tensor(cfg.latents_std, device=like.device, dtype=like.dtype).view(shape)
        return mean, std

    @torch.no_grad()
    def encode_video(
        self, video: Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        """Pixels → normalised latents, ``z = (μ − latents_mean) / latents_std``.

        Args:
            video: (B, 3, F, H_px, W_px) in [-1, 1].
            sample: draw from the posterior instead of taking its mean.
            generator: RNG for ``sample=True``.

        Returns:
            (B, C, T, H, W) float32.
        """
        vae_param = next(self.load_component("vae").parameters())
        dist = self.vae.encode(video.to(vae_param.device, vae_param.dtype)).latent_dist
        mu = dist.sample(generator) if sample else dist.mode()
        mean, std = self._latent_stats(mu)
        return ((mu - mean) / std).float()

    @torch.no_grad()
    def decode_latents(self, latents: Tensor) -> Tensor:
        """Normalised latents (B, C, T, H, W) → pixels (B, 3, F, H_px, W_px) in [-1, 1]."""
        vae_param = next(self.load_component("vae").parameters())
        z = latents.to(vae_param.device, vae_param.dtype)
        mean, std = self._latent_stats(z)
        video = self.vae.decode(z * std + mean, return_dict=False)[0]
        return video.clamp(-1.0, 1.0).float()

    # ------------------------------------------------------------------ velocity
    def select_transformer(self, timestep: float | Tensor) -> nn.Module:
        """Diffusers' rule: ``transformer`` for t ≥ boundary_ratio·1000 (or always, for Wan 2.1)."""
        self.load_component("transformer")
        return self.transformer if self.uses_first_transformer(timestep) else self.transformer_2

    def uses_first_transformer(self, timestep: float | Tensor) -> bool | Tensor:
        """True where ``transformer`` (the high-noise expert) handles ``timestep``."""
        ratio = self.boundary_ratio
        if ratio is None or self.transformer_2 is None:
            if not isinstance(timestep, Tensor):
                return True
            return torch.ones_like(timestep, dtype=torch.bool)
        boundary = ratio * self.scheduler.config.num_train_timesteps
        return timestep >= boundary

    @torch.no_grad()
    def velocity(self, x_t: Tensor, sigma: Tensor, encoder_hidden_states: Tensor) -> Tensor:
        """Frozen velocity ``v_θ(x_t, σ, text)``, without autograd.

        Samples whose timestep falls on either side of a Wan 2.2 boundary go to their own
        transformer.

        Args:
            x_t: (B, C, T, H, W) noisy latents.
            sigma: (B,) noise levels; the transformer gets ``timestep = 1000·σ``.
            encoder_hidden_states: (B, L, D) prompt embeddings.

        Returns:
            (B, C, T, H, W) in ``x_t``'s dtype.
        """
        self.load_component("transformer")
        timestep = sigma_to_timestep(sigma.to(torch.float32)).to(x_t.device)  # (B,)
        first = self.uses_first_transformer(timestep)  # (B,) bool
        out = torch.empty_like(x_t)
        for use_first, model in ((True, self.transformer), (False, self.transformer_2)):
            rows = (first == use_first).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            dtype = next(model.parameters()).dtype
            pred = model(
                hidden_states=x_t[rows].to(dtype),
                timestep=timestep[rows],
                encoder_hidden_states=encoder_hidden_states[rows].to(dtype),
                return_dict=False,
            )[0]
            out[rows] = pred.to(x_t.dtype)
        return out

    def forward(self, x_t: Tensor, sigma: Tensor, encoder_hidden_states: Tensor) -> Tensor:
        """Alias of :meth:`velocity`."""
        return self.velocity(x_t, sigma, encoder_hidden_states)


def load_backbone(
    path_or_id: str,
    *,
    dtype: str = "auto",
    vae_dtype: str = "float32",
    device: str | None = None,
    seed: int = 0,
) -> WanBackbone:
    """Functional form of :meth:`WanBackbone.from_pretrained`."""
    return WanBackbone.from_pretrained(
        path_or_id, dtype=dtype, vae_dtype=vae_dtype, device=device, seed=seed
    )
