"""Gradient diagnostics (norm of each loss part per parameter group) and ``grad_balanced``."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from pila.stages import StageB, StageC
from pila.stages.gradients import GradientBalance, gradient_norms, gradient_scalars, worst_ratio

from .helpers import clip_item, tiny_adapter_config


def _module(cls, tiny_backbone, **changes):
    module = cls(adapter=tiny_adapter_config(**changes), text_length=32)
    module.attach_backbone(tiny_backbone)
    return module


def test_gradient_norms_are_each_parts_own_gradient_and_leave_grads_alone():
    a, b = torch.nn.Parameter(torch.tensor([3.0, 4.0])), torch.nn.Parameter(torch.tensor([1.0]))
    frozen = torch.nn.Parameter(torch.tensor([5.0]), requires_grad=False)
    losses = {"main": (a * a).sum() / 2, "aux": 3 * (a.sum() + b.sum())}  # ∇a = a; ∇ = 3
    norms = gradient_norms(losses, {"x": [a], "y": [b], "z": [frozen]})
    assert set(norms["main"]) == {"x", "y"}  # no trainable parameter in z
    assert float(norms["main"]["x"]) == pytest.approx(5.0) and float(norms["main"]["y"]) == 0.0
    assert (
        float(norms["aux"]["x"]) == pytest.approx(3 * math.sqrt(2))
        and float(norms["aux"]["y"]) == 3.0
    )
    assert a.grad is None and b.grad is None  # .grad untouched
    sum(losses.values()).backward()  # the graph is still there for the step's own backward
    scalars = gradient_scalars(norms, "main", "aux")
    assert scalars["train/grad_norm/main/x"] == pytest.approx(5.0)
    assert scalars["train/grad_ratio/x"] == pytest.approx(3 * math.sqrt(2) / 5)
    assert "train/grad_ratio/y" not in scalars  # a ratio over a zero norm is left out


def test_the_balance_bound_smoothing_and_cap():
    balance = GradientBalance(ratio=2.0, smoothing=0.5)
    assert balance.update(1.0) == 1.0  # under ρ: physics untouched, never amplified
    assert balance.update(8.0) == pytest.approx(0.25)  # the bound binds at once
    assert balance.update(2.0) == pytest.approx(0.625)  # then eases back, averaged
    assert balance.update(float("nan")) == pytest.approx(0.625)
    restored = GradientBalance(2.0, 0.5)
    restored.load_state_dict(balance.state_dict())
    assert restored.scale == balance.scale and restored.updates == 3
    flow = {"g": torch.tensor(2.0), "h": torch.tensor(0.0), "decoder": torch.tensor(1.0)}
    physics = {"g": torch.tensor(6.0), "h": torch.tensor(9.0), "decoder": torch.tensor(0.0)}
    assert worst_ratio(flow, physics, ["g", "h"]) == 3.0  # h: nothing to balance against


def _fit(module, root, steps):
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir=root,
    )
    trainer.fit(
        module, DataLoader([clip_item(i, (i % 8, (i + 3) % 8)) for i in range(8)], batch_size=2)
    )


def test_grad_balanced_holds_the_physics_gradient_within_rho_on_the_shared_groups(
    tiny_backbone, tmp_path
):
    torch.manual_seed(0)
    rho = 0.05  # well under the unscaled ratio, so the bound binds
    c = _module(StageC, tiny_backbone, loss_weighting="grad_balanced", loss_balance_ratio=rho)
    c.lambda_phys = 0.3
    measured: list[tuple[float, float]] = []  # (scaled ratio, unscaled ratio) per step
    original = c.compute_loss

    def watched(batch, step):
        loss, logs = original(batch, step)
        if c.training:
            groups = {
                g: p for g, p in c.adapter.parameter_groups().items() if g in c.balance_groups()
            }
            norms = gradient_norms(c.loss_parts, groups)
            scaled = worst_ratio(norms["fm"], norms["residual"], norms["fm"])
            measured.append((scaled, scaled / float(logs["balance_scale"])))
        return loss, logs

    c.compute_loss = watched
    _fit(c, tmp_path, steps=3)
    assert len(measured) == 3
    assert all(scaled <= rho * (1 + 1e-4) for scaled, _ in measured)
    assert max(raw for _, raw in measured) > rho  # the bound did bind: the run measured something
    assert 0 < c.balance.scale < 1 and c.balance.updates == 3
    # the scale travels with the training checkpoint (exact resume)
    ckpt: dict = {}
    c.on_save_checkpoint(ckpt)
    fresh = _module(StageC, tiny_backbone, loss_weighting="grad_balanced", loss_balance_ratio=rho)
    fresh.on_load_checkpoint(ckpt)
    assert fresh.balance.state_dict() == c.balance.state_dict()


@pytest.mark.parametrize("cls", [StageB, StageC])
def test_diagnostic_steps_log_every_part_on_every_trained_group(cls, tiny_backbone, tmp_path):
    module = _module(cls, tiny_backbone)
    module.hparams.grad_log_every_n_steps = 2
    module.phase = 4
    if cls is StageC:
        module.lambda_phys = 0.3
    logged: dict[int, set[str]] = {}
    log_dict = module.log_dict

    values: dict[str, float] = {}

    def record(step_values, *args, **kwargs):
        logged.setdefault(module.global_step, set()).update(step_values)
        values.update(step_values)
        return log_dict(step_values, *args, **kwargs)

    module.log_dict = record
    _fit(module, tmp_path, steps=3)
    main, aux = module.grad_parts
    tags = set().union(*logged.values())
    grad_steps = sorted(
        s for s, t in logged.items() if any(k.startswith("train/grad_norm/") for k in t)
    )
    assert grad_steps == [1]  # (step + 1) a multiple of 2, like the metrics
    trained = {
        "B": ("encoder", "anchor", "afe"),
        "C": ("encoder", "afe", "router", "experts", "decoder"),
    }
    for group in trained[module.stage_name]:
        assert {f"train/grad_norm/{main}/{group}", f"train/grad_norm/{aux}/{group}"} <= tags
    assert "train/grad_ratio/encoder" in tags
    if cls is StageC:  # L_res never reaches the decoder
        assert (
            values["train/grad_norm/residual/decoder"] == 0.0
            and values["train/grad_ratio/decoder"] == 0.0
        )
        assert values["train/grad_norm/residual/experts"] > 0
    assert module.loss_parts == {}  # the graph is not kept past the step


def test_diagnostic_steps_change_nothing_the_run_computes(tiny_backbone, tmp_path):
    """Same seed, diagnostics on every step or never: the same weights and random streams."""
    finals = []
    for every in (1, 0):
        torch.manual_seed(0)
        module = _module(StageC, tiny_backbone)
        module.hparams.grad_log_every_n_steps = every
        module.lambda_phys = 0.3
        _fit(module, tmp_path / str(every), steps=2)
        finals.append(
            ({k: v.clone() for k, v in module.adapter.state_dict().items()}, torch.rand(3))
        )
    (weights_on, draw_on), (weights_off, draw_off) = finals
    assert weights_on.keys() == weights_off.keys()
    for key in weights_on:
        torch.testing.assert_close(weights_on[key], weights_off[key], rtol=0, atol=0, msg=key)
    assert torch.equal(draw_on, draw_off)
