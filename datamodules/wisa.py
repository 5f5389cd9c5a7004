"""``WISA80KDataModule``: relabeled eight-category WISA-80K clips for the training stages.

Legend: B batch, C latent channels (16), T latent frames, H, W latent grid, L text
tokens, D text width.

By default training reads the cache that ``pila prepare`` writes (see
:mod:`pila.datamodules.cache`). When the cache is missing, :meth:`setup` stops with the
exact ``pila prepare`` command that builds it; with ``prepare_if_missing=True``
:meth:`prepare_data` runs that command itself first (on one process per node, as
Lightning does for ``prepare_data``). With ``encode_on_the_fly=True`` there is no cache:
workers decode the videos and compute the flow targets, and the frozen VAE and text
encoder run on each batch once it is on the device (``on_after_batch_transfer``).

Both paths give the same batch (``pad_to`` is ``max_sequence_length``, as in
``WanPipeline``)::

    latents        (B, C, T, H, W) float32   normalised VAE latents
    prompt_embeds  (B, L, D) float32         zero past each prompt's tokens
    prompt_mask    (B, L) bool
    pooled         (B, D) float32            mean of the valid token embeddings
    pooled_refined (B, D) float32            the same for the parser's refined description
                                             (conditions the adapter; = pooled without one)
    labels         (B, 8) float32            multi-hot, pila.categories.CATEGORIES order
    flow           (B, 2, T, H, W) float32   pseudo-flow target, latent cells per latent frame,
                                             x first
    prompt, id     list[str]

The train/val split is a hash of each video name (:func:`~pila.datamodules.split.split_names`).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from pila.parser.category_map import CategoryMap

from .cache import CachedClips, CacheMismatchError, CacheMissingError, read_manifest, verify_cache
from .cache_identity import backbone_identity, settings_diff
from .clips import ClipConfig
from .collate import ClipCollator
from .decoded import DecodedClips, OnTheFlyClips, encode_clips, worker_init, workers_start
from .flow_targets import FlowConfig
from .prepare import load_records, prepare_cache
from .prepare_config import PrepareConfig
from .records import FilterConfig
from .resumable import ResumableSampler, resume_position
from .sources import VideoIndex
from .split import split_names

log = logging.getLogger(__name__)


class WISA80KDataModule(LightningDataModule):
    """WISA-80K (or any WISA-format dataset) as cached latents, text embeddings, labels and flow.

    Args:
        annotations: the annotation file (WISA-80K's ``data/wisa-80k.json``).
        videos: folder with the videos: ``<N>.zip`` shards, unpacked per-shard folders, or flat.
        cache_dir: the ``pila prepare`` cache; required unless ``encode_on_the_fly``.
        backbone: the frozen Wan whose VAE and text encoder made (or make) the inputs: a
            diffusers folder, a hub id or ``"tiny"``. Must match the training backbone.
        batch_size: clips per batch.
        num_workers: DataLoader workers.
        num_frames: frames per clip (4k + 1).
        fps: frames per second the clips are sampled at.
        height: clip height in pixels after resize and centre crop.
        width: clip width in pixels after resize and centre crop.
        short_clip: videos shorter than a clip: ``"reject"`` them or ``"loop"`` them.
        anchor: where a clip sits in a longer video: ``"center"`` or ``"start"``.
        min_duration: shortest annotated duration kept (s); None: no bound.
        max_duration: longest annotated duration kept (s); None: no bound.
        max_text_boxes: most ``text_bbox_num`` kept; None: no filter.
        min_motion_score: least ``motion_score`` kept; None: no filter.
        min_quality: least ``visual_quality_score`` kept; None: no filter.
        category_map: category map file (None: the shipped ``category_map.json``).
        llm_labeler: local causal-LM folder the cache was relabeled with
            (``pila prepare --llm-labeler``); None: the category map alone.
        val_fraction: share of clips (by video-name hash) held out for validation.
        split_seed: seed of the split hash and of the training order (a resumed run keeps its
            place in it).
        max_sequence_length: text tokens per prompt; batches are padded to it.
        flow_max_side: long side in pixels of the frames Farneback sees.
        encode_on_the_fly: decode and encode every batch instead of reading the cache.
        prepare_if_missing: let :meth:`prepare_data` build a missing cache itself.
        verify_cache: check every shard's sha256 in :meth:`setup` (one full read of the
            cache, by the first process of each node).
        prepare_workers: decoding workers of a cache built by ``prepare_if_missing``.
        shard_size: records per shard of a cache built by ``prepare_if_missing``.
        storage_dtype: float dtype of a cache built by ``prepare_if_missing``.
        device: where a cache built by ``prepare_if_missing`` is encoded.
        pin_memory: pin batches in page-locked memory (only when CUDA is available).
        drop_last: drop the last incomplete training batch.
        allow_backbone_mismatch: train on a cache whose VAE and text encoder weights differ
            from ``backbone``'s (or from the training module's backbone); refused by default,
            since its latents and text embeddings are not what that backbone makes.
    """

    def __init__(
        self,
        annotations: str,
        videos: str,
        cache_dir: str | None = None,
        backbone: str = "tiny",
        batch_size: int = 1,
        num_workers: int = 4,
        num_frames: int = 81,
        fps: float = 16.0,
        height: int = 480,
        width: int = 832,
        short_clip: Literal["reject", "loop"] = "reject",
        anchor: Literal["start", "center"] = "center",
        min_duration: float | None = 2.0,
        max_duration: float | None = 10.0,
        max_text_boxes: int | None = 1,
        min_motion_score: float | None = None,
        min_quality: float | None = None,
        category_map: str | None = None,
        llm_labeler: str | None = None,
        val_fraction: float = 0.02,
        split_seed: int = 0,
        max_sequence_length: int = 512,
        flow_max_side: int = 256,
        encode_on_the_fly: bool = False,
        prepare_if_missing: bool = False,
        verify_cache: bool = True,
        prepare_workers: int = 4,
        shard_size: int = 64,
        storage_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16",
        device: Literal["auto", "cpu", "cuda"] = "auto",
        pin_memory: bool = True,
        drop_last: bool = False,
        allow_backbone_mismatch: bool = False,
    ) -> None:
        super().__init__()
        if type(self).__init__ is WISA80KDataModule.__init__:
            self.save_hyperparameters(logger=False)
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be ≥ 0, got {num_workers}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if cache_dir is None and not encode_on_the_fly:
            raise ValueError(
                "cache_dir is required unless encode_on_the_fly=True "
                "(it is where `pila prepare` writes)"
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.encode_on_the_fly = encode_on_the_fly
        self.prepare_if_missing = prepare_if_missing
        self.verify_cache = verify_cache
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.allow_backbone_mismatch = allow_backbone_mismatch
        self.max_sequence_length = max_sequence_length
        # The same settings object `pila prepare` uses, so the cache check and the
        # suggested command cannot drift from what prepare does.
        self.prepare_settings = PrepareConfig(
            annotations=annotations,
            videos=videos,
            out=cache_dir or "",
            backbone=backbone,
            clip=ClipConfig(
                num_frames=num_frames, fps=fps, height=height, width=width,
                short_clip=short_clip, anchor=anchor,
            ),  # fmt: skip
            filters=FilterConfig(
                min_duration=min_duration,
                max_duration=max_duration,
                max_text_boxes=max_text_boxes,
                min_motion_score=min_motion_score,
                min_quality=min_quality,
            ),
            flow=FlowConfig(max_side=flow_max_side),
            category_map=category_map,
            llm_labeler=llm_labeler,
            max_sequence_length=max_sequence_length,
            shard_size=shard_size,
            workers=prepare_workers,
            device=device,
            storage_dtype=storage_dtype,
        )
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._backbone = None

    # ------------------------------------------------------------------- cache
    def cache_ready(self) -> bool:
        """Whether ``cache_dir`` holds a finished cache (whatever its settings)."""
        manifest = read_manifest(self.prepare_settings.out) if self.prepare_settings.out else None
        return bool(manifest and manifest.get("complete"))

    def prepare_data(self) -> None:
        """Build the cache when it is missing and ``prepare_if_missing`` (one process per node)."""
        if self.encode_on_the_fly or not self.prepare_if_missing or self.cache_ready():
            return
        log.info("building the cache: %s", self.prepare_settings.command())
        prepare_cache(self.prepare_settings, backbone=self._backbone)

    def _check_manifest(self) -> dict[str, Any]:
        config = self.prepare_settings
        manifest = read_manifest(config.out)
        if manifest is None or not manifest.get("complete"):
            unfinished = "is unfinished (a prepare run stopped early)"
            state = "does not exist" if manifest is None else unfinished
            raise CacheMissingError(
                f"the training cache {config.out!r} {state}. Build it with:\n\n"
                f"    {config.command()}\n\n"
                "(or set prepare_if_missing: true on the data module to build it before training, "
                "or encode_on_the_fly: true to train without a cache)"
            )
        expected = config.settings(CategoryMap.load(config.category_map))
        found = dict(manifest.get("settings", {}))
        self._check_backbones(manifest)
        found["backbone"] = expected["backbone"]  # checked above, naming both backbones
        diff = settings_diff(expected, found)
        if diff:
            raise CacheMismatchError(
                f"the cache {config.out!r} was built with other settings than this data module's "
                f"({'; '.join(diff)}). Build a matching one into a new folder with:\n\n    "
                f"{config.command()} --overwrite\n\n"
                "(drop --overwrite and change --out to keep the old cache)"
            )
        return manifest

    def _check_backbones(self, manifest: dict[str, Any]) -> None:
        """The cache's VAE and text encoder are the data module's and the training module's
        backbone's.

        Raises:
            CacheMismatchError: naming the backbone that built the cache and the one asked
                for (unless ``allow_backbone_mismatch``).
        """
        built = manifest.get("backbone") or {}
        built_fp = manifest.get("settings", {}).get("backbone", built.get("fingerprint"))
        wanted = [("the data module's backbone", self.prepare_settings.backbone)]
        trainer = self.trainer
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        hparams = (getattr(module, "hparams", None) or {}) if module is not None else {}
        module_backbone = hparams.get("backbone")
        if isinstance(module_backbone, str) and module_backbone != self.prepare_settings.backbone:
            wanted.append(("the training module's backbone", module_backbone))
        for role, spec in wanted:
            identity = backbone_identity(spec)
            if identity["fingerprint"] == built_fp:
                continue
            message = (
                f"the cache {self.prepare_settings.out!r} was built by backbone "
                f"{built.get('source', '?')!r} (fingerprint {built_fp}), but {role} is {spec!r} "
                f"(fingerprint {identity['fingerprint']}): their VAE or text-encoder weights "
                "differ, so the cached latents and text embeddings are not what it makes"
            )
            if self.allow_backbone_mismatch:
                log.warning("%s; training on it anyway (allow_backbone_mismatch)", message)
                continue
            raise CacheMismatchError(
                f"{message}. Build a cache with this backbone (`pila prepare ... --backbone {spec} "
                "--out NEW_FOLDER`), or set allow_backbone_mismatch: true on the data module if "
                "you mean to train on this one"
            )

    # ------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Read the cache (or index the videos) and split train/val by video-name hash.

        Raises:
            CacheMissingError: no finished cache (the message holds the ``pila prepare`` command).
            CacheMismatchError: the cache was built with other settings.
            CacheCorruptError: a shard fails its checksum (named in the message).
        """
        if self.train_set is not None:
            return
        if self.encode_on_the_fly:
            self._setup_on_the_fly()
            return
        manifest = self._check_manifest()
        if self.verify_cache and (self.trainer is None or self.trainer.local_rank == 0):
            # one process per node reads the whole cache; a bad shard stops the run there
            verify_cache(self.prepare_settings.out, manifest)
        everything = CachedClips(self.prepare_settings.out, verify=False, manifest=manifest)
        if len(everything) == 0:
            raise ValueError(
                f"the cache {self.prepare_settings.out!r} holds no clips; see its rejected.jsonl"
            )
        names = everything.video_names
        train_names, val_names = split_names(names, self.val_fraction, self.split_seed)
        by_name = dict(zip(names, everything.ids, strict=True))
        self.train_set = everything.subset([by_name[n] for n in train_names])
        self.val_set = everything.subset([by_name[n] for n in val_names])
        log.info(
            "cache %s: %d training and %d validation clips",
            self.prepare_settings.out, len(self.train_set), len(self.val_set),
        )  # fmt: skip

    def _setup_on_the_fly(self) -> None:
        config = self.prepare_settings
        records, rejected, num_entries, _ = load_records(config)
        if not records:
            raise ValueError(
                f"no usable records in {config.annotations!r} "
                f"({len(rejected)} of {num_entries} rejected)"
            )
        backbone = self._load_backbone()
        videos = VideoIndex.scan(config.videos)
        names = [r.video_name for r in records]
        train_names, val_names = split_names(names, self.val_fraction, self.split_seed)
        by_name = {r.video_name: r for r in records}

        def dataset(names: list[str]) -> OnTheFlyClips | list:
            if not names:
                return []
            decoded = DecodedClips(
                [by_name[n] for n in names], videos, config.clip, config.flow,
                backbone.vae_scale_factor_temporal, backbone.vae_scale_factor_spatial,
            )
            return OnTheFlyClips(decoded)

        self.train_set, self.val_set = dataset(train_names), dataset(val_names)
        log.info(
            "on-the-fly encoding: %d training and %d validation records (%d rejected)",
            len(train_names), len(val_names), len(rejected),
        )  # fmt: skip

    # ------------------------------------------------------------- dataloaders
    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        sampler = None
        if train:
            # Each epoch's order comes from (split_seed, epoch) alone, sharded by rank; a run
            # resumed mid-epoch skips the batches its checkpoint had already trained on.
            sampler = ResumableSampler(
                dataset, shuffle=True, seed=self.split_seed, drop_last=self.drop_last
            )
            position = resume_position(self.trainer)
            sampler.resume(*position, self.batch_size, drop_last_batch=self.drop_last)
        if self.num_workers > 0:
            workers_start()
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=ClipCollator(pad_to=self.max_sequence_length),
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            drop_last=self.drop_last and train,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=worker_init if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    # -------------------------------------------------------- on-the-fly encoding
    def attach_backbone(self, backbone) -> None:
        """Share an already loaded backbone (e.g. the training module's) for on-the-fly
        encoding and ``prepare_if_missing``, instead of loading a second copy."""
        self._backbone = backbone

    def _load_backbone(self):
        if self._backbone is None:
            from pila.backbone import WanBackbone
            from pila.backbone.wan import ENCODING_COMPONENTS

            config = self.prepare_settings
            # the encoders alone: the training module holds the transformer(s)
            self._backbone = WanBackbone.from_pretrained(
                config.backbone, dtype=config.dtype, components=ENCODING_COMPONENTS
            )
        return self._backbone

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """With ``encode_on_the_fly``, turn ``video`` (B, 3, F, H_px, W_px) uint8 into the cached
        fields."""
        if "video" not in batch:
            return batch
        video = batch.pop("video")
        backbone = self._load_backbone()
        if backbone.device != video.device:
            backbone.to(video.device)
        prompts, conditions = batch["prompt"], batch.get("condition_text")
        batch.update(encode_clips(backbone, video, prompts, self.max_sequence_length, conditions))
        for key in ("latents", "prompt_embeds", "prompt_mask", "pooled", "pooled_refined"):
            batch[key] = batch[key].to(video.device)
        return batch

