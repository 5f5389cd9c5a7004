"""A training run's output folder, as ``pila demo`` lays it out, opened for analysis.

::

    <out>/data/videos/        the clips (mp4)
    <out>/data/cache/         their latent cache (``pila prepare``)
    <out>/stageA|B|C/         TensorBoard event files, config.yaml, checkpoints/
    <out>/adapter/            the exported stage-C adapter
    <out>/videos/             generated videos with JSON sidecars

The backbone and the text length the adapter was trained with are read from the
``config.yaml`` LightningCLI saved into the stage-C folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pila.adapter import PILAAdapter
from pila.backbone import WanBackbone
from pila.datamodules.cache import CachedClips
from pila.datamodules.clips import ClipConfig, read_clip
from pila.datamodules.sources import VideoIndex, open_video

STAGE_CONFIG_NAME = "config.yaml"
"""The file LightningCLI writes into each stage's folder."""


@dataclass(frozen=True)
class TrainingSettings:
    """What the analyses must repeat from training.

    Attributes:
        backbone: the frozen backbone (``"tiny"``, a diffusers folder or a hub id).
        backbone_dtype: its dtype setting (``"auto"``: bf16 on CUDA, else float32).
        text_length: text positions fed to the backbone.
    """

    backbone: str
    backbone_dtype: str
    text_length: int


class RunFolder:
    """Open the output folder of a run for analysis.

    Args:
        root: the folder (``--out`` of ``pila demo``; ``outputs/demo`` by default).
        cache_dir: the latent cache of the clips to analyse (default ``<root>/data/cache``).
        videos_dir: the clips' videos (default ``<root>/data/videos``).
        stage: the stage whose ``config.yaml`` gives the training settings.

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        cache_dir: str | os.PathLike | None = None,
        videos_dir: str | os.PathLike | None = None,
        stage: str = "stageC",
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"run folder {str(self.root)!r} does not exist; run `pila demo --out {root}` "
                "(or `make demo` for outputs/demo) first"
            )
        data = self.root / "data"
        self.cache_dir = Path(cache_dir) if cache_dir is not None else data / "cache"
        self.videos_dir = Path(videos_dir) if videos_dir is not None else data / "videos"
        self.stage = stage

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    @property
    def adapter_dir(self) -> Path:
        """The exported adapter, ``<root>/adapter``."""
        return self.root / "adapter"

    @property
    def generated_dir(self) -> Path:
        """The generated videos and their sidecars, ``<root>/videos``."""
        return self.root / "videos"

    def stage_dir(self, stage: str) -> Path:
        """The folder of one training stage (``stageA``, ``stageB``, ``stageC``)."""
        return self.root / stage

    @cached_property
    def settings(self) -> TrainingSettings:
        """Backbone and text length from ``<root>/<stage>/config.yaml``."""
        path = self.stage_dir(self.stage) / STAGE_CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: training writes it into each stage's folder; "
                f"is {str(self.root)!r} the output folder of a finished run?"
            )
        config: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        init = (config.get("model") or {}).get("init_args") or {}
        missing = [k for k in ("backbone", "text_length") if k not in init]
        if missing:
            raise ValueError(
                f"{path} has no model.init_args.{' or '.join(missing)}; it is not a stage config"
            )
        return TrainingSettings(
            backbone=str(init["backbone"]),
            backbone_dtype=str(init.get("backbone_dtype", "auto")),
            text_length=int(init["text_length"]),
        )

    def load_adapter(self, device: str | torch.device = "cpu") -> PILAAdapter:
        """The exported adapter (``<root>/adapter``), in eval mode."""
        if not self.adapter_dir.is_dir():
            raise FileNotFoundError(
                f"{self.adapter_dir} not found: `pila demo` exports the stage-C adapter there "
                "(or run `pila export <stageC last.ckpt> <root>/adapter`)"
            )
        return PILAAdapter.from_pretrained(self.adapter_dir, device=device).eval()

    def load_backbone(self, device: str | torch.device = "cpu") -> WanBackbone:
        """The frozen backbone the adapter was trained with."""
        s = self.settings
        return WanBackbone.from_pretrained(s.backbone, dtype=s.backbone_dtype, device=device)

    def clips(self, verify: bool = False) -> CachedClips:
        """Every clip of the latent cache (training and validation), in cache order."""
        return CachedClips(self.cache_dir, verify=verify)

    @cached_property
    def _video_index(self) -> VideoIndex:
        return VideoIndex.scan(self.videos_dir)

    def clip_frames(self, clips: CachedClips, clip_id: str) -> np.ndarray:
        """The pixel frames the cache encoded for ``clip_id``: (F, H_px, W_px, 3) uint8.

        Decoded from the clip's video with the cache's own clip settings (frames, rate,
        size, crop), so frame ``4·t`` lines up with latent frame t.
        """
        names = dict(zip(clips.ids, clips.video_names, strict=True))
        if clip_id not in names:
            raise KeyError(f"clip {clip_id!r} is not in {clips.cache_dir}")
        ref = self._video_index.get(names[clip_id])
        if ref is None:
            raise FileNotFoundError(
                f"video {names[clip_id]!r} of clip {clip_id!r} is not under {self.videos_dir}"
            )
        clip_settings = (clips.manifest.get("settings") or {}).get("clip")
        if not clip_settings:
            raise ValueError(f"the manifest of {clips.cache_dir} records no clip settings")
        return read_clip(open_video(ref), ClipConfig(**clip_settings))
