"""A run stopped mid-epoch and resumed with ``--ckpt_path`` ends bit-identical to the
uninterrupted run (CPU): weights, optimizer state, random states and loop progress, for every
shipped stage config (``tiny/``, ``lab/`` and the paper's on the tiny backbone).

The test clips make epochs of 3 batches (6 training clips, batch 2). The uninterrupted run
takes 8 steps and writes a checkpoint every 2. Two ways to stop, both inside epoch 1:

- ``periodic``: the run went on past its step-4 checkpoint (written by
  ``every_n_train_steps``) and was killed; the resumed run starts from that file.
- ``max_steps``: a first run ends at ``max_steps`` 5 before any periodic checkpoint, so
  ``last.ckpt`` is written when training ends (Lightning has closed the cut-short epoch
  by then; the module's checkpoint hook reopens it); the resumed run starts from it.

Both runs' step-8 checkpoints (written by ``every_n_train_steps`` at the same point of the
step) are compared.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pila.cli import main

from .helpers import shipped_fit_config

STEPS, EVERY, BATCHES_PER_EPOCH = 8, 2, 3
NEVER = 100  # every_n_train_steps of a run that writes only its last.ckpt
STOPS = {"periodic": 4, "max_steps": 5}
# kept few for CI's time: the lab family, whose backbone draws random numbers while it
# loads (the cause this file guards against), with stage C stopped both ways and stage A
# (another module, the same loop and sampler) at max_steps; the tiny and paper families
# with stage C at max_steps, the stop that reopens a cut-short epoch (the periodic stop's
# code is the same in every family)
STAGE_C_CASES = [("stageC", "periodic"), ("stageC", "max_steps")]
LAB_CASES = [*STAGE_C_CASES, ("stageA", "max_steps")]
MAX_STEPS_C = [("stageC", "max_steps")]


@pytest.fixture(scope="module")
def lab_data_root(tmp_path_factory):
    """The test clips encoded by the lab world (as `pila demo` encodes its clips)."""
    from pila.datamodules import SyntheticPhysicsDataModule

    root = tmp_path_factory.mktemp("lab_data")
    SyntheticPhysicsDataModule(
        root=str(root),
        backbone="lab",
        num_clips_per_category=1,
        batch_size=2,
        num_frames=17,
        height=32,
        width=32,
        max_sequence_length=512,
    ).prepare_data()
    return root


@pytest.fixture(scope="module")
def straight_runs(tmp_path_factory):
    """Uninterrupted runs, one per (family, stage), made on first use and shared by the cases."""
    runs: dict[tuple[str, str], Path] = {}

    def run(family: str, stage: str, data_root) -> Path:
        if (family, stage) not in runs:
            out = tmp_path_factory.mktemp(f"{family}_{stage}_straight")
            config = shipped_fit_config(
                family,
                out,
                data_root,
                stage=stage,
                steps=STEPS,
                every_n_train_steps=EVERY,
                keep_checkpoints=True,
            )
            assert main(["fit", "--config", str(config)]) == 0
            runs[family, stage] = out
        return runs[family, stage]

    return run


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _checkpoints(out: Path, stage: str) -> Path:
    return out / stage / "checkpoints"


def _assert_same(a, b, where: str = "") -> None:
    """Every tensor and value of two checkpoint entries equal, exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def _resume_and_compare(
    family: str, stage: str, stop: str, data_root, straight: Path, tmp_path: Path
) -> None:
    step = STOPS[stop]
    assert step % BATCHES_PER_EPOCH != 0  # the stop falls inside an epoch
    resumed = tmp_path / "resumed"
    if stop == "periodic":
        start = (
            _checkpoints(straight, stage) / f"epoch={step // BATCHES_PER_EPOCH}-step={step}.ckpt"
        )
        config = shipped_fit_config(
            family, resumed, data_root, stage=stage, steps=STEPS, every_n_train_steps=EVERY
        )
    else:
        config = shipped_fit_config(
            family, resumed, data_root, stage=stage, steps=step, every_n_train_steps=NEVER
        )
        assert main(["fit", "--config", str(config)]) == 0
        start = _checkpoints(resumed, stage) / "last.ckpt"
        config = shipped_fit_config(
            family, resumed, data_root, stage=stage, steps=STEPS, every_n_train_steps=EVERY
        )
    first = _load(start)
    assert first["global_step"] == step and first["epoch"] == step // BATCHES_PER_EPOCH
    batches = first["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    # written at a batch's end (periodic) or after the run's last batch (max_steps)
    assert batches["completed"] == step % BATCHES_PER_EPOCH - (stop == "periodic")
    assert main(["fit", "--config", str(config), "--ckpt_path", str(start)]) == 0

    end = f"epoch={STEPS // BATCHES_PER_EPOCH}-step={STEPS}.ckpt"
    a, b = _load(_checkpoints(straight, stage) / end), _load(_checkpoints(resumed, stage) / end)
    assert (
        a["global_step"] == b["global_step"] == STEPS
        and a["epoch"] == b["epoch"] == STEPS // BATCHES_PER_EPOCH
    )
    _assert_same(a["state_dict"], b["state_dict"], "state_dict")
    _assert_same(a["optimizer_states"], b["optimizer_states"], "optimizer_states")
    _assert_same(a["pila"]["rng"], b["pila"]["rng"], "rng")
    _assert_same(a["loops"], b["loops"], "loops")
    assert a["pila"]["rng"]["world_size"] == 1 and "torch" in a["pila"]["rng"]


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "stop"), MAX_STEPS_C)
def test_tiny_configs_resume_bit_identical(stage, stop, tiny_data_root, straight_runs, tmp_path):
    _resume_and_compare(
        "tiny", stage, stop, tiny_data_root, straight_runs("tiny", stage, tiny_data_root), tmp_path
    )


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "stop"), LAB_CASES)
def test_lab_configs_resume_bit_identical(stage, stop, lab_data_root, straight_runs, tmp_path):
    _resume_and_compare(
        "lab", stage, stop, lab_data_root, straight_runs("lab", stage, lab_data_root), tmp_path
    )


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "stop"), MAX_STEPS_C)
def test_paper_configs_resume_bit_identical(stage, stop, tiny_data_root, straight_runs, tmp_path):
    _resume_and_compare(
        "paper",
        stage,
        stop,
        tiny_data_root,
        straight_runs("paper", stage, tiny_data_root),
        tmp_path,
    )
