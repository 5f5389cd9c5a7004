"""The tiny stage configs chained A → B → C through the `pila` command, then resumed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from pila.cli import main
from pila.stages import StageB

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "lightning_configs" / "tiny"


def _edited_config(name: str, out: Path, steps: int) -> Path:
    """The shipped tiny config with paths under ``out`` and fewer steps and clips."""
    text = (TINY / f"{name}.yaml").read_text().replace("outputs/demo", str(out))
    config = yaml.safe_load(text)
    trainer = config["trainer"]
    trainer.update(
        max_steps=steps, log_every_n_steps=1, val_check_interval=steps, limit_val_batches=1
    )
    for callback in trainer["callbacks"]:
        if callback["class_path"].endswith("ModelCheckpoint"):
            callback["init_args"]["every_n_train_steps"] = 2
        if callback["class_path"].endswith(("SigmaRangePhases", "RecoveryPhases")):
            callback["init_args"]["steps_per_phase"] = 1
        if callback["class_path"].endswith(
            ("PhysicsWarmup", "ConditioningWarmup", "MaskBlend", "EncoderFreeze")
        ):
            callback["init_args"]["steps"] = 4
        if callback["class_path"].endswith("ExpertImageLogger"):
            callback["init_args"]["every_n_steps"] = 2
    config["model"]["init_args"]["log_every_n_steps"] = 2
    config["data"]["init_args"].update(
        num_clips_per_category=1, batch_size=2, num_frames=17, height=32, width=32
    )
    path = out / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_tiny_stages_chain_through_the_cli_and_resume(tmp_path):
    out = tmp_path / "run"
    configs = {
        name: _edited_config(name, out, steps)
        for name, steps in (("stageA", 4), ("stageB", 4), ("stageC", 4))
    }
    for name in ("stageA", "stageB", "stageC"):
        assert main(["fit", "--config", str(configs[name])]) == 0
        assert (out / name / "checkpoints" / "last.ckpt").exists()

    # each stage started from the previous stage's weights: loading stage A's checkpoint into
    # a fresh stage-B module reproduces stage A's adapter exactly
    ckpt_a = torch.load(
        out / "stageA" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    ckpt_b = torch.load(
        out / "stageB" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    ckpt_c = torch.load(
        out / "stageC" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    cfg = ckpt_a["pila"]["adapter_config"]
    b = StageB(adapter=cfg, init_from=str(out / "stageA" / "checkpoints" / "last.ckpt"))
    for key, value in ckpt_a["state_dict"].items():
        assert torch.equal(b.state_dict()[key], value), key
    # stage B trained what stage A handed over (the encoder moved), stage C trained on from B
    moved = [
        k
        for k in ckpt_a["state_dict"]
        if k.startswith("adapter.encoder")
        and not torch.equal(ckpt_a["state_dict"][k], ckpt_b["state_dict"][k])
    ]
    assert moved
    # stage C's decoder left zero init only because it trained (it starts at B's zero decoder)
    assert any(
        not torch.equal(ckpt_b["state_dict"][k], ckpt_c["state_dict"][k])
        for k in ckpt_c["state_dict"]
        if "decoder" in k
    )
    for ckpt in (ckpt_a, ckpt_b, ckpt_c):
        # only trainable state: the adapter, no backbone
        assert all(k.startswith("adapter.") for k in ckpt["state_dict"])
        assert not any(
            part in k for k in ckpt["state_dict"] for part in ("transformer", "vae", "text_encoder")
        )
        assert ckpt["pila"]["stage"] in "ABC"

    scalars = _scalars(out / "stageC")
    assert all(torch.isfinite(torch.tensor([v for _, v in scalars["train/loss"]])))
    routed = [t for t in scalars if t.startswith("train/residual/")]
    categories = {t.split("/")[2] for t in routed}
    assert routed and categories <= {
        "rigid_body",
        "elastic",
        "fluid",
        "compressible_flow",
        "phase_change",
        "collision",
        "thermal",
        "optical",
    }
    assert any(t.startswith("train/router/selection_rate/") for t in scalars)
    assert any(t.startswith("train/expert_loss/") for t in scalars)

    # resume stage C from its last checkpoint: the step count and the schedules continue
    assert (
        main(
            [
                "fit",
                "--config",
                str(configs["stageC"]),
                "--ckpt_path",
                "last",
                "--trainer.max_steps",
                "6",
            ]
        )
        == 0
    )
    resumed = torch.load(
        out / "stageC" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert resumed["global_step"] == 6
    scalars = _scalars(out / "stageC")
    lam = dict(scalars["train/lambda_phys"])
    # PhysicsWarmup(0.30, 4 steps): 0.075 per step, full from step 4 on; resumed steps 4 and 5
    assert lam[4] == pytest.approx(0.30) and lam[5] == pytest.approx(0.30)
    assert lam[3] == pytest.approx(0.225)
    assert resumed["callbacks"]["PhysicsWarmup[lambda_phys]"]["last_value"] == pytest.approx(0.30)
