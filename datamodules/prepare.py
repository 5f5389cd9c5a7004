"""``pila prepare``: encode a WISA-format dataset once into the training cache.

Reads the annotation file, parses and filters the records (``rejected.jsonl`` says why
each skipped one was skipped), relabels them into the eight categories, then for each
record decodes its clip and computes its flow target (in ``--workers`` DataLoader
workers) and runs the frozen VAE and text encoder over batches (in the main process, on
the GPU when there is one). Results go to safetensors shards with a manifest (layout in
:mod:`pila.datamodules.cache`). A run that is killed resumes where it stopped: finished
shards are checked against their checksums and kept.

``--relabel-only`` stops after relabeling: it writes the relabeled annotation (each
kept record with its ``pila_labels``) and prints the category distribution.

Examples::

    pila prepare --annotations data/wisa-80k.json --videos data/videos --out cache/wisa \\
        --backbone Wan-AI/Wan2.1-T2V-1.3B-Diffusers --workers 8
    pila prepare --annotations data/wisa-80k.json --out cache/wisa --relabel-only
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pila.categories import CATEGORIES, labels_to_multihot
from pila.io import write_json_atomic, write_text_atomic

from .cache import (
    CACHE_FORMAT,
    CACHE_VERSION,
    MANIFEST_NAME,
    REJECTED_NAME,
    RELABELED_NAME,
    STORAGE_DTYPES,
    CacheMismatchError,
    check_shard,
    read_manifest,
    read_shard_metadata,
    shard_name,
    write_manifest,
    write_shard,
)
from .clips import ClipConfig
from .decoded import DecodedClips, encode_clips, keep_item, worker_init
from .flow_targets import FlowConfig
from .records import (
    FilterConfig,
    Rejection,
    WisaRecord,
    load_annotations,
    rejection_counts,
    select_records,
)
from .relabel import (
    CategoryMap,
    Labeler,
    category_distribution,
    format_distribution,
    parser_labeler,
    relabel_records,
    relabeled_annotation,
)
from .sources import VideoIndex

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class PrepareConfig:
    """Everything ``pila prepare`` needs (each field is a command-line option).

    Args:
        annotations: the WISA-format annotation file (JSON list, or JSON Lines).
        out: the cache folder.
        videos: the videos folder (shard zips, per-shard folders or flat); not needed
            with ``relabel_only``.
        backbone: a diffusers Wan folder, a hub id, ``"tiny"`` (the embedded preset) or
            ``"lab"`` (the shipped lab world).
        clip: frames, rate, size and the short-clip rule.
        filters: duration, text-box, motion and quality filters.
        flow: Farneback settings of the flow targets.
        category_map: a category map file (None: the shipped ``category_map.json``).
        max_sequence_length: text tokens the encoder sees (Wan's pipeline uses 512).
        shard_size: records per shard.
        workers: DataLoader workers decoding videos and computing flow (0: in-process).
        encode_batch_size: clips per VAE / text-encoder call.
        device: where the VAE and text encoder run (``auto``: CUDA when available).
        dtype: the text encoder's dtype (``auto``: bf16 on CUDA, else float32; the VAE
            stays float32).
        storage_dtype: dtype of the cached float tensors.
        limit: encode only the first N kept records (None: all).
        overwrite: replace a cache built with other settings instead of stopping.
        relabel_only: write the relabeled annotation and the distribution, then stop.
        relabeled_out: where ``relabel_only`` writes the relabeled annotation (default
            ``<out>/annotations.relabeled.json``).
        llm_labeler: a local causal-LM folder; when set, records are labeled by the
            LLM-assisted prompt parser (:class:`pila.parser.LLMPromptParser`) reading each
            caption, with the category map as its fallback; its refined description is
            cached as ``pooled_refined`` (what conditions the adapter in training).
        llm_labeler_cache: JSON file where the parser keeps its answers (a resumed run
            does not ask again).
    """

    annotations: str
    out: str
    videos: str | None = None
    backbone: str = "tiny"
    clip: ClipConfig = field(default_factory=ClipConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    category_map: str | None = None
    max_sequence_length: int = 512
    shard_size: int = 64
    workers: int = 4
    encode_batch_size: int = 4
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    storage_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    limit: int | None = None
    overwrite: bool = False
    relabel_only: bool = False
    relabeled_out: str | None = None
    llm_labeler: str | None = None
    llm_labeler_cache: str | None = None

    def __post_init__(self) -> None:
        if self.max_sequence_length < 1:
            raise ValueError(f"max_sequence_length must be ≥ 1, got {self.max_sequence_length}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be ≥ 1, got {self.shard_size}")
        if self.workers < 0:
            raise ValueError(f"workers must be ≥ 0, got {self.workers}")
        if self.encode_batch_size < 1:
            raise ValueError(f"encode_batch_size must be ≥ 1, got {self.encode_batch_size}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {', '.join(STORAGE_DTYPES)}, got {self.storage_dtype!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be ≥ 1 or None, got {self.limit}")
        if not self.relabel_only and not self.videos:
            raise ValueError("videos is required (the folder with the .zip shards or .mp4 files) unless relabel_only")

    def settings(self, category_map: CategoryMap) -> dict[str, Any]:
        """What the cache's content depends on; a cache is reused only when these match."""
        return {
            "clip": dataclasses.asdict(self.clip),
            "filters": dataclasses.asdict(self.filters),
            "flow": dataclasses.asdict(self.flow),
            "max_sequence_length": self.max_sequence_length,
            "category_map_sha256": category_map.sha256,
            "llm_labeler": None if self.llm_labeler is None else Path(self.llm_labeler).name,
            "backbone": backbone_identity(self.backbone)["fingerprint"],
        }

    def command(self) -> str:
        """The ``pila prepare`` command line that builds this cache."""
        words = ["pila", "prepare"]
        for option in _OPTIONS:
            value = _get(self, option.path)
            if option.kind == "flag":
                if value:
                    words.append(option.flag)
                continue
            if option.required or value != _get(_DEFAULTS, option.path):
                words += [option.flag, "none" if value is None else str(value)]
        return " ".join(shlex.quote(w) for w in words)


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without CUDA is a ValueError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(device)


def backbone_identity(spec: str) -> dict[str, Any]:
    """What identifies a backbone's VAE and text encoder, without loading it.

    ``fingerprint`` is compared between a cache and a request: for ``"tiny"`` a hash of
    the tiny preset's configs; for a folder a hash of its model_index.json, the VAE,
    text-encoder and tokenizer configs and the sizes of their weight files (so a moved
    folder still matches); for a hub id the id itself.
    """
    if spec == "tiny":
        from pila.backbone.tiny import TINY_TEXT_ENCODER_CONFIG, TINY_VAE_CONFIG

        blob = json.dumps({"vae": TINY_VAE_CONFIG, "text_encoder": TINY_TEXT_ENCODER_CONFIG, "seed": 0}, sort_keys=True, default=str)
        return {"source": "tiny", "fingerprint": "tiny:" + hashlib.sha256(blob.encode()).hexdigest()[:16]}
    from pila.backbone.wan import WanBackbone

    path = WanBackbone.named_folder(spec) or Path(spec).expanduser()
    if path.is_dir():
        digest = hashlib.sha256()
        for part in ("model_index.json", "vae", "text_encoder", "tokenizer"):
            target = path / part
            files = sorted(target.rglob("*")) if target.is_dir() else [target]
            for f in files:
                if not f.is_file():
                    continue
                digest.update(str(f.relative_to(path)).encode())
                if f.suffix in (".json", ".txt", ".model"):
                    digest.update(f.read_bytes())
                else:
                    digest.update(str(f.stat().st_size).encode())
        return {"source": str(path.resolve()), "fingerprint": "folder:" + digest.hexdigest()[:16]}
    return {"source": spec, "fingerprint": f"hub:{spec}"}


# ------------------------------------------------------------------ command line
@dataclass(frozen=True)
class _Option:
    flag: str
    path: str
    help: str
    kind: Literal["str", "int", "float", "optional_float", "optional_int", "optional_str", "flag"] = "str"
    choices: tuple[str, ...] | None = None
    required: bool = False


def _optional(cast: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null", "") else cast(text)

    parse.__name__ = cast.__name__
    return parse


_CASTS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "optional_float": _optional(float),
    "optional_int": _optional(int),
    "optional_str": _optional(str),
}

_OPTIONS: tuple[_Option, ...] = (
    _Option("--annotations", "annotations", "WISA-format annotation file (a JSON list, e.g. data/wisa-80k.json, or JSON Lines)", required=True),
    _Option("--videos", "videos", "folder with the videos: WISA's <N>.zip shards, their unpacked per-shard folders, or one flat folder of .mp4 files", "optional_str"),
    _Option("--out", "out", "cache folder to write (shards, manifest.json, rejected.jsonl)", required=True),
    _Option("--backbone", "backbone", "diffusers Wan folder, hub id, or 'tiny' (the embedded preset)"),
    _Option("--relabel-only", "relabel_only", "only relabel: write the relabeled annotation and print the category distribution", "flag"),
    _Option("--relabeled-out", "relabeled_out", "where --relabel-only writes the relabeled annotation (default: OUT/annotations.relabeled.json)", "optional_str"),
    _Option("--category-map", "category_map", "category map JSON (default: the shipped pila/datamodules/category_map.json)", "optional_str"),
    _Option("--llm-labeler", "llm_labeler", "local causal-LM folder: label records with the LLM-assisted prompt parser (the category map is its fallback)", "optional_str"),
    _Option("--llm-labeler-cache", "llm_labeler_cache", "JSON file keeping the LLM labeler's answers across runs", "optional_str"),
    _Option("--num-frames", "clip.num_frames", "frames per clip (Wan needs 4k+1)", "int"),
    _Option("--fps", "clip.fps", "frames per second the clip is sampled at", "float"),
    _Option("--height", "clip.height", "clip height in pixels after resize and centre crop (multiple of 8)", "int"),
    _Option("--width", "clip.width", "clip width in pixels after resize and centre crop (multiple of 8)", "int"),
    _Option("--short-clip", "clip.short_clip", "videos shorter than the clip: reject them, or loop them from the start", choices=("reject", "loop")),
    _Option("--anchor", "clip.anchor", "where the clip is taken in a longer video", choices=("center", "start")),
    _Option("--min-duration", "filters.min_duration", "shortest annotated duration kept, seconds ('none': no bound)", "optional_float"),
    _Option("--max-duration", "filters.max_duration", "longest annotated duration kept, seconds ('none': no bound)", "optional_float"),
    _Option("--max-text-boxes", "filters.max_text_boxes", "most text_bbox_num kept ('none': no filter)", "optional_int"),
    _Option("--min-motion-score", "filters.min_motion_score", "least motion score kept ('none': no filter)", "optional_float"),
    _Option("--motion-score-field", "filters.motion_score_field", "which field --min-motion-score tests", choices=("motion_score", "motion_score_v2")),
    _Option("--min-quality", "filters.min_quality", "least visual_quality_score kept ('none': no filter)", "optional_float"),
    _Option("--flow-max-side", "flow.max_side", "long side, in pixels, of the frames Farneback sees (shrunk, never enlarged)", "int"),
    _Option("--flow-levels", "flow.levels", "Farneback pyramid levels", "int"),
    _Option("--flow-winsize", "flow.winsize", "Farneback averaging window, pixels of the shrunk frames", "int"),
    _Option("--flow-iterations", "flow.iterations", "Farneback iterations per level", "int"),
    _Option("--flow-pyr-scale", "flow.pyr_scale", "Farneback scale between pyramid levels", "float"),
    _Option("--flow-poly-n", "flow.poly_n", "Farneback polynomial neighbourhood (5 or 7)", "int"),
    _Option("--flow-poly-sigma", "flow.poly_sigma", "Farneback polynomial Gaussian sigma", "float"),
    _Option("--max-sequence-length", "max_sequence_length", "text tokens per prompt (Wan's pipeline uses 512)", "int"),
    _Option("--shard-size", "shard_size", "records per cache shard", "int"),
    _Option("--workers", "workers", "DataLoader workers that decode videos and compute flow (0: in the main process)", "int"),
    _Option("--encode-batch-size", "encode_batch_size", "clips per VAE / text-encoder call", "int"),
    _Option("--device", "device", "where the VAE and text encoder run", choices=("auto", "cpu", "cuda")),
    _Option("--dtype", "dtype", "text-encoder dtype (auto: bf16 on CUDA, else float32; the VAE stays float32)", choices=("auto", "float32", "bfloat16", "float16")),
    _Option("--storage-dtype", "storage_dtype", "dtype of the cached float tensors", choices=("bfloat16", "float16", "float32")),
    _Option("--limit", "limit", "encode only the first N kept records ('none': all)", "optional_int"),
    _Option("--overwrite", "overwrite", "replace a cache built with other settings (default: stop with an error)", "flag"),
)


def _get(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return config


_DEFAULTS = PrepareConfig(annotations="", out="", relabel_only=True)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``pila prepare`` (every option of :class:`PrepareConfig`)."""
    parser = argparse.ArgumentParser(
        prog="pila prepare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Cache layout, resuming and checksums: see pila/datamodules/README.md.",
    )
    for option in _OPTIONS:
        dest = option.path.replace(".", "__")
        if option.kind == "flag":
            parser.add_argument(option.flag, dest=dest, action="store_true", help=option.help)
            continue
        default = _get(_DEFAULTS, option.path)
        help_text = option.help if option.required else f"{option.help} (default: {default})"
        parser.add_argument(
            option.flag,
            dest=dest,
            type=_CASTS[option.kind],
            choices=option.choices,
            required=option.required,
            default=None if option.required else default,
            help=help_text,
            metavar=option.flag.strip("-").replace("-", "_").upper() if option.choices is None else None,
        )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="logging level (default: INFO)")
    return parser


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    """Turn parsed arguments into a :class:`PrepareConfig` (validation errors name the value)."""
    values = vars(args)
    nested: dict[str, dict[str, Any]] = {"clip": {}, "filters": {}, "flow": {}}
    top: dict[str, Any] = {}
    for option in _OPTIONS:
        value = values[option.path.replace(".", "__")]
        if "." in option.path:
            group, key = option.path.split(".")
            nested[group][key] = value
        else:
            top[option.path] = value
    return PrepareConfig(
        clip=ClipConfig(**nested["clip"]),
        filters=FilterConfig(**nested["filters"]),
        flow=FlowConfig(**nested["flow"]),
        **top,
    )


# ----------------------------------------------------------------------- running
@dataclass
class PrepareSummary:
    """What a ``prepare`` run did.

    Attributes:
        num_entries: entries in the annotation file.
        num_records: records left after parsing, filtering and relabeling.
        num_clips: clips in the cache (records whose video decoded).
        rejected: rejections per reason (all stages).
        categories: clips per category.
        shards_written: shards computed by this run.
        shards_reused: finished shards kept from an earlier run.
        seconds: wall time.
    """

    num_entries: int
    num_records: int
    num_clips: int
    rejected: dict[str, int]
    categories: dict[str, int]
    shards_written: int = 0
    shards_reused: int = 0
    seconds: float = 0.0


def load_records(config: PrepareConfig, labeler: Labeler | None = None) -> tuple[list[WisaRecord], list[Rejection], int, CategoryMap]:
    """Parse, filter and relabel the annotation file.

    Returns:
        (kept records, rejections, number of annotation entries, the category map).
    """
    category_map = CategoryMap.load(config.category_map)
    if labeler is None and config.llm_labeler is not None:
        from pila.parser import LLMPromptParser

        parser = LLMPromptParser(config.llm_labeler, cache_file=config.llm_labeler_cache, category_map=config.category_map)
        labeler = parser_labeler(parser)
    entries = load_annotations(config.annotations)
    records, rejected = select_records(entries, config.filters)
    records, unlabeled = relabel_records(records, category_map, labeler)
    rejected = sorted(rejected + unlabeled, key=lambda r: r.index)
    if config.limit is not None:
        records = records[: config.limit]
    return records, rejected, len(entries), category_map


def _write_rejected(path: Path, rejections: Sequence[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejections))


def relabel_only(config: PrepareConfig, labeler: Labeler | None = None) -> PrepareSummary:
    """Write the relabeled annotation and ``rejected.jsonl``; print the category distribution."""
    start = time.perf_counter()
    records, rejected, num_entries, _ = load_records(config, labeler)
    out = Path(config.out)
    target = Path(config.relabeled_out) if config.relabeled_out else out / RELABELED_NAME
    write_json_atomic(target, relabeled_annotation(records), indent=None)
    _write_rejected(out / REJECTED_NAME, [r.to_json() for r in rejected])
    categories = category_distribution(records)
    sys.stdout.write(format_distribution(categories, len(records)) + "\n")
    log.info("wrote %d relabeled records to %s (%d rejected, see %s)", len(records), target, len(rejected), out / REJECTED_NAME)
    return PrepareSummary(num_entries, len(records), 0, rejection_counts(rejected), categories, seconds=time.perf_counter() - start)


def _records_sha256(records: Sequence[WisaRecord]) -> str:
    digest = hashlib.sha256()
    for r in records:
        fields = [r.video_name, r.captions, list(r.labels)] + ([r.description] if r.description else [])
        digest.update(json.dumps(fields, ensure_ascii=False).encode())
    return digest.hexdigest()


def settings_diff(expected: dict[str, Any], found: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two settings dicts (``key: found → expected``)."""
    out = []
    for key in sorted(set(expected) | set(found)):
        a, b = expected.get(key), found.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += settings_diff(a, b, name + ".")
        elif a != b:
            hint = " (the kept records, their labels or their parser descriptions differ)" if key == "records_sha256" else ""
            out.append(f"{name}: cache has {b!r}, asked for {a!r}{hint}")
    return out


def _clean_out_dir(out: Path, manifest: dict[str, Any] | None, overwrite: bool, expected: dict[str, Any]) -> dict[str, Any] | None:
    """Leftover temporaries go; a manifest with other settings is an error (or, with overwrite, goes)."""
    for leftover in out.glob(".shard-*"):
        leftover.unlink(missing_ok=True)
    for leftover in out.glob(f".{MANIFEST_NAME}.*"):
        leftover.unlink(missing_ok=True)
    if manifest is None:
        return None
    found = {k: manifest.get(k) for k in expected}
    diff = settings_diff(expected, found)
    if not diff:
        return manifest
    if not overwrite:
        raise CacheMismatchError(
            f"cache {str(out)!r} was built with other settings ({'; '.join(diff)}). Use another --out, "
            "or pass --overwrite to replace it."
        )
    log.warning("replacing cache %s built with other settings: %s", out, "; ".join(diff))
    for shard in out.glob("shard-*.safetensors"):
        shard.unlink()
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    return None


def prepare_cache(
    config: PrepareConfig,
    labeler: Labeler | None = None,
    backbone: Any | None = None,
    on_shard_written: Callable[[int, dict[str, Any]], None] | None = None,
) -> PrepareSummary:
    """Build (or finish) the cache described by ``config``.

    Args:
        config: the run's settings.
        labeler: optional external labeler replacing the category map (see :mod:`relabel`).
        backbone: an already loaded :class:`~pila.backbone.WanBackbone` to use instead of
            loading ``config.backbone`` (it must be that backbone).
        on_shard_written: called with (shard index, manifest entry) after each shard and
            the manifest that lists it are on disk.

    Returns:
        The run's :class:`PrepareSummary`.

    Raises:
        CacheMismatchError: ``config.out`` holds a cache with other settings (and not ``overwrite``).
        FileNotFoundError: the annotation file, videos folder or backbone is missing.
    """
    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    records, record_rejections, num_entries, category_map = load_records(config, labeler)
    videos = VideoIndex.scan(config.videos)
    log.info(
        "%d annotation entries: %d kept, %d rejected; %d videos indexed under %s",
        num_entries, len(records), len(record_rejections), len(videos), config.videos,
    )

    expected = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "settings": config.settings(category_map),
        "records_sha256": _records_sha256(records),
        "shard_size": config.shard_size,
        "storage_dtype": config.storage_dtype,
    }
    manifest = _clean_out_dir(out, read_manifest(out), config.overwrite, expected)
    done: dict[int, dict[str, Any]] = {}
    for entry in (manifest or {}).get("shards", []):
        problem = check_shard(out, entry)
        if problem is None:
            done[entry["index"]] = entry
        else:
            log.warning("shard %s %s; recomputing it", out / entry["file"], problem)
    num_shards = math.ceil(len(records) / config.shard_size)
    pending = [k for k in range(num_shards) if k not in done]
    for stray in out.glob("shard-*.safetensors"):
        if stray.name not in {e["file"] for e in done.values()}:
            stray.unlink()  # a shard the manifest never listed: its run died before committing it

    manifest = {
        **expected,
        "complete": False,
        "backbone": backbone_identity(config.backbone),
        "command": config.command(),
        "num_entries": num_entries,
        "num_records": len(records),
        "num_shards": num_shards,
        "shards": sorted(done.values(), key=lambda e: e["index"]),
    }
    shards_written = 0
    if pending:
        device = resolve_device(config.device)
        if backbone is None:
            from pila.backbone import WanBackbone

            backbone = WanBackbone.from_pretrained(config.backbone, dtype=config.dtype, device=device)
        else:
            backbone.to(device)
        latent_shape = backbone.latent_shape(config.clip.num_frames, config.clip.height, config.clip.width)
        manifest.update(latent_shape=list(latent_shape), text_dim=backbone.text_dim)
        write_manifest(out, manifest)
        shards_written = _encode_pending(config, records, videos, backbone, pending, manifest, on_shard_written)

    # Every shard is on disk: gather the decode-time rejections and the labels.
    kept_ids: set[str] = set()
    decode_rejections: list[dict[str, Any]] = []
    categories = Counter()
    for entry in manifest["shards"]:
        meta = read_shard_metadata(out / entry["file"])
        decode_rejections += meta["rejected"]
        for clip in meta["clips"]:
            kept_ids.add(clip["id"])
            categories.update(clip["labels"])
    all_rejections = sorted([r.to_json() for r in record_rejections] + decode_rejections, key=lambda r: r["index"])
    counts = dict(Counter(r["reason"] for r in all_rejections).most_common())
    category_counts = {c: categories.get(c, 0) for c in CATEGORIES}
    manifest.update(
        complete=True,
        num_clips=len(kept_ids),
        rejected=counts,
        categories=category_counts,
    )
    write_manifest(out, manifest)
    _write_rejected(out / REJECTED_NAME, all_rejections)
    write_json_atomic(out / RELABELED_NAME, relabeled_annotation(r for r in records if r.id in kept_ids), indent=None)

    summary = PrepareSummary(
        num_entries=num_entries,
        num_records=len(records),
        num_clips=len(kept_ids),
        rejected=counts,
        categories=category_counts,
        shards_written=shards_written,
        shards_reused=len(done),
        seconds=time.perf_counter() - start,
    )
    _log_summary(summary, out)
    return summary


def _encode_pending(
    config: PrepareConfig,
    records: Sequence[WisaRecord],
    videos: VideoIndex,
    backbone: Any,
    pending: Sequence[int],
    manifest: dict[str, Any],
    on_shard_written: Callable[[int, dict[str, Any]], None] | None,
) -> int:
    """Decode, encode and write the pending shards; returns how many were written."""
    out = Path(config.out)
    n = config.shard_size
    positions = [p for k in pending for p in range(k * n, min((k + 1) * n, len(records)))]
    subset = [records[p] for p in positions]
    dataset = DecodedClips(
        subset, videos, config.clip, config.flow, backbone.vae_scale_factor_temporal, backbone.vae_scale_factor_spatial
    )
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=config.workers,
        collate_fn=keep_item,
        worker_init_fn=worker_init if config.workers else None,
        prefetch_factor=2 if config.workers else None,
    )
    remaining = Counter(positions[i] // n for i in range(len(positions)))  # records left per shard
    decoded: dict[int, list[dict[str, Any]]] = {k: [] for k in pending}  # awaiting encoding
    encoded: dict[int, list[dict[str, Any]]] = {k: [] for k in pending}
    rejected: dict[int, list[dict[str, Any]]] = {k: [] for k in pending}
    written = 0

    def encode(shard: int) -> None:
        batch = decoded[shard]
        if not batch:
            return
        prompts = [records[item["position"]].captions for item in batch]
        conditions = [records[item["position"]].condition_text for item in batch]
        video = torch.stack([item["video"] for item in batch])
        result = encode_clips(backbone, video, prompts, config.max_sequence_length, conditions)
        for i, item in enumerate(batch):
            record = records[item["position"]]
            mask = result["prompt_mask"][i]  # (L,)
            encoded[shard].append(
                {
                    "latents": result["latents"][i],
                    "flow": item["flow"],
                    "prompt_embeds": result["prompt_embeds"][i][mask],  # (L_i, D)
                    "pooled": result["pooled"][i],
                    "pooled_refined": result["pooled_refined"][i],
                    "labels": labels_to_multihot(record.labels),
                    "id": record.id,
                    "video_name": record.video_name,
                    "prompt": record.captions,
                    "description": record.description,
                    "label_names": list(record.labels),
                }
            )
        decoded[shard] = []

    progress = tqdm(total=len(positions), unit="clip", desc="prepare", dynamic_ncols=True, smoothing=0.1)
    num_rejected = 0
    try:
        for item in loader:
            position = positions[item["position"]]
            shard = position // n
            if "rejection" in item:
                rejected[shard].append(item["rejection"])
                num_rejected += 1
            else:
                decoded[shard].append({**item, "position": position})
                if len(decoded[shard]) >= config.encode_batch_size:
                    encode(shard)
            remaining[shard] -= 1
            progress.update(1)
            progress.set_postfix(rejected=num_rejected, refresh=False)
            if remaining[shard] == 0:
                encode(shard)
                entry = write_shard(out / shard_name(shard), encoded.pop(shard), rejected.pop(shard), config.storage_dtype)
                entry["index"] = shard
                manifest["shards"] = sorted([*manifest["shards"], entry], key=lambda e: e["index"])
                write_manifest(out, manifest)
                written += 1
                if on_shard_written is not None:
                    on_shard_written(shard, entry)
    finally:
        progress.close()
    return written


def _log_summary(summary: PrepareSummary, out: Path) -> None:
    rate = summary.num_clips / summary.seconds if summary.seconds > 0 else 0.0
    log.info(
        "cache %s: %d clips from %d annotation entries (%d shards written, %d reused) in %.1f s (%.2f clips/s)",
        out, summary.num_clips, summary.num_entries, summary.shards_written, summary.shards_reused, summary.seconds, rate,
    )
    total = sum(summary.rejected.values())
    if total:
        log.info("rejected %d (details in %s):", total, out / REJECTED_NAME)
        for reason, count in summary.rejected.items():
            log.info("  %-22s %d", reason, count)
    log.info("%s", format_distribution(summary.categories, summary.num_clips))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pila prepare``; returns the exit status."""
    args = build_parser().parse_args(argv)
    # `pila` (pila.cli) gives the project's logger its handler; only the level is ours to set.
    logging.getLogger("pila").setLevel(getattr(logging, args.log_level))
    try:
        config = config_from_args(args)
        if config.relabel_only:
            relabel_only(config)
        else:
            prepare_cache(config)
    except (FileNotFoundError, ValueError, KeyError) as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
