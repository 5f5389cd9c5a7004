"""Encode a WISA-format dataset once into the training cache.

Reads the annotation file, parses and filters the records (rejected.jsonl says why each
skipped one was skipped), relabels them into the eight categories, then decodes each
record's clip, computes its flow target and runs the frozen VAE and text encoder over
batches. Results go to safetensors shards with a manifest (pila/datamodules/README.md). A
killed run resumes where it stopped. --relabel-only stops after relabeling: it writes the
relabeled annotation (each kept record with its pila_labels) and prints the category
distribution.

Every option has a short spelling beside the one listed below: --num-frames for
--clip.num_frames, --min-duration for --filters.min_duration, --flow-winsize for
--flow.winsize, --relabel-only (no value) for --relabel_only true; 'none' is null.

  pila prepare --annotations data/wisa-80k.json --videos data/videos --out cache/wisa \\
      --backbone Wan-AI/Wan2.1-T2V-1.3B-Diffusers --workers 8
  pila prepare --annotations data/wisa-80k.json --out cache/wisa --relabel-only
  torchrun --nproc-per-node 8 -m pila prepare --annotations data/wisa-80k.json \\
      --videos data/videos --out cache/wisa --backbone Wan-AI/Wan2.1-T2V-1.3B-Diffusers
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

from pila.parser.category_map import CategoryMap

from .cache import CACHE_FORMAT, CACHE_VERSION
from .cache_identity import backbone_identity, records_sha256
from .clips import ClipConfig
from .flow_targets import FlowConfig
from .records import FilterConfig, WisaRecord


@dataclass(frozen=True)
class PrepareConfig:
    """Everything pila prepare needs (its command-line options).

    Args:
        annotations: WISA-format annotation file (a JSON list, e.g. data/wisa-80k.json, or
            JSON Lines).
        out: cache folder to write (shards, manifest.json, rejected.jsonl).
        videos: folder with the videos: WISA's <N>.zip shards, their unpacked per-shard
            folders, or one flat folder of .mp4 files; not needed with relabel_only.
        backbone: diffusers Wan folder, hub id, "tiny" (the embedded preset) or "lab" (the
            shipped lab world).
        clip: frames, rate, size and the short-clip rule.
        filters: duration, text-box, motion and quality filters.
        flow: Farneback settings of the flow targets.
        category_map: category map JSON (None: the shipped pila/parser/category_map.json).
        max_sequence_length: text tokens per prompt (512: Wan's pipeline's).
        shard_size: records per cache shard (our choice).
        workers: DataLoader workers that decode videos and compute flow (0: in the main
            process; 4 is our choice).
        encode_batch_size: clips per VAE / text-encoder call (our choice).
        encode_threads: torch's intra-op threads in every process while it decodes and
            encodes. The CPU's reductions split their sums by thread count, so the cached
            bytes depend on it, never on the launcher or the number of processes; recorded
            in the manifest (ours: 1, which costs nothing when the encoders run on a GPU).
        device: where the VAE and text encoder run (auto: CUDA when available).
        dtype: text-encoder dtype (auto: bf16 on CUDA, else float32; the VAE stays float32).
        storage_dtype: dtype of the cached float tensors.
        limit: encode only the first N kept records (None: all).
        overwrite: replace a cache built with other settings (default: stop with an error).
        relabel_only: only relabel: write the relabeled annotation and print the category
            distribution.
        relabeled_out: where relabel_only writes the relabeled annotation (None:
            OUT/annotations.relabeled.json).
        llm_labeler: local causal-LM folder: label records with the LLM-assisted prompt
            parser (pila.parser.LLMPromptParser) reading each caption, the category map as
            its fallback; its refined description is cached as pooled_refined (what
            conditions the adapter in training).
        llm_labeler_cache: JSON file keeping the LLM labeler's answers across runs (a
            resumed run does not ask again).
        num_processes: processes to spawn on this machine, each building every N-th shard
            on its own GPU (cuda:0 … cuda:N−1 when there are GPUs) with its own decoding
            workers (1, this process alone, is our choice). Under torchrun or srun the
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
    encode_threads: int = 1
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
        for name in ("max_sequence_length", "shard_size", "encode_batch_size", "encode_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.num_processes < 1:
            raise ValueError(f"num_processes must be ≥ 1, got {self.num_processes}")
        if self.workers < 0:
            raise ValueError(f"workers must be ≥ 0, got {self.workers}")
        for name in ("device", "dtype", "storage_dtype"):
            allowed = typing.get_args(typing.get_type_hints(PrepareConfig)[name])
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be ≥ 1 or None, got {self.limit}")
        if not self.relabel_only and not self.videos:
            raise ValueError(
                "videos is required (the folder with the .zip shards or .mp4 files) "
                "unless relabel_only"
            )

    def settings(self, category_map: CategoryMap) -> dict[str, Any]:
        """What the cached clips depend on; training reads a cache only when these match."""
        return {
            "clip": dataclasses.asdict(self.clip),
            "filters": dataclasses.asdict(self.filters),
            "flow": dataclasses.asdict(self.flow),
            "max_sequence_length": self.max_sequence_length,
            "category_map_sha256": category_map.sha256,
            "llm_labeler": None if self.llm_labeler is None else Path(self.llm_labeler).name,
            "backbone": backbone_identity(self.backbone)["fingerprint"],
        }

    def identity(self, category_map: CategoryMap, records: Sequence[WisaRecord]) -> dict[str, Any]:
        """What a cache built from ``records`` with these settings is: a folder whose manifest
        holds the same is resumed, another is refused (:func:`.cache_identity.check_out_dir`)."""
        return {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "settings": self.settings(category_map),
            "records_sha256": records_sha256(records),
            "shard_size": self.shard_size,
            "storage_dtype": self.storage_dtype,
            "encode_threads": self.encode_threads,
        }

    def command(self) -> str:
        """The ``pila prepare`` command line that builds this cache (short spellings)."""
        words = ["pila", "prepare"]
        for leaf in command_line_leaves():
            value = _get(self, leaf.path)
            if leaf.is_bool:
                words += [leaf.flag] if value else []
            elif leaf.default is dataclasses.MISSING or value != leaf.default:
                words += [leaf.flag, "none" if value is None else str(value)]
        return " ".join(shlex.quote(w) for w in words)


# ------------------------------------------------------------------ command line
SHORT_FLAG_PREFIX: dict[str, str] = {"clip": "", "filters": "", "flow": "flow-"}
"""Short-spelling prefix of each nested settings group of :class:`PrepareConfig`
(``--num-frames``, ``--min-duration``, ``--flow-winsize``)."""


class Leaf(typing.NamedTuple):
    """One option of ``pila prepare``: a leaf field of :class:`PrepareConfig`."""

    flag: str  # short spelling, ``--num-frames``
    path: str  # dotted key, ``clip.num_frames`` (the parser's ``--clip.num_frames``)
    default: Any  # dataclasses.MISSING when required
    optional: bool  # None allowed
    is_bool: bool


def command_line_leaves(
    cls: type = PrepareConfig, prefix: str = "", short: str = ""
) -> Iterator[Leaf]:
    """Every leaf field of :class:`PrepareConfig` (nested settings included), in order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from command_line_leaves(hint, f"{prefix}{f.name}.", SHORT_FLAG_PREFIX[f.name])
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        flag = "--" + short + f.name.replace("_", "-")
        optional = type(None) in typing.get_args(hint)
        yield Leaf(flag, prefix + f.name, default, optional, hint is bool)


def _get(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return config


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's examples kept as written."""


def build_parser() -> ArgumentParser:
    """``pila prepare``'s jsonargparse parser: one option per field of :class:`PrepareConfig`
    (help from the dataclasses' docstrings), ``--config FILE.yaml`` and ``--print_config``."""
    parser = ArgumentParser(
        prog="pila prepare",
        description=__doc__,
        formatter_class=_HelpFormatter,
        exit_on_error=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="settings from a YAML file")
    parser.add_class_arguments(PrepareConfig, fail_untyped=True)
    parser.add_argument(
        "--log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level",
    )  # fmt: skip
    return parser


NONE_WORDS = ("none", "null", "")
"""Values that mean None for an option that allows it."""


def canonical_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with every short spelling turned into the parser's (``--num-frames 9`` →
    ``--clip.num_frames=9``, a bare ``--relabel-only`` → ``--relabel_only=true``, ``none`` →
    ``null`` where None is allowed)."""
    leaves = {leaf.flag: leaf for leaf in command_line_leaves()}
    leaves |= {"--" + leaf.path: leaf for leaf in leaves.values()}
    argv = ["--log_level" if word == "--log-level" else word for word in argv]
    words: list[str] = []
    i = 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        i += 1
        leaf = leaves.get(flag)
        if leaf is None:
            words.append(argv[i - 1])
            continue
        if leaf.is_bool and not eq:
            bare = i == len(argv) or argv[i].startswith("-")
            value, i = ("true", i) if bare else (argv[i], i + 1)
        elif not eq:
            if i == len(argv):
                words.append("--" + leaf.path)  # the parser says the value is missing
                continue
            value, i = argv[i], i + 1
        if leaf.optional and value.strip().lower() in NONE_WORDS:
            value = "null"
        words.append(f"--{leaf.path}={value}")
    return words


def parse_command_line(argv: Sequence[str]) -> tuple[PrepareConfig, str]:
    """(the :class:`PrepareConfig`, the log level) of a ``pila prepare`` command line.

    Raises:
        argparse.ArgumentError: an unknown option or a value of the wrong type.
        ValueError: a value the dataclasses' validation refuses (the message names it).
    """
    parser = build_parser()
    namespace = parser.instantiate(parser.parse_args(canonical_argv(argv)))
    values = {f.name: namespace[f.name] for f in dataclasses.fields(PrepareConfig)}
    return PrepareConfig(**values), namespace.log_level
