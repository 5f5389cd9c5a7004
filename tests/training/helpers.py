"""Tiny in-memory batches and adapter settings shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from pila.adapter import AdapterConfig

T, H, W, L_TEXT, TEXT_DIM = 5, 8, 8, 7, 32


def tiny_adapter_config(**changes) -> AdapterConfig:
    """An adapter small enough for CPU tests, sized for the tiny backbone's text width."""
    base = dict(
        text_dim=TEXT_DIM, hidden=16, cond_dim=16, expert_width=8, norm_groups=4, sigma_embed_dim=16
    )
    base.update(changes)
    return AdapterConfig(**base)


def clip_item(i: int, labels: tuple[int, ...] | None = None) -> dict:
    """One cached-clip item in the datamodules' format, deterministic from ``i``."""
    g = torch.Generator().manual_seed(i)
    y = torch.zeros(8)
    for k in labels if labels is not None else (i % 8,):
        y[k] = 1
    return {
        "latents": torch.randn(16, T, H, W, generator=g),
        "prompt_embeds": torch.randn(L_TEXT, TEXT_DIM, generator=g),
        "prompt_mask": torch.ones(L_TEXT, dtype=torch.bool),
        "pooled": torch.randn(TEXT_DIM, generator=g),
        "labels": y,
        "flow": torch.randn(2, T, H, W, generator=g),
        "id": f"clip{i}",
    }


def batch_of(items: list[dict]) -> dict:
    out = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "id"}
    out["id"] = [it["id"] for it in items]
    return out


def tiny_fit_config(
    out, data_root, *, stage: str = "stageC", steps: int = 4, every_n_train_steps: int = 1
) -> Path:
    """The shipped tiny stage config: outputs under ``out``, the shared test data, fewer steps."""
    return shipped_fit_config(
        "tiny", out, data_root, stage=stage, steps=steps, every_n_train_steps=every_n_train_steps
    )


def shipped_fit_config(
    family: str,
    out,
    data_root,
    *,
    stage: str = "stageC",
    steps: int = 4,
    every_n_train_steps: int = 1,
    keep_checkpoints: bool = False,
) -> Path:
    """A shipped stage config shrunk for a CPU test, written under ``out``.

    ``family`` is ``tiny`` or ``lab`` (``lightning_configs/<family>/``) or ``paper``
    (``lightning_configs/<stage>.yaml`` on the tiny backbone: one CPU process instead of
    DeepSpeed on 8 GPUs, residuals not compiled, the tiny adapter widths, the test clips with
    two loader workers and 2 clips a batch (as the other families); everything else,
    bf16-mixed and gradient clipping included, as shipped). Schedules are shortened to a few
    steps so they change within the run.
    """
    root = Path(__file__).resolve().parents[2]
    if family == "paper":
        source, shipped_out = root / "lightning_configs" / f"{stage}.yaml", "outputs/paper"
    else:
        source, shipped_out = root / "lightning_configs" / family / f"{stage}.yaml", "outputs/demo"
    config = yaml.safe_load(source.read_text().replace(shipped_out, str(out)))
    trainer = config["trainer"]
    trainer.update(
        max_steps=steps,
        log_every_n_steps=1,
        val_check_interval=None,
        check_val_every_n_epoch=1,
        limit_val_batches=1,
    )
    for callback in trainer["callbacks"]:
        if callback["class_path"].endswith("ModelCheckpoint"):
            callback["init_args"]["every_n_train_steps"] = every_n_train_steps
            if keep_checkpoints:
                callback["init_args"]["save_top_k"] = -1
        if callback["class_path"].endswith(("SigmaRangePhases", "RecoveryPhases")):
            callback["init_args"]["steps_per_phase"] = 2
        if callback["class_path"].endswith(
            ("PhysicsWarmup", "ConditioningWarmup", "MaskBlend", "EncoderFreeze")
        ):
            callback["init_args"]["steps"] = 3
        if callback["class_path"].endswith("ExpertImageLogger"):
            callback["init_args"]["every_n_steps"] = 2
    model = config["model"]["init_args"]
    model.update(init_from=None, log_every_n_steps=2)
    # the tests' own clips (seed 0, as the fixtures render them), whatever seed a config draws
    data = {"root": str(data_root), "num_clips_per_category": 1, "batch_size": 2, "seed": 0}
    data.update(num_frames=17, height=32, width=32)
    if family == "paper":
        for key in ("strategy", "num_nodes", "max_epochs"):
            trainer.pop(key, None)
        trainer.update(accelerator="cpu", devices=1)
        model.update(backbone="tiny", compile_residuals=False, text_length=128)
        model["adapter"].update(
            text_dim=TEXT_DIM,
            hidden=16,
            cond_dim=16,
            expert_width=8,
            norm_groups=4,
            sigma_embed_dim=16,
        )
        data.update(num_workers=2, max_sequence_length=128)
        synthetic = "pila.datamodules.SyntheticPhysicsDataModule"
        config["data"] = {"class_path": synthetic, "init_args": data}
    else:
        config["data"]["init_args"].update(data)
    path = Path(out) / "configs" / f"{stage}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path
