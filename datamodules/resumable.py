"""Samplers that let a resumed training run continue at the same place in its data.

Lightning restores the step count and the position inside the epoch from a checkpoint,
but iterates a fresh dataloader from its start. :class:`ResumableSampler` draws each
epoch's order from ``(seed, epoch)`` alone and can start part-way through it, and
:func:`batches_completed_in_epoch` reads how far the restored run had come, so a run
killed after batch k of an epoch resumes with batch k + 1 of the same order.

It subclasses ``DistributedSampler`` (sharding by rank, ``set_epoch``), so Lightning
does not wrap it in another distributed sampler.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import torch.distributed as dist
from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    """Deterministic per-epoch order, sharded over ranks, that can skip a prefix.

    Args:
        dataset: the dataset (only its length is used).
        shuffle: draw a new permutation each epoch from ``seed + epoch``.
        seed: base seed of the permutations.
        drop_last: drop the tail that does not divide evenly over ranks (else it is padded
            by repeating the first indices, as ``DistributedSampler`` does).
        num_replicas: world size (default: from ``torch.distributed`` when initialised, else 1).
        rank: this process's rank (default: likewise, else 0).
    """

    def __init__(
        self,
        dataset: Sized,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self.start_index = 0

    def skip(self, num_samples: int) -> None:
        """Start the next iteration ``num_samples`` into this rank's order for the epoch.

        Skipping a whole epoch or more is ignored: a checkpoint written at the end of an
        epoch resumes at the start of the next one.
        """
        if num_samples < 0:
            raise ValueError(f"cannot skip a negative number of samples ({num_samples})")
        self.start_index = num_samples if num_samples < self.num_samples else 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self.start_index = self.start_index, 0
        return iter(indices[start:])

    def __len__(self) -> int:
        # The whole epoch, also while a skip is pending: Lightning sizes every epoch from the
        # length it reads once, and counts the skipped batches of a resumed epoch as done.
        return self.num_samples


def batches_completed_in_epoch(trainer) -> int:
    """Batches of the current epoch a restored run had already trained on (0 when not resuming).

    Args:
        trainer: the Lightning ``Trainer`` (``None`` outside a fit).
    """
    if trainer is None:
        return 0
    fit_loop = getattr(trainer, "fit_loop", None)
    if fit_loop is None or not fit_loop.restarting:
        return 0
    # Read before Lightning's own restart bookkeeping runs: a checkpoint written at the end of
    # a training batch has that batch `processed` but not yet `completed`.
    progress = fit_loop.epoch_loop.batch_progress.current
    return int(progress.processed)


def num_batches(num_samples: int, batch_size: int, drop_last: bool) -> int:
    """Batches a loader of ``num_samples`` makes."""
    return num_samples // batch_size if drop_last else math.ceil(num_samples / batch_size)
