"""Prompts for ``pila predict``: work items, the per-rank split and :class:`PromptDataModule`.

The prompt file is read by a reader of :mod:`pila.generation.benchmarks` (``format``;
``"auto"`` recognises the benchmarks' files by their content and otherwise goes by the
extension, and the log says which). Rows repeating an earlier caption in a format whose
evaluator pairs videos with captions (VideoPhy, VideoPhy-2) are folded into the first.

Augmented prompts (``augmented_file``): a second file, one prompt per line in the same
order, whose text is generated from while each record's own text stays the name the
evaluator looks for (VBench-2.0 asks for videos from its augmented lists to be named by
the short prompts).

Every problem with a prompt file is a :class:`~pila.generation.records.PromptFileError`
naming the file, the row and the fix, raised in ``setup()`` before any video is generated.

Work is split into :class:`PredictItem` s, one per (prompt, sample). Sample ``k`` of the
prompt with index ``i`` gets seed ``record.seed + k`` when the file gives the prompt a
seed, else ``seed + i·N + k`` (N videos per prompt), so every video has its own seed and
``pila.generate``'s "prompt i gets seed + i" holds for N = 1.

Several GPUs: :func:`shard_indices` gives rank ``r`` of ``W`` the items ``r, r + W, …``
(no padding, so no duplicates and no gaps), wrapped in :class:`RankShardSampler` so
Lightning keeps it as is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from pila.generation.benchmarks import prompt_formats, read_prompts
from pila.generation.readers import INLINE, ReadOptions, line_record, pair_augmented
from pila.generation.records import PredictItem, PromptRecord

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------- work items
def build_items(
    records: Sequence[PromptRecord], videos_per_prompt: int = 1, seed: int = 0
) -> list[PredictItem]:
    """One :class:`PredictItem` per (record, sample), in file order.

    Seeds: ``record.seed + k`` when the record has a seed, else ``seed + index·N + k``.
    """
    if videos_per_prompt < 1:
        raise ValueError(f"videos_per_prompt must be at least 1, got {videos_per_prompt}")
    items = []
    for record in records:
        for k in range(videos_per_prompt):
            own = record.seed
            base = own if own is not None else seed + record.index * videos_per_prompt
            items.append(PredictItem(record=record, sample=k, seed=base + k))
    return items


def fold_duplicates(records: Sequence[PromptRecord]) -> tuple[list[PromptRecord], int]:
    """One record per distinct (prompt, evaluator caption), first occurrence first.

    VideoPhy's test CSV lists each caption once per source model (3,360 rows for 344
    captions); its evaluator pairs videos with captions, so each caption is generated once
    (``videos_per_prompt`` times). Indices are renumbered over the kept records.

    Returns:
        (kept records, number of rows folded into an earlier one).
    """
    seen: set[tuple[str, str]] = set()
    kept: list[PromptRecord] = []
    for record in records:
        key = (record.prompt, record.evaluator_caption)
        if key not in seen:
            seen.add(key)
            kept.append(replace(record, index=len(kept)))
    return kept, len(records) - len(kept)


def shard_indices(num_items: int, rank: int, world_size: int) -> list[int]:
    """Rank ``rank`` of ``world_size`` takes items ``rank, rank + W, rank + 2W, …``.

    The shares are disjoint and cover ``range(num_items)``; ranks differ by at most one
    item. Nothing is padded or repeated.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
    if num_items < 0:
        raise ValueError(f"num_items must be non-negative, got {num_items}")
    return list(range(rank, num_items, world_size))


class PromptItemDataset(Dataset):
    """A map-style dataset over :class:`PredictItem` s."""

    def __init__(self, items: Sequence[PredictItem]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> PredictItem:
        return self.items[index]


class RankShardSampler(DistributedSampler):
    """This rank's share (:func:`shard_indices`), minus the items ``skip`` says are done.

    A ``DistributedSampler`` subclass, so Lightning neither wraps nor replaces it. The
    share is fixed before filtering, so what one rank has finished never moves work
    between ranks.

    Args:
        dataset: the items.
        rank: this process's global rank.
        world_size: number of processes.
        skip: ``item → True`` for items that need no work (complete outputs).
    """

    def __init__(
        self,
        dataset: PromptItemDataset,
        rank: int,
        world_size: int,
        skip: Callable[[PredictItem], bool] | None = None,
    ) -> None:
        super().__init__(
            dataset, num_replicas=world_size, rank=rank, shuffle=False, drop_last=False
        )
        share = shard_indices(len(dataset), rank, world_size)
        self.indices = [i for i in share if skip is None or not skip(dataset[i])]
        self.skipped = len(share) - len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def collate_items(items: list[PredictItem]) -> list[PredictItem]:
    """Batches stay lists of items (the prompts are strings, nothing to stack)."""
    return list(items)


class PromptDataModule(pl.LightningDataModule):
    """Prompts for ``pila predict``: one batch of :class:`PredictItem` s per step.

    Give exactly one of ``prompt_file`` and ``prompts``. On the command line the later
    source wins: ``--data.init_args.prompt_file F`` replaces a config's inline ``prompts``
    and ``--data.init_args.prompts [...]`` a config's ``prompt_file`` (``pila.cli``
    settles it before this class is built). A relative ``prompt_file`` or
    ``augmented_file`` written in a config file is looked up next to that config file
    first, then in the current directory; one typed on the command line is relative to
    the current directory.

    Args:
        prompt_file: the prompt file (see the module docstring for the formats).
        prompts: prompts written inline instead of a file (one record each).
        format: the file's format, a reader's name in :mod:`pila.generation.benchmarks`
            (``txt``, ``jsonl``, ``json``, ``csv``, ``phygenbench``, ``videophy``,
            ``videophy2``, ``vbench2``, ``wisa``, …); ``"auto"`` recognises a benchmark's
            file by its content, else goes by the extension.
        videos_per_prompt: N videos per prompt; None lets the writer's layout decide:
            VBench-2.0's own count per dimension under its layout (3; 20 for Diversity),
            else 1. [ours]
        seed: base seed; sample k of prompt i gets ``seed + i·N + k`` unless the file
            gives the prompt its own seed. [ours: any fixed seed]
        prompt_column: the field that conditions the generator (default ``prompt``, then
            ``caption``; ``en_caption`` for WISA prompt records).
        dimension: VBench-2.0 dimension for every prompt (default for ``vbench2``: the
            file's stem).
        augmented_file: rewritten prompts paired line by line with the prompt list (a
            folder of same-named files for a folder of VBench-2.0 lists): the videos are
            generated from them and still named and captioned by the original prompts.
        category_map: the category map file that labels WISA prompt records (None: the
            shipped one; a relative path is relative to the current directory).
        limit: only the first ``limit`` prompts (None: all).
        batch_size: items per predict step, generated in one pipeline call (frames equal to
            one at a time up to float rounding). [ours: 1, which gives them exactly]
    """

    def __init__(
        self,
        prompt_file: str | None = None,
        prompts: list[str] | None = None,
        format: str = "auto",
        videos_per_prompt: int | None = None,
        seed: int = 0,
        prompt_column: str | None = None,
        dimension: str | None = None,
        augmented_file: str | None = None,
        category_map: str | None = None,
        limit: int | None = None,
        batch_size: int = 1,
    ) -> None:
        super().__init__()
        if (prompt_file is None) == (prompts is None):
            raise ValueError(
                "PromptDataModule needs exactly one of prompt_file (a file) or prompts (a list); "
                + (
                    "got both: drop one (on the command line the later of the two wins)"
                    if prompts is not None else "got neither"
                )
            )
        if prompts is not None and not [p for p in prompts if p.strip()]:
            raise ValueError(
                "PromptDataModule: the prompts list is empty; give at least one non-empty prompt"
            )
        if videos_per_prompt is not None and videos_per_prompt < 1:
            raise ValueError(f"videos_per_prompt must be at least 1, got {videos_per_prompt}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1 (or None for all prompts), got {limit}")
        if format not in prompt_formats():
            raise ValueError(
                f"unknown prompt format {format!r}; valid: {', '.join(prompt_formats())}"
            )
        self.prompt_file = prompt_file
        self.prompts = prompts
        self.format = format
        self.videos_per_prompt = videos_per_prompt
        self.seed = seed
        self.prompt_column = prompt_column
        self.dimension = dimension
        self.augmented_file = augmented_file
        self.category_map = category_map
        self.limit = limit
        self.batch_size = batch_size
        self.records: list[PromptRecord] = []
        self.items: list[PredictItem] = []
        self.read_as: str | None = None
        """The format the prompt file was read as (``format``, or what ``auto`` detected)."""
        self.folded_duplicates = 0
        """Rows folded into an earlier one with the same caption (VideoPhy's repeated rows)."""
        self.skip: Callable[[PredictItem], bool] | None = None
        """Set by the prediction writer: items it already has complete outputs for."""
        # On a resumed run one rank may have nothing left while the others still work.
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def setup(self, stage: str | None = None) -> None:
        """Read and check the prompt file (every error is raised here, before generation)."""
        if self.records:
            return
        if self.prompts is not None:
            texts = [q for q in self.prompts if q.strip()]
            records = [line_record(i, p, self.dimension) for i, p in enumerate(texts)]
            if self.augmented_file is not None:
                records = pair_augmented(records, INLINE, self.augmented_file)
        else:
            options = ReadOptions(
                self.prompt_column, self.dimension, self.augmented_file, self.category_map
            )
            read = read_prompts(self.prompt_file, self.format, options)
            records, self.read_as = read.records, read.format
            if read.reader.folds_duplicates:
                records, self.folded_duplicates = fold_duplicates(records)
        if self.folded_duplicates:
            log.info(
                "%s: %d rows repeat an earlier caption and were folded; "
                "%d distinct captions remain",
                self.prompt_file, self.folded_duplicates, len(records),
            )  # fmt: skip
        self.records = records[: self.limit] if self.limit is not None else records
        self.items = build_items(self.records, self.videos_per_prompt or 1, self.seed)
        source = self.prompt_file if self.prompt_file is not None else "the inline list"
        # None: the writer sets the count per prompt
        count = self.videos_per_prompt or "the layout's count of"
        log.info("%d prompts × %s videos from %s", len(self.records), count, source)

    def summary(self) -> dict[str, Any]:
        """What was read, for a run's summary: source, counts and folded duplicate rows."""
        return {
            "prompt_file": self.prompt_file,
            "augmented_file": self.augmented_file,
            "format": self.format,
            "read_as": self.read_as,
            "prompts": len(self.records),
            "videos_per_prompt": self.videos_per_prompt,
            "videos": len(self.items),
            "folded_duplicates": self.folded_duplicates,
        }

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        """Batches are work items (strings and ints): nothing to move."""
        return batch

    def predict_dataloader(self) -> DataLoader:
        if not self.items:
            self.setup("predict")
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        dataset = PromptItemDataset(self.items)
        sampler = RankShardSampler(dataset, rank, world, skip=self.skip)
        if sampler.skipped:
            log.info(
                "rank %d: %d of its videos are already complete and are skipped",
                rank, sampler.skipped,
            )  # fmt: skip
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=collate_items
        )


__all__ = [
    "PromptDataModule",
    "PromptItemDataset",
    "RankShardSampler",
    "build_items",
    "collate_items",
    "fold_duplicates",
    "shard_indices",
]
