"""Fixtures of the analysis tests: a shortened ``pila demo`` run, made once per session."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "lightning_configs" / "tiny"
STAGE_STEPS = {"stageA": 2, "stageB": 2, "stageC": 4}
"""Optimizer steps per stage: stage C logs its metrics and images every 2 steps."""


def _shortened(name: str, folder: Path) -> Path:
    """A shipped tiny config with fewer steps, clips, frames and pixels, written into ``folder``.

    Paths keep ``outputs/demo``: ``pila demo --out`` replaces it with its output folder.
    """
    config = yaml.safe_load((TINY / f"{name}.yaml").read_text())
    trainer = config["trainer"]
    if name in STAGE_STEPS:
        steps = STAGE_STEPS[name]
        trainer.update(
            max_steps=steps, log_every_n_steps=1, val_check_interval=steps, limit_val_batches=1
        )
        for callback in trainer["callbacks"]:
            args = callback["init_args"]
            if callback["class_path"].endswith("ModelCheckpoint"):
                args["every_n_train_steps"] = steps
            if callback["class_path"].endswith(("SigmaRangePhases", "RecoveryPhases")):
                args["steps_per_phase"] = 1
            if callback["class_path"].endswith(
                ("PhysicsWarmup", "ConditioningWarmup", "MaskBlend", "EncoderFreeze")
            ):
                args["steps"] = 2
            if callback["class_path"].endswith("ExpertImageLogger"):
                args["every_n_steps"] = 2
        config["model"]["init_args"]["log_every_n_steps"] = 2
        if name != "stageA":
            config["model"]["init_args"]["grad_log_every_n_steps"] = 1  # gradient curves to plot
        config["data"]["init_args"].update(
            num_clips_per_category=1, batch_size=4, num_frames=17, height=32, width=32
        )
    else:  # predict: one short video
        config["model"]["init_args"]["sampling"].update(
            num_inference_steps=2, num_frames=5, height=32, width=32
        )
        config["data"]["init_args"]["prompts"] = config["data"]["init_args"]["prompts"][:1]
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """Output folder of ``pila demo`` run with shortened configs: 8 synthetic clips of 17
    frames at 32 × 32 (latents 16 × 5 × 4 × 4), stages A/B/C of 2/2/4 steps, one video.
    Treat as read-only."""
    from pila.demo import main

    base = tmp_path_factory.mktemp("analysis_run")
    configs = base / "configs"
    configs.mkdir()
    for name in (*STAGE_STEPS, "predict"):
        _shortened(name, configs)
    out = base / "demo"
    logging.getLogger("lightning").setLevel(logging.WARNING)
    assert main(["--out", str(out), "--configs", str(configs)]) == 0
    return out
