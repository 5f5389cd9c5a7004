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

On several GPUs, shard k goes to rank k mod N and rank 0 writes the manifest when every
shard is done (``--num-processes N`` on one machine; ``torchrun`` or ``srun`` across)::

    torchrun --nproc-per-node 8 -m pila prepare --annotations data/wisa-80k.json \\
        --videos data/videos --out cache/wisa --backbone Wan-AI/Wan2.1-T2V-1.3B-Diffusers
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shlex
import sys
import time
import typing
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import docstring_parser
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pila import logs
from pila.categories import CATEGORIES, labels_to_multihot
from pila.io import is_hub_id, write_json_atomic, write_text_atomic
from pila.parser.category_map import CategoryMap

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
    """Everything ``pila prepare`` needs.

    Each field is a command-line option (``--field-name``; the clip and filter fields keep
    their own names, the flow fields get a ``--flow-`` prefix), and these descriptions are
    its ``--help`` text (:func:`prepare_options`).

    Args:
        annotations: WISA-format annotation file (a JSON list, e.g. data/wisa-80k.json, or
            JSON Lines).
        out: cache folder to write (shards, manifest.json, rejected.jsonl).
        videos: folder with the videos: WISA's <N>.zip shards, their unpacked per-shard
            folders, or one flat folder of .mp4 files; not needed with ``relabel_only``.
        backbone: diffusers Wan folder, hub id, ``"tiny"`` (the embedded preset) or ``"lab"``
            (the shipped lab world).
        clip: frames, rate, size and the short-clip rule.
        filters: duration, text-box, motion and quality filters.
        flow: Farneback settings of the flow targets.
        category_map: category map JSON (None: the shipped pila/parser/category_map.json).
        max_sequence_length: text tokens per prompt (512: Wan's pipeline's).
        shard_size: records per cache shard (our choice).
        workers: DataLoader workers that decode videos and compute flow (0: in the main
            process; 4 is our choice).
        encode_batch_size: clips per VAE / text-encoder call (our choice).
        device: where the VAE and text encoder run (``auto``: CUDA when available).
        dtype: text-encoder dtype (``auto``: bf16 on CUDA, else float32; the VAE stays
            float32).
        storage_dtype: dtype of the cached float tensors.
        limit: encode only the first N kept records (None: all).
        overwrite: replace a cache built with other settings (default: stop with an error).
        relabel_only: only relabel: write the relabeled annotation and print the category
            distribution.
        relabeled_out: where ``relabel_only`` writes the relabeled annotation (None:
            OUT/annotations.relabeled.json).
        llm_labeler: local causal-LM folder: label records with the LLM-assisted prompt
            parser (:class:`pila.parser.LLMPromptParser`) reading each caption, the category
            map as its fallback; its refined description is cached as ``pooled_refined``
            (what conditions the adapter in training).
        llm_labeler_cache: JSON file keeping the LLM labeler's answers across runs (a
            resumed run does not ask again).
        num_processes: processes to spawn on this machine, each building every N-th shard
            on its own GPU (cuda:0 … cuda:N−1 when there are GPUs) with its own decoding
            workers (1, this process alone, is our choice). Under ``torchrun`` or ``srun`` the
            launcher's RANK / WORLD_SIZE / LOCAL_RANK (or SLURM_PROCID / SLURM_NTASKS /
            SLURM_LOCALID) decide instead.
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
    num_processes: int = 1

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
        if self.num_processes < 1:
            raise ValueError(f"num_processes must be ≥ 1, got {self.num_processes}")
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
        for option in prepare_options():
            value = _get(self, option.path)
            if option.cast is None:
                if value:
                    words.append(option.flag)
                continue
            if option.required or value != _get(_DEFAULTS, option.path):
                words += [option.flag, "none" if value is None else str(value)]
        return " ".join(shlex.quote(w) for w in words)


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without CUDA is a ValueError.

    A CUDA device is ``cuda:local_rank`` (modulo the GPUs this process sees).
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu or auto")
    if device == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(device)


@dataclass(frozen=True)
class Ranks:
    """Which process of a multi-process ``pila prepare`` this is.

    Shard k is built by rank ``k mod world_size``; rank 0 writes the manifest once every
    shard is done.

    Attributes:
        rank: this process's index, 0 … world_size − 1.
        world_size: processes building the cache together.
        local_rank: its index on this machine (picks its GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ValueError(f"bad process ranks: rank {self.rank}, world size {self.world_size}, local rank {self.local_rank}")

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Ranks:
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK, else srun's SLURM_PROCID / SLURM_NTASKS /
        SLURM_LOCALID, else one process."""
        env = os.environ if environ is None else environ
        for rank, world, local in (("RANK", "WORLD_SIZE", "LOCAL_RANK"), ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")):
            if rank in env and world in env:
                try:
                    return cls(int(env[rank]), int(env[world]), int(env.get(local, env[rank])))
                except ValueError as err:
                    raise ValueError(f"{rank}={env[rank]!r}, {world}={env[world]!r}: {err}") from err
        return cls()

    def owns(self, shard: int) -> bool:
        """Whether this rank builds shard ``shard``."""
        return shard % self.world_size == self.rank


def backbone_identity(spec: str) -> dict[str, Any]:
    """What identifies a backbone's VAE and text encoder, without loading it.

    ``fingerprint`` is compared between a cache and a request: for ``"tiny"`` a hash of
    the tiny preset's configs; for a folder a hash of its model_index.json, the VAE,
    text-encoder and tokenizer configs and a fingerprint of each of their weight files
    (:func:`weights_fingerprint`: so two folders with the same configs but other weights
    differ, and a moved folder still matches); for a hub id the id itself.
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
                    digest.update(weights_fingerprint(f).encode())
        return {"source": str(path.resolve()), "fingerprint": "folder:" + digest.hexdigest()[:16]}
    if not is_hub_id(spec):
        from pila.backbone.folders import check_wan_folder

        check_wan_folder(path)  # a path that does not exist: "folder not found: …"
    return {"source": spec, "fingerprint": f"hub:{spec}"}


WEIGHT_SAMPLES = 64
"""Blocks of :data:`WEIGHT_SAMPLE_BYTES` read, evenly strided, from each weight file."""
WEIGHT_SAMPLE_BYTES = 4096


def weights_fingerprint(path: Path) -> str:
    """A cheap fingerprint of a weight file: its size, its safetensors header and a strided sample of its bytes.

    Reads at most the header and 64 × 4 KiB, whatever the file's size; two files with
    the same tensor names and shapes but other values differ in the sampled bytes.
    """
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as handle:
        if path.suffix == ".safetensors" and size >= 8:
            header_len = int.from_bytes(handle.read(8), "little")
            if 0 < header_len <= min(size - 8, 100 << 20):
                digest.update(handle.read(header_len))
        stride = max(size // WEIGHT_SAMPLES, 1)
        for offset in range(0, size, stride):
            handle.seek(offset)
            digest.update(handle.read(WEIGHT_SAMPLE_BYTES))
    return digest.hexdigest()


# ------------------------------------------------------------------ command line
NESTED_FLAG_PREFIX: dict[str, str] = {"clip": "", "filters": "", "flow": "flow-"}
"""Flag prefix of each nested settings group of :class:`PrepareConfig` (``--num-frames``,
``--min-duration``, ``--flow-winsize``)."""


@dataclass(frozen=True)
class Option:
    """One ``pila prepare`` option, generated from a field of :class:`PrepareConfig`.

    Attributes:
        flag: the option (``--num-frames``).
        path: the field's dotted path in :class:`PrepareConfig` (``clip.num_frames``).
        help: the field's description from its dataclass docstring.
        cast: text → value (None for an on/off flag).
        choices: the allowed values of a ``Literal`` field.
        required: the field has no default.
        optional: ``None`` is allowed (written ``none`` on the command line).
    """

    flag: str
    path: str
    help: str
    cast: Callable[[str], Any] | None
    choices: tuple[str, ...] | None = None
    required: bool = False
    optional: bool = False

    @property
    def dest(self) -> str:
        return self.path.replace(".", "__")


def _none_or(cast: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null", "") else cast(text)

    parse.__name__ = cast.__name__  # argparse names the type in its error messages
    return parse


def _help_text(description: str) -> str:
    """A docstring description as plain ``--help`` text (no reST markup, one line)."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", description)
    text = " ".join(text.replace("``", "").split()).rstrip(".")
    return text.replace("%", "%%")


def _field_options(cls: type, prefix: str, flag_prefix: str) -> list[Option]:
    hints = typing.get_type_hints(cls)
    docs = {p.arg_name: p.description or "" for p in docstring_parser.parse(cls.__doc__ or "").params}
    options = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            options += _field_options(kind, f"{prefix}{f.name}.", NESTED_FLAG_PREFIX[f.name])
            continue
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        optional = type(None) in typing.get_args(kind)
        base = args[0] if optional and len(args) == 1 else kind
        choices = tuple(typing.get_args(base)) if typing.get_origin(base) is Literal else None
        cast = None if base is bool else (str if choices else base)
        if f.name not in docs:
            raise TypeError(f"{cls.__name__}.{f.name} has no description in the docstring's Args; --help needs one")
        options.append(
            Option(
                flag="--" + flag_prefix + f.name.replace("_", "-"),
                path=prefix + f.name,
                help=_help_text(docs[f.name]),
                cast=_none_or(cast) if optional and cast is not None else cast,
                choices=choices,
                required=f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                optional=optional,
            )
        )
    return options


def prepare_options() -> tuple[Option, ...]:
    """Every ``pila prepare`` option, one per field of :class:`PrepareConfig` (nested ones included).

    Flags, types, choices, defaults and help all come from the dataclasses and their
    docstrings, so the command line cannot drift from the config.
    """
    options = tuple(_field_options(PrepareConfig, "", ""))
    flags = [o.flag for o in options]
    duplicated = sorted({f for f in flags if flags.count(f) > 1})
    if duplicated:
        raise TypeError(f"PrepareConfig fields map to the same option {duplicated}; give them distinct names")
    return options


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
    groups = {
        name: parser.add_argument_group(f"{name} ({_help_text(docstring_parser.parse(type(getattr(_DEFAULTS, name)).__doc__).short_description or '')})")
        for name in NESTED_FLAG_PREFIX
    }
    for option in prepare_options():
        group = groups.get(option.path.split(".")[0], parser) if "." in option.path else parser
        if option.cast is None:
            group.add_argument(option.flag, dest=option.dest, action="store_true", help=option.help)
            continue
        default = None if option.required else _get(_DEFAULTS, option.path)
        shown = "none" if default is None else default
        unset = "; 'none' for None" if option.optional and default is not None else ""
        help_text = option.help if option.required else f"{option.help} (default: {shown}{unset})"
        group.add_argument(
            option.flag,
            dest=option.dest,
            type=option.cast,
            choices=option.choices,
            required=option.required,
            default=default,
            help=help_text,
            metavar=option.flag.strip("-").replace("-", "_").upper() if option.choices is None else None,
        )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="logging level (default: INFO)")
    return parser


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    """Turn parsed arguments into a :class:`PrepareConfig` (validation errors name the value)."""
    values = vars(args)
    fields: dict[str, Any] = {}
    for option in prepare_options():
        *groups, key = option.path.split(".")
        target = fields
        for group in groups:
            target = target.setdefault(group, {})
        target[key] = values[option.dest]
    nested = {name: type(getattr(_DEFAULTS, name))(**fields.pop(name)) for name in NESTED_FLAG_PREFIX}
    return PrepareConfig(**fields, **nested)


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
    prompt_side = sum(r.reason == "no_video" for r in rejected)
    if prompt_side:
        log.warning(
            "%d of %d entries of %s are WISA prompt-side annotation records (en_caption, no video), rejected "
            "as no_video: such a file is a prompt file for `pila predict`, not training annotations",
            prompt_side, len(entries), config.annotations,
        )  # fmt: skip
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


class NoUsableRecordsError(ValueError):
    """Every record of the annotation file was rejected: there is nothing to cache."""


REJECTION_ADVICE: dict[str, str] = {
    "malformed_record": "that --annotations is a WISA-format annotation file (a JSON list of records, or JSON Lines)",
    "missing_field": "that the records have the fields WISA-80K's have (video_name, captions, duration, …)",
    "malformed_field": "the records' field types (see rejected.jsonl for each one)",
    "duplicate_record": "for repeated video_name values in --annotations",
    "duration_out_of_range": "--min-duration / --max-duration ('none' lifts a bound)",
    "too_many_text_boxes": "--max-text-boxes ('none' lifts the filter)",
    "low_motion": "--min-motion-score ('none' lifts the filter)",
    "low_quality": "--min-quality ('none' lifts the filter)",
    "unlabeled": "--category-map (or --llm-labeler): no record got a category",
    "video_missing": "--videos (the folder with the <N>.zip shards, their per-shard folders or the .mp4 files) and that the video names match",
    "video_empty": "the video files: they are empty",
    "video_undecodable": "the video files: they are truncated, corrupt or not videos",
    "video_too_short": "--num-frames / --fps, or --short-clip loop",
}
"""What to check for each rejection reason when nothing is left."""


def no_usable_records_message(config: PrepareConfig, num_entries: int, counts: Counter, rejected_path: Path) -> str:
    """Why ``pila prepare`` has nothing to cache: the rejections per reason and what to check."""
    reasons = "; ".join(f"{reason}: {count}" for reason, count in counts.most_common()) or "the annotation file is empty"
    checks = "; ".join(REJECTION_ADVICE[r] for r, _ in counts.most_common() if r in REJECTION_ADVICE)
    return (
        f"no usable records: all {num_entries} entries of {config.annotations} were rejected ({reasons}); "
        f"details in {rejected_path}. Check {checks or 'the annotation file'}"
    )


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


def _shard_index(path: Path) -> int | None:
    """The k of ``shard-k.…`` or of its temporary ``.shard-k.…`` (None for other names)."""
    match = re.match(r"\.?shard-(\d+)\.", path.name)
    return int(match.group(1)) if match else None


def _clean_out_dir(
    out: Path, manifest: dict[str, Any] | None, overwrite: bool, expected: dict[str, Any], ranks: Ranks = Ranks()
) -> dict[str, Any] | None:
    """Leftover temporaries go; a manifest with other settings is an error (or, with overwrite, goes).

    Each rank touches the files of its own shards only (rank 0 the manifest's too), so
    ranks starting at different moments never remove each other's work.
    """
    for leftover in out.glob(".shard-*"):
        index = _shard_index(leftover)
        if index is not None and ranks.owns(index):
            leftover.unlink(missing_ok=True)
    if ranks.rank == 0:
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
    for shard in [*out.glob("shard-*.safetensors"), *out.glob(f"shard-*{DONE_SUFFIX}")]:
        index = _shard_index(shard)
        if index is not None and ranks.owns(index):
            shard.unlink(missing_ok=True)
    if ranks.rank == 0:
        (out / MANIFEST_NAME).unlink(missing_ok=True)
    return None


DONE_SUFFIX = ".done.json"
"""Suffix of a shard's completion marker, ``shard-k.done.json``: the shard's manifest entry and
the key of the run that wrote it. Every rank writes one per finished shard; rank 0 turns them
into the manifest and removes them; a resumed run keeps the shards whose markers hold its key."""
POLL_SECONDS = 1.0
"""How often rank 0 looks for the other ranks' completion markers (ours)."""


def _run_key(expected: dict[str, Any]) -> str:
    """What a completion marker must hold to count for this run: a hash of the cache's settings."""
    return hashlib.sha256(json.dumps(expected, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _marker_path(out: Path, shard: int) -> Path:
    return out / (shard_name(shard).removesuffix(".safetensors") + DONE_SUFFIX)


def _read_marker(out: Path, shard: int, key: str) -> dict[str, Any] | None:
    """The completion marker of ``shard`` when it belongs to this run (``key``), else None."""
    try:
        marker = json.loads(_marker_path(out, shard).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) and marker.get("key") == key and marker.get("entry", {}).get("index") == shard else None


def _write_marker(out: Path, shard: int, key: str, entry: dict[str, Any], **extra: Any) -> None:
    write_json_atomic(_marker_path(out, shard), {"key": key, "entry": entry, **extra})


def prepare_cache(
    config: PrepareConfig,
    labeler: Labeler | None = None,
    backbone: Any | None = None,
    on_shard_written: Callable[[int, dict[str, Any]], None] | None = None,
    ranks: Ranks = Ranks(),
) -> PrepareSummary:
    """Build (or finish) the cache described by ``config``, or this rank's share of it.

    With several ranks, each builds the shards it owns (:meth:`Ranks.owns`) and marks each
    one done (``shard-k.done.json``); rank 0 then waits for every shard's marker and writes
    the manifest. Every rank must be given the same ``config``.

    Args:
        config: the run's settings.
        labeler: optional external labeler replacing the category map (see :mod:`relabel`).
        backbone: an already loaded :class:`~pila.backbone.WanBackbone` to use instead of
            loading ``config.backbone`` (it must be that backbone).
        on_shard_written: called with (shard index, manifest entry) after each shard and
            its completion marker (one process: and the manifest that lists it) are on disk.
        ranks: which process this is (default: the only one).

    Returns:
        The run's :class:`PrepareSummary` (ranks other than 0: the shards they wrote and
        reused, with no clip counts).

    Raises:
        CacheMismatchError: ``config.out`` holds a cache with other settings (and not ``overwrite``).
        FileNotFoundError: the annotation file, videos folder or backbone is missing.
    """
    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    records, record_rejections, num_entries, category_map = load_records(config, labeler)
    if not records:
        _write_rejected(out / REJECTED_NAME, [r.to_json() for r in record_rejections])
        counts = Counter(r.reason for r in record_rejections)
        raise NoUsableRecordsError(no_usable_records_message(config, num_entries, counts, out / REJECTED_NAME))
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
    key = _run_key(expected)
    previous = _clean_out_dir(out, read_manifest(out), config.overwrite, expected, ranks)
    listed = {entry["index"]: entry for entry in (previous or {}).get("shards", [])}
    num_shards = math.ceil(len(records) / config.shard_size)
    # This rank's finished shards: listed in the manifest or marked done by this run's settings.
    done: dict[int, dict[str, Any]] = {}
    for k in filter(ranks.owns, range(num_shards)):
        marker = _read_marker(out, k, key)
        entry = marker["entry"] if marker else listed.get(k)
        if entry is None:
            continue
        problem = check_shard(out, entry)
        if problem is None:
            done[k] = entry
            if marker is None:
                _write_marker(out, k, key, entry)
        else:
            log.warning("shard %s %s; recomputing it", out / entry["file"], problem)
    pending = [k for k in range(num_shards) if ranks.owns(k) and k not in done]
    for stray in [*out.glob("shard-*.safetensors"), *out.glob(f"shard-*{DONE_SUFFIX}")]:
        index = _shard_index(stray)
        if index is not None and ranks.owns(index) and index not in done:
            stray.unlink()  # a shard no finished run listed: its run died before committing it

    manifest = {
        **expected,
        "complete": False,
        "backbone": backbone_identity(config.backbone),
        "command": config.command(),
        "num_entries": num_entries,
        "num_records": len(records),
        "num_shards": num_shards,
        # other ranks' shards stay listed as they were, so a rank starting later still finds them
        "shards": sorted([*done.values(), *(e for k, e in listed.items() if not ranks.owns(k))], key=lambda e: e["index"]),
    }
    for field_name in ("latent_shape", "text_dim"):
        if previous and field_name in previous:
            manifest[field_name] = previous[field_name]
    shards_written = 0
    if ranks.world_size > 1:
        log.info("rank %d of %d: %d shards to build, %d done", ranks.rank, ranks.world_size, len(pending), len(done))
        if ranks.rank == 0:
            write_manifest(out, manifest)  # unfinished: the data modules say so, not "missing"
    if pending:
        device = resolve_device(config.device, ranks.local_rank)
        if backbone is None:
            from pila.backbone import WanBackbone
            from pila.backbone.wan import ENCODING_COMPONENTS

            backbone = WanBackbone.from_pretrained(config.backbone, dtype=config.dtype, device=device, components=ENCODING_COMPONENTS)
        else:
            backbone.to(device)
        latent_shape = backbone.latent_shape(config.clip.num_frames, config.clip.height, config.clip.width)
        manifest.update(latent_shape=list(latent_shape), text_dim=backbone.text_dim)
        if ranks.world_size == 1:
            write_manifest(out, manifest)
        shards_written = _encode_pending(config, records, videos, backbone, pending, manifest, on_shard_written, key, ranks)
    if ranks.rank != 0:
        return PrepareSummary(
            num_entries, len(records), 0, {}, {}, shards_written=shards_written,
            shards_reused=len(done), seconds=time.perf_counter() - start,
        )  # fmt: skip
    if ranks.world_size > 1:
        _gather_shards(out, manifest, key)

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
    if not kept_ids:
        _write_rejected(out / REJECTED_NAME, all_rejections)
        raise NoUsableRecordsError(no_usable_records_message(config, num_entries, Counter(r["reason"] for r in all_rejections), out / REJECTED_NAME))
    manifest.update(
        complete=True,
        num_clips=len(kept_ids),
        rejected=counts,
        categories=category_counts,
    )
    write_manifest(out, manifest)
    _write_rejected(out / REJECTED_NAME, all_rejections)
    write_json_atomic(out / RELABELED_NAME, relabeled_annotation(r for r in records if r.id in kept_ids), indent=None)
    for k in range(num_shards):  # the manifest lists every shard now
        _marker_path(out, k).unlink(missing_ok=True)

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


def _gather_shards(out: Path, manifest: dict[str, Any], key: str, poll_seconds: float = POLL_SECONDS) -> None:
    """Rank 0: wait until every shard has this run's completion marker; list them all in ``manifest``."""
    num_shards = manifest["num_shards"]
    entries: dict[int, dict[str, Any]] = {}
    last_report = time.monotonic()
    while True:
        for k in range(num_shards):
            if k in entries:
                continue
            marker = _read_marker(out, k, key)
            if marker is not None and (out / marker["entry"]["file"]).is_file():
                entries[k] = marker["entry"]
                for field_name in ("latent_shape", "text_dim"):
                    if field_name in marker:
                        manifest[field_name] = marker[field_name]
        missing = [k for k in range(num_shards) if k not in entries]
        if not missing:
            break
        if time.monotonic() - last_report > 60:
            log.info("waiting for %d shards from the other ranks (first: %s)", len(missing), shard_name(missing[0]))
            last_report = time.monotonic()
        time.sleep(poll_seconds)
    manifest["shards"] = [entries[k] for k in range(num_shards)]


def _encode_pending(
    config: PrepareConfig,
    records: Sequence[WisaRecord],
    videos: VideoIndex,
    backbone: Any,
    pending: Sequence[int],
    manifest: dict[str, Any],
    on_shard_written: Callable[[int, dict[str, Any]], None] | None,
    key: str,
    ranks: Ranks,
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
                _write_marker(out, shard, key, entry, latent_shape=manifest["latent_shape"], text_dim=manifest["text_dim"])
                manifest["shards"] = sorted([*manifest["shards"], entry], key=lambda e: e["index"])
                if ranks.world_size == 1:
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


def _run_rank(config: PrepareConfig, ranks: Ranks, log_level: str) -> int:
    """One process of ``pila prepare`` (spawned by ``--num-processes``, or the only one)."""
    logger = logging.getLogger("pila")
    if not logger.handlers:  # a spawned process: give the project's messages a handler
        logs.configure(fmt=f"[rank {ranks.rank}] %(message)s" if ranks.world_size > 1 else "%(message)s")
    logger.setLevel(getattr(logging, log_level))
    try:
        if config.relabel_only:
            if ranks.rank == 0:
                relabel_only(config)
        else:
            prepare_cache(config, ranks=ranks)
    except (FileNotFoundError, ValueError, KeyError) as err:
        log.error("%s", err)
        return 2
    return 0


def _spawned_rank(config: PrepareConfig, ranks: Ranks, log_level: str) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks.world_size))
    raise SystemExit(_run_rank(config, ranks, log_level))


def spawn_ranks(config: PrepareConfig, log_level: str = "INFO") -> int:
    """Run ``config.num_processes`` ranks of ``pila prepare`` as processes on this machine.

    Returns the first non-zero exit status (the other processes are then stopped), else 0.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    world = config.num_processes
    processes = [
        context.Process(target=_spawned_rank, args=(config, Ranks(rank, world, rank), log_level), name=f"pila-prepare-{rank}")
        for rank in range(world)
    ]
    for process in processes:
        process.start()
    status = 0
    try:
        while any(p.is_alive() for p in processes):
            failed = [p for p in processes if p.exitcode not in (None, 0)]
            if failed:
                status = failed[0].exitcode
                break
            time.sleep(0.2)
        status = status or next((p.exitcode for p in processes if p.exitcode), 0)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
    if status:
        log.error("a pila prepare process failed (exit status %s); run the same command again to resume", status)
        return 2 if status > 0 else 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pila prepare``; returns the exit status."""
    args = build_parser().parse_args(argv)
    # `pila` (pila.cli) gives the project's logger its handler; only the level is ours to set.
    logging.getLogger("pila").setLevel(getattr(logging, args.log_level))
    try:
        config = config_from_args(args)
        ranks = Ranks.from_environment()
    except (FileNotFoundError, ValueError, KeyError) as err:
        log.error("%s", err)
        return 2
    if ranks.world_size > 1:
        if config.num_processes > 1:
            log.warning("--num-processes %d ignored: the launcher started %d processes", config.num_processes, ranks.world_size)
        return _run_rank(config, ranks, args.log_level)
    if config.num_processes > 1:
        return spawn_ranks(config, args.log_level)
    return _run_rank(config, ranks, args.log_level)


if __name__ == "__main__":
    raise SystemExit(main())
