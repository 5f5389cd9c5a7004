"""A stage C run stopped mid-epoch and resumed with `--ckpt_path last` ends bit-identical to
the uninterrupted run: weights, optimizer state, epoch and step (CPU)."""

from __future__ import annotations

import pytest
import torch

from pila.cli import main

from .helpers import tiny_fit_config

STEPS, STOP = 8, 4  # 3 batches an epoch (6 training clips, batch 2): the stop falls inside epoch 1, the end inside epoch 2


def _last(out):
    return torch.load(out / "stageC" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


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


@pytest.mark.slow
def test_a_run_resumed_mid_epoch_ends_bit_identical(tmp_path, tiny_data_root):
    straight = tmp_path / "straight"
    assert main(["fit", "--config", str(tiny_fit_config(straight, tiny_data_root, steps=STEPS))]) == 0
    stopped = tmp_path / "stopped"
    config = tiny_fit_config(stopped, tiny_data_root, steps=STEPS)
    assert main(["fit", "--config", str(config), "--trainer.max_steps", str(STOP)]) == 0
    assert _last(stopped)["global_step"] == STOP and _last(stopped)["epoch"] == 1
    assert main(["fit", "--config", str(config), "--ckpt_path", "last"]) == 0

    a, b = _last(straight), _last(stopped)
    assert a["global_step"] == b["global_step"] == STEPS and a["epoch"] == b["epoch"] == 2
    assert a["state_dict"].keys() == b["state_dict"].keys()
    _assert_same(a["state_dict"], b["state_dict"], "state_dict")
    _assert_same(a["optimizer_states"], b["optimizer_states"], "optimizer_states")
    _assert_same(a["pila"]["rng"], b["pila"]["rng"], "rng")
    _assert_same(a["loops"]["fit_loop"]["epoch_loop.batch_progress"], b["loops"]["fit_loop"]["epoch_loop.batch_progress"])
