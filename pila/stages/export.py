"""``pila export``: a training checkpoint → an adapter folder (``PILAAdapter.save_pretrained``).

Reads a Lightning ``.ckpt`` or a DeepSpeed ZeRO checkpoint folder written by a pila stage
(or re-exports an adapter folder), rebuilds the adapter from the config recorded in the
checkpoint, loads its weights and writes ``adapter_config.json`` + ``model.safetensors``.
A ``WorldFinetune`` checkpoint (the lab's capacity control) is written as a diffusers LoRA
folder instead (:func:`pila.stages.finetune.export_lora`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from pila.adapter import AdapterConfig, PILAAdapter
from pila.stages.checkpoints import load_into_adapter, read_adapter_checkpoint
from pila.stages.finetune import export_lora, is_world_finetune_checkpoint

log = logging.getLogger("pila.export")


def export_adapter(ckpt_path: str | Path, out: str | Path) -> Path:
    """Write the adapter held by ``ckpt_path`` to the folder ``out``; returns the folder."""
    ckpt = read_adapter_checkpoint(ckpt_path)
    if ckpt.config is None:
        raise ValueError(
            f"{ckpt.path} records no adapter config, so the adapter cannot be rebuilt; export a "
            "checkpoint written by a pila stage (pila fit), which records it"
        )
    adapter = PILAAdapter(AdapterConfig.from_dict(ckpt.config))
    load_into_adapter(adapter, ckpt, strict=True)
    folder = adapter.save_pretrained(out)
    log.info(
        "exported the stage-%s adapter of %s (%s) to %s",
        ckpt.stage or "?",
        ckpt.path,
        ckpt.kind,
        folder,
    )
    return folder


def export_checkpoint(ckpt_path: str | Path, out: str | Path) -> Path:
    """Export what ``ckpt_path`` trained: a world_finetune LoRA folder, else an adapter."""
    if is_world_finetune_checkpoint(ckpt_path):
        return export_lora(ckpt_path, out)
    return export_adapter(ckpt_path, out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pila export", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ckpt",
        required=True,
        help="Lightning .ckpt file, DeepSpeed checkpoint folder or adapter folder",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="folder to write adapter_config.json and model.safetensors into "
        "(a world_finetune checkpoint: its LoRA, pytorch_lora_weights.safetensors)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        export_checkpoint(args.ckpt, args.out)
    except (FileNotFoundError, ValueError) as err:
        log.error("pila export: %s", err)
        return 2
    return 0
