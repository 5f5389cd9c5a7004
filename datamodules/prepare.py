"""``pila prepare``: encode a WISA-format dataset once into the training cache.

Reads the annotation file, parses and filters the records (``rejected.jsonl`` says why
each skipped one was skipped), relabels them into the eight categories, then for each
record decodes its clip and computes its flow target (in ``--workers`` DataLoader
workers) and runs the frozen VAE and text encoder over batches (in the main process, on
the GPU when there is one; :mod:`.shard_writer`). Results go to safetensors shards with a
manifest (layout in :mod:`pila.datamodules.cache`). A run that is killed resumes where it
stopped: finished shards are checked against their checksums and kept. ``--relabel-only``
stops after relabeling (prompt-side records included): it writes the relabeled annotation
and prints the category distribution.

The command line is :mod:`.prepare_config`'s (jsonargparse, from :class:`PrepareConfig`);
several processes share the shards as :mod:`.ranks` says; what makes a cache folder
reusable is in :mod:`.cache_identity`; why a record was skipped, and what to check when
none is left, in :mod:`.rejections`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from argparse import ArgumentError
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pila import logs
from pila.categories import CATEGORIES
from pila.io import write_json_atomic
from pila.parser.category_map import CategoryMap

from .cache import (
    REJECTED_NAME,
    RELABELED_NAME,
    check_shard,
    read_manifest,
    read_shard_metadata,
    write_manifest,
)
from .cache_identity import backbone_identity, check_out_dir
from .prepare_config import PrepareConfig, parse_command_line
from .ranks import (
    DONE_SUFFIX,
    Ranks,
    gather_shards,
    marker_path,
    read_marker,
    run_key,
    shard_index,
    spawn_ranks,
    write_marker,
)
from .records import WisaRecord, load_annotations, select_records
from .rejections import (
    NoUsableRecordsError,
    Rejection,
    nothing_kept_message,
    rejection_counts,
    write_rejected,
)
from .relabel import (
    Labeler,
    category_distribution,
    format_distribution,
    parser_labeler,
    relabel_records,
    relabeled_annotation,
)
from .shard_writer import encode_shards, load_encoders, torch_threads
from .sources import VideoIndex

log = logging.getLogger(__name__)


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


def load_records(
    config: PrepareConfig, labeler: Labeler | None = None
) -> tuple[list[WisaRecord], list[Rejection], int, CategoryMap]:
    """Parse, filter and relabel the annotation file.

    With ``config.relabel_only`` WISA's prompt-side records are relabeled too; otherwise,
    naming no video, they are rejected as ``no_video``.

    Returns:
        (kept records, rejections, number of annotation entries, the category map).
    """
    category_map = CategoryMap.load(config.category_map)
    if labeler is None and config.llm_labeler is not None:
        from pila.parser import LLMPromptParser

        parser = LLMPromptParser(
            config.llm_labeler, cache_file=config.llm_labeler_cache,
            category_map=config.category_map,
        )  # fmt: skip
        labeler = parser_labeler(parser)
    entries = load_annotations(config.annotations)
    records, rejected = select_records(entries, config.filters, prompts=config.relabel_only)
    prompt_side = sum(r.reason == "no_video" for r in rejected)
    if prompt_side:
        log.warning(
            "%d of %d entries of %s are WISA prompt-side annotation records (en_caption, no "
            "video), rejected as no_video: such a file is a prompt file for `pila predict` "
            "(`pila prepare --relabel-only` labels it), not training annotations",
            prompt_side, len(entries), config.annotations,
        )  # fmt: skip
    records, unlabeled = relabel_records(records, category_map, labeler)
    rejected = sorted(rejected + unlabeled, key=lambda r: r.index)
    if config.limit is not None:
        records = records[: config.limit]
    return records, rejected, len(entries), category_map


def relabel_only(config: PrepareConfig, labeler: Labeler | None = None) -> PrepareSummary:
    """Write the relabeled annotation and ``rejected.jsonl``; print the category distribution.

    Raises:
        NoUsableRecordsError: no record kept a label (``rejected.jsonl`` is written).
    """
    start = time.perf_counter()
    records, rejected, num_entries, _ = load_records(config, labeler)
    out = Path(config.out)
    if not records:
        _nothing_kept(config, num_entries, [r.to_json() for r in rejected])
    write_rejected(out / REJECTED_NAME, [r.to_json() for r in rejected])
    target = Path(config.relabeled_out) if config.relabeled_out else out / RELABELED_NAME
    write_json_atomic(target, relabeled_annotation(records), indent=None)
    categories = category_distribution(records)
    sys.stdout.write(format_distribution(categories, len(records)) + "\n")
    log.info(
        "wrote %d relabeled records to %s (%d rejected, see %s)",
        len(records), target, len(rejected), out / REJECTED_NAME,
    )  # fmt: skip
    return PrepareSummary(
        num_entries, len(records), 0, rejection_counts(rejected), categories,
        seconds=time.perf_counter() - start,
    )  # fmt: skip


def _reusable_shards(
    out: Path, listed: dict[int, dict[str, Any]], num_shards: int, key: str, ranks: Ranks
) -> dict[int, dict[str, Any]]:
    """This rank's finished shards (listed in the manifest or marked done by this run), checked
    against their checksums; shard files no finished run listed are removed."""
    done: dict[int, dict[str, Any]] = {}
    for k in filter(ranks.owns, range(num_shards)):
        marker = read_marker(out, k, key)
        entry = marker["entry"] if marker else listed.get(k)
        problem = None if entry is None else check_shard(out, entry)
        if entry is not None and problem is None:
            done[k] = entry
            if marker is None:
                write_marker(out, k, key, entry)
        elif entry is not None:
            log.warning("shard %s %s; recomputing it", out / entry["file"], problem)
    for stray in [*out.glob("shard-*.safetensors"), *out.glob(f"shard-*{DONE_SUFFIX}")]:
        index = shard_index(stray)
        if index is not None and ranks.owns(index) and index not in done:
            stray.unlink()  # a shard no finished run listed: its run died before committing it
    return done


def prepare_cache(
    config: PrepareConfig,
    labeler: Labeler | None = None,
    backbone: Any | None = None,
    on_shard_written: Callable[[int, dict[str, Any]], None] | None = None,
    ranks: Ranks | None = None,
) -> PrepareSummary:
    """Build (or finish) the cache described by ``config``, or this rank's share of it.

    With several ranks, each builds the shards it owns (:meth:`Ranks.owns`) and marks each
    one done (``shard-k.done.json``); rank 0 then waits for every shard's marker and writes
    the manifest. Every rank must be given the same ``config``.

    Args:
        config: the run's settings.
        labeler: optional external labeler replacing the category map (see :mod:`.relabel`).
        backbone: an already loaded :class:`~pila.backbone.WanBackbone` to use instead of
            loading ``config.backbone`` (it must be that backbone).
        on_shard_written: called with (shard index, manifest entry) after each shard and
            its completion marker (one process: and the manifest that lists it) are on disk.
        ranks: which process this is (None: the only one).

    Returns:
        The run's :class:`PrepareSummary` (ranks other than 0: the shards they wrote and
        reused, with no clip counts).

    Raises:
        CacheMismatchError: ``config.out`` holds a cache with other settings (and not
            ``overwrite``).
        FileNotFoundError: the annotation file, videos folder or backbone is missing.
        NoUsableRecordsError: no record is left to cache (``rejected.jsonl`` says why).
    """
    start, ranks, out = time.perf_counter(), ranks or Ranks(), Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    records, record_rejections, num_entries, category_map = load_records(config, labeler)
    if not records:
        _nothing_kept(config, num_entries, [r.to_json() for r in record_rejections])
    videos = VideoIndex.scan(config.videos)
    log.info(
        "%d annotation entries: %d kept, %d rejected; %d videos indexed under %s",
        num_entries, len(records), len(record_rejections), len(videos), config.videos,
    )  # fmt: skip
    # 1. what this cache is, and what an earlier run left of it
    expected = config.identity(category_map, records)
    key = run_key(expected)
    previous = check_out_dir(out, read_manifest(out), config.overwrite, expected, ranks) or {}
    listed = {entry["index"]: entry for entry in previous.get("shards", [])}
    num_shards = math.ceil(len(records) / config.shard_size)
    done = _reusable_shards(out, listed, num_shards, key, ranks)
    pending = [k for k in range(num_shards) if ranks.owns(k) and k not in done]
    others = [e for k, e in listed.items() if not ranks.owns(k)]  # a later rank still finds them
    manifest = {
        **expected, "complete": False, "backbone": backbone_identity(config.backbone),
        "command": config.command(), "num_entries": num_entries, "num_records": len(records),
        "num_shards": num_shards,
        "shards": sorted([*done.values(), *others], key=lambda e: e["index"]),
        **{f: previous[f] for f in ("latent_shape", "text_dim") if f in previous},
    }  # fmt: skip
    if ranks.world_size > 1:
        log.info(
            "rank %d of %d: %d shards to build, %d done",
            ranks.rank, ranks.world_size, len(pending), len(done),
        )  # fmt: skip
        if ranks.rank == 0:
            write_manifest(out, manifest)  # unfinished: the data modules say so, not "missing"
    # 2. this rank's missing shards, encoded with the same thread count on every rank
    written = 0
    if pending:
        backbone = load_encoders(config, backbone, ranks)
        latent_shape = backbone.latent_shape(
            config.clip.num_frames, config.clip.height, config.clip.width
        )
        manifest.update(latent_shape=list(latent_shape), text_dim=backbone.text_dim)
        if ranks.world_size == 1:
            write_manifest(out, manifest)
        with torch_threads(config.encode_threads):
            written = encode_shards(
                config, records, videos, backbone, pending, manifest, key, ranks, on_shard_written
            )
    if ranks.rank != 0:
        seconds = time.perf_counter() - start
        return PrepareSummary(num_entries, len(records), 0, {}, {}, written, len(done), seconds)
    # 3. rank 0: every shard listed, the run's rejections and labels gathered
    if ranks.world_size > 1:
        gather_shards(out, manifest, key)
    summary = _complete(config, manifest, records, record_rejections)
    summary.shards_written, summary.shards_reused = written, len(done)
    summary.seconds = time.perf_counter() - start
    _log_summary(summary, out)
    return summary


def _nothing_kept(
    config: PrepareConfig, num_entries: int, rejections: list[dict[str, Any]]
) -> None:
    """Write ``rejected.jsonl`` and raise :class:`NoUsableRecordsError` with the reasons."""
    path = Path(config.out) / REJECTED_NAME
    write_rejected(path, rejections)
    counts = Counter(r["reason"] for r in rejections)
    raise NoUsableRecordsError(
        nothing_kept_message(config.annotations, num_entries, counts, path)
    )


def _complete(
    config: PrepareConfig, manifest: dict[str, Any], records: Sequence[WisaRecord],
    record_rejections: Sequence[Rejection],
) -> PrepareSummary:  # fmt: skip
    """Every shard is on disk: write the complete manifest, ``rejected.jsonl`` (record and
    decode rejections) and the relabeled annotation of the cached clips."""
    out = Path(config.out)
    kept_ids: set[str] = set()
    rejections = [r.to_json() for r in record_rejections]
    categories: Counter[str] = Counter()
    for entry in manifest["shards"]:
        meta = read_shard_metadata(out / entry["file"])
        rejections += meta["rejected"]
        for clip in meta["clips"]:
            kept_ids.add(clip["id"])
            categories.update(clip["labels"])
    rejections.sort(key=lambda r: r["index"])
    if not kept_ids:
        _nothing_kept(config, manifest["num_entries"], rejections)
    counts = dict(Counter(r["reason"] for r in rejections).most_common())
    category_counts = {c: categories.get(c, 0) for c in CATEGORIES}
    manifest.update(
        complete=True, num_clips=len(kept_ids), rejected=counts, categories=category_counts
    )
    write_manifest(out, manifest)
    write_rejected(out / REJECTED_NAME, rejections)
    kept = relabeled_annotation(r for r in records if r.id in kept_ids)
    write_json_atomic(out / RELABELED_NAME, kept, indent=None)
    for k in range(manifest["num_shards"]):  # the manifest lists every shard now
        marker_path(out, k).unlink(missing_ok=True)
    return PrepareSummary(
        manifest["num_entries"], len(records), len(kept_ids), counts, category_counts
    )


def _log_summary(summary: PrepareSummary, out: Path) -> None:
    rate = summary.num_clips / summary.seconds if summary.seconds > 0 else 0.0
    log.info(
        "cache %s: %d clips from %d annotation entries (%d shards written, %d reused) "
        "in %.1f s (%.2f clips/s)",
        out, summary.num_clips, summary.num_entries, summary.shards_written,
        summary.shards_reused, summary.seconds, rate,
    )  # fmt: skip
    total = sum(summary.rejected.values())
    if total:
        log.info("rejected %d (details in %s):", total, out / REJECTED_NAME)
        for reason, count in summary.rejected.items():
            log.info("  %-22s %d", reason, count)
    log.info("%s", format_distribution(summary.categories, summary.num_clips))


def run_rank(config: PrepareConfig, ranks: Ranks, log_level: str) -> int:
    """One process of ``pila prepare`` (spawned by ``--num-processes``, or the only one)."""
    logger = logging.getLogger("pila")
    if not logger.handlers:  # a spawned process: give the project's messages a handler
        logs.configure(
            fmt=f"[rank {ranks.rank}] %(message)s" if ranks.world_size > 1 else "%(message)s"
        )
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pila prepare``; returns the exit status."""
    try:
        config, log_level = parse_command_line(sys.argv[1:] if argv is None else argv)
        ranks = Ranks.from_environment()
    except (ArgumentError, FileNotFoundError, ValueError, KeyError) as err:
        log.error(
            "pila prepare: %s (pila prepare --help lists the options)", " ".join(str(err).split())
        )
        return 2
    # `pila` (pila.cli) gives the project's logger its handler; only the level is ours to set.
    logging.getLogger("pila").setLevel(getattr(logging, log_level))
    if ranks.world_size > 1:
        if config.num_processes > 1:
            log.warning(
                "--num-processes %d ignored: the launcher started %d processes",
                config.num_processes, ranks.world_size,
            )  # fmt: skip
        return run_rank(config, ranks, log_level)
    if config.num_processes > 1:
        return spawn_ranks(run_rank, config, config.num_processes, log_level)
    return run_rank(config, ranks, log_level)


if __name__ == "__main__":
    raise SystemExit(main())
