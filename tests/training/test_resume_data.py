"""A resumed run continues at the same place in its data: no batch repeated, none skipped."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from pila.datamodules.resumable import ResumableSampler, reopen_stopped_epoch, resume_position


class _Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch.tolist())
        return (self.weight - batch.float().mean()).square()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def on_save_checkpoint(self, checkpoint):
        reopen_stopped_epoch(checkpoint, self.trainer)  # as the pila stage modules do


class _Data(L.LightningDataModule):
    """Uses the sampler the way WISA80KDataModule's loader does."""

    def __init__(self, num_workers: int = 0):
        super().__init__()
        self.num_workers = num_workers

    def train_dataloader(self):
        data = torch.arange(20)
        sampler = ResumableSampler(data, shuffle=True, seed=3)
        sampler.resume(*resume_position(self.trainer), 2)
        return DataLoader(data, batch_size=2, sampler=sampler, num_workers=self.num_workers)


def _run(tmp_path, max_steps, ckpt_path=None, num_workers=0, every_n_train_steps=1):
    module = _Recorder()
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[
            ModelCheckpoint(
                dirpath=tmp_path / "ckpt",
                save_last=True,
                every_n_train_steps=every_n_train_steps,
                save_top_k=-1,
            )
        ],
    )
    trainer.fit(module, datamodule=_Data(num_workers), ckpt_path=ckpt_path)
    return module.seen


def test_resume_mid_epoch_continues_the_data_order(tmp_path):
    reference = _run(tmp_path / "ref", 14)  # 10 batches per epoch: crosses into epoch 2
    assert sorted(sum(reference[:10], [])) == list(range(20))  # an epoch covers the data once
    assert reference[:10] != reference[10:] + reference[:6]  # epochs are reshuffled
    first = _run(tmp_path / "run", 12)
    assert first == reference[:12]
    resumed = _run(tmp_path / "run", 14, ckpt_path=str(tmp_path / "run" / "ckpt" / "last.ckpt"))
    assert resumed == reference[12:14]


def test_epochs_after_a_mid_epoch_resume_keep_their_length(tmp_path):
    reference = _run(tmp_path / "ref", 35)  # 3.5 epochs of 10 batches
    _run(tmp_path / "run", 12)
    resumed = _run(tmp_path / "run", 35, ckpt_path=str(tmp_path / "run" / "ckpt" / "last.ckpt"))
    assert resumed == reference[12:35]  # epochs 2 and 3 have 10 batches, not the 8 left of epoch 1
    sampler = ResumableSampler(list(range(20)), seed=3)
    sampler.skip(6)
    assert (
        len(sampler) == 20 and len(list(sampler)) == 14
    )  # the length is the epoch's, the pass is shorter


def test_sampler_shards_without_gaps_and_skips_a_prefix():
    data = list(range(10))
    shards = [
        list(ResumableSampler(data, shuffle=True, seed=0, num_replicas=2, rank=r)) for r in range(2)
    ]
    assert sorted(shards[0] + shards[1]) == data
    sampler = ResumableSampler(data, shuffle=True, seed=0, num_replicas=2, rank=0)
    sampler.skip(2)
    assert list(sampler) == shards[0][2:] and len(sampler) == 5  # skipping applies to one pass only
    assert list(sampler) == shards[0]


def test_a_loader_with_workers_resumes_in_the_order_of_its_epoch(tmp_path):
    # Workers take their first indices when the iterator is made, before Lightning sets the
    # sampler's epoch: the loader sets it itself.
    reference = _run(tmp_path / "ref", 14)
    _run(tmp_path / "run", 12, num_workers=1)
    last = tmp_path / "run" / "ckpt" / "last.ckpt"
    resumed = _run(tmp_path / "run", 14, ckpt_path=str(last), num_workers=1)
    assert resumed == reference[12:14]


def test_resume_continues_the_epoch_or_starts_the_next():
    def order(epoch):
        sampler = ResumableSampler(list(range(10)), seed=1)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0) != order(1)
    sampler = ResumableSampler(list(range(10)), seed=1)
    sampler.resume(1, 2, 3)
    assert list(sampler) == order(1)[6:]
    sampler.resume(1, 4, 3)  # 4 batches of 3 were the whole epoch (its last one short)
    assert list(sampler) == order(2)
    sampler.resume(1, 3, 3, drop_last_batch=True)  # the short batch is dropped: epoch over
    assert list(sampler) == order(2)
    sampler.resume(1, 0, 3)
    assert list(sampler) == order(1)


def test_a_last_checkpoint_written_when_max_steps_ends_the_run_resumes_in_its_epoch(tmp_path):
    reference = _run(tmp_path / "ref", 14)
    _run(tmp_path / "run", 12, every_n_train_steps=100)  # last.ckpt only, written at the end
    last = torch.load(tmp_path / "run" / "ckpt" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 12 and last["epoch"] == 1  # epoch 1 is still open
    resumed = _run(tmp_path / "run", 14, ckpt_path=str(tmp_path / "run" / "ckpt" / "last.ckpt"))
    assert resumed == reference[12:14]  # epoch 1's batches 3 and 4, not epoch 2's first two
