"""Samplers that let a resumed training run continue at the same place in its data.

Lightning restores the step count and the position inside the epoch from a checkpoint,
but iterates a fresh dataloader from its start. :class:`ResumableSampler` draws each
epoch's order from ``(seed, epoch)`` alone and can start part-way through it, and
:func:`resume_position` reads which epoch the restored run was in and how far it had
come, so a run killed after batch k of an epoch resumes with batch k + 1 of the same order.

The epoch is set when the loader is built, not only by Lightning's ``set_epoch`` before
each epoch: Lightning creates the first iterator before that call, and a loader with
workers draws its first indices as soon as its iterator exists.

It subclasses ``DistributedSampler`` (sharding by rank, ``set_epoch``), so Lightning
does not wrap it in another distributed sampler.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

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
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
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

    def resume(
        self, epoch: int, batches_done: int, batch_size: int, drop_last_batch: bool = False
    ) -> None:
        """Start the next iteration where a run that trained ``batches_done`` batches of
        ``epoch`` goes on: that epoch's order after those batches, or the next epoch's order
        from its start when they were the whole epoch (a checkpoint written at its last batch).

        Args:
            epoch: the epoch in progress (:func:`resume_position`).
            batches_done: its batches already trained.
            batch_size: samples per batch on this rank.
            drop_last_batch: the loader drops a last, incomplete batch.
        """
        if epoch < 0 or batches_done < 0 or batch_size < 1:
            raise ValueError(
                f"cannot resume at epoch {epoch}, batch {batches_done} of size {batch_size}"
            )
        left = self.num_samples - batches_done * batch_size
        if batches_done and (left <= 0 or (drop_last_batch and left < batch_size)):
            epoch, batches_done = epoch + 1, 0
        self.set_epoch(epoch)
        self.skip(batches_done * batch_size)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self.start_index = self.start_index, 0
        return iter(indices[start:])

    def __len__(self) -> int:
        # The whole epoch, also while a skip is pending: Lightning sizes every epoch from the
        # length it reads once, and counts the skipped batches of a resumed epoch as done.
        return self.num_samples


def resume_position(trainer) -> tuple[int, int]:
    """The epoch a fit is in and how many of its batches a restored run had already trained
    on: ``(0, 0)`` outside a fit, ``(epoch, 0)`` at an epoch's start.

    Args:
        trainer: the Lightning ``Trainer`` (``None`` outside a fit).
    """
    fit_loop = getattr(trainer, "fit_loop", None) if trainer is not None else None
    if fit_loop is None:
        return 0, 0
    epochs = fit_loop.epoch_progress.current
    if not fit_loop.restarting or epochs.processed == epochs.ready:  # not inside an epoch
        return int(epochs.processed), 0
    return int(epochs.processed), batches_completed_in_epoch(trainer)


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


def reopen_stopped_epoch(checkpoint: dict[str, Any], trainer) -> None:
    """Record an epoch that a stop cut short as still open in a checkpoint being written.

    When ``max_steps`` (or ``trainer.should_stop``) ends a run inside an epoch, Lightning
    closes the epoch in its progress counters before ``on_train_end``, where
    ``ModelCheckpoint`` writes ``last.ckpt`` if it has written none. Resumed from that file,
    Lightning would start the next epoch: a new data order for the batches the epoch had left,
    and an epoch count one ahead of an uninterrupted run. Here the epoch stays open, with its
    trained batches done, as in a checkpoint written inside it.

    Args:
        checkpoint: the dict Lightning is saving (its ``loops`` and ``epoch`` are changed).
        trainer: the Lightning ``Trainer`` (``None`` outside a fit: nothing to do).
    """
    fit_loop = getattr(trainer, "fit_loop", None) if trainer is not None else None
    state = checkpoint.get("loops", {}).get("fit_loop")
    if fit_loop is None or state is None or "epoch_progress" not in state:
        return
    batches = fit_loop.epoch_loop.batch_progress.current.completed
    if batches == 0 or batches >= trainer.num_training_batches:
        return  # no batch of a new epoch yet, or the epoch ran to its end
    progress = state["epoch_progress"]
    counts = [progress[part] for part in ("total", "current")]
    if any(len({c["ready"], c["started"], c["processed"], c["completed"]}) != 1 for c in counts):
        return  # the epoch is still open: a checkpoint written inside it
    for c in counts:
        c["processed"] = c["completed"] = c["ready"] - 1
    checkpoint["epoch"] = progress["current"]["completed"]
