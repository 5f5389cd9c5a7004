"""Run stage C for a few steps on two CPU processes (DDP over gloo); used by test_distributed.py.

Even-indexed clips are labelled rigid_body, odd ones fluid; with a strong label prior and
top-1 routing each sample routes to its label, and DDP's sampler gives rank 0 the even
clips and rank 1 the odd ones. Rank-local router statistics would therefore say 100 %
rigid_body on rank 0; the all-reduced ones say 50 / 50.

Usage: python ddp_stage_c.py OUT_DIR
"""

from __future__ import annotations

import sys

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))

from helpers import clip_item, tiny_adapter_config  # noqa: E402

from pila.datamodules.resumable import ResumableSampler  # noqa: E402
from pila.stages import StageC  # noqa: E402


def main(out: str) -> None:
    torch.set_num_threads(1)
    data = [clip_item(i, labels=(0,) if i % 2 == 0 else (2,)) for i in range(16)]
    module = StageC(
        adapter=tiny_adapter_config(top_k=1, beta=50.0),
        text_length=32,
        log_every_n_steps=2,
        backbone="tiny",
    )
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp_find_unused_parameters_true",
        logger=CSVLogger(out, name="ddp", version=0),
        enable_checkpointing=False,
        enable_progress_bar=False,
        log_every_n_steps=1,
    )
    # the sampler shards by rank without shuffling: rank 0 the even clips, rank 1 the odd ones
    loader_kwargs = {"batch_size": 2}

    class Data(L.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(data, sampler=ResumableSampler(data, shuffle=False), **loader_kwargs)

    trainer.fit(module, datamodule=Data())


if __name__ == "__main__":
    main(sys.argv[1])
