"""Schedule callbacks: the values they set, the encoder freeze, their checkpoint state."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from pila.callbacks import (
    ConditioningWarmup,
    EncoderFreeze,
    MaskBlend,
    PhysicsWarmup,
    RecoveryPhases,
    SigmaRangePhases,
)
from pila.callbacks.schedules import linear_ramp, piecewise_phase
from pila.stages import StageC

from .helpers import clip_item, tiny_adapter_config


def test_linear_ramp_and_phases():
    assert [linear_ramp(s, 0.0, 0.3, 4) for s in (0, 2, 4, 9)] == pytest.approx(
        [0.0, 0.15, 0.3, 0.3]
    )
    assert [linear_ramp(s, 0.0, 1.0, 2, delay=3) for s in (0, 3, 4, 5, 6)] == pytest.approx(
        [0, 0, 0.5, 1, 1]
    )
    assert linear_ramp(0, 0.0, 1.0, 0) == 1.0
    assert [piecewise_phase(s, [2, 2, 2]) for s in range(8)] == [0, 0, 1, 1, 2, 2, 2, 2]


def test_schedules_follow_the_method_defaults():
    assert PhysicsWarmup().value_at(1000) == pytest.approx(0.15) and PhysicsWarmup().value_at(
        5000
    ) == pytest.approx(0.30)
    assert ConditioningWarmup().value_at(500) == pytest.approx(0.5)
    assert MaskBlend().value_at(150) == pytest.approx(0.5)
    assert EncoderFreeze().value_at(999) == 0.0 and EncoderFreeze().value_at(1000) == pytest.approx(
        0.1
    )
    ranges = SigmaRangePhases()
    assert [ranges.value_at(s) for s in (0, 2999, 3000, 6000, 10**6)] == [
        (0.0, 0.25),
        (0.0, 0.25),
        (0.0, 0.5),
        (0.0, 1.0),
        (0.0, 1.0),
    ]
    phases = RecoveryPhases()
    assert [phases.value_at(s) for s in (0, 999, 1000, 2500, 4000, 10**6)] == [0, 0, 1, 2, 4, 4]


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="PhysicsWarmup"):
        PhysicsWarmup(target=-1.0)
    with pytest.raises(ValueError, match="sigma_max"):
        SigmaRangePhases(sigma_max=(0.5, 1.5))


class _Recorder(L.Callback):
    def __init__(self):
        self.seen = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        encoder_lr = next(g["lr"] for g in optimizer.param_groups if g["name"] == "encoder")
        self.seen.append(
            (
                trainer.global_step,
                pl_module.lambda_phys,
                pl_module.cond_scale,
                pl_module.mask_blend,
                encoder_lr,
            )
        )


def test_callbacks_drive_the_module_and_freeze_the_encoder(tiny_backbone, tmp_path):
    module = StageC(adapter=tiny_adapter_config(), text_length=32, lr=1e-3, weight_decay=0.01)
    module.attach_backbone(tiny_backbone)
    encoder_before = [p.detach().clone() for p in module.adapter.encoder.parameters()]
    recorder = _Recorder()
    trainer = L.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        callbacks=[
            PhysicsWarmup(0.3, 4),
            ConditioningWarmup(2),
            MaskBlend(2, delay=1),
            EncoderFreeze(2, 0.5),
            recorder,
        ],
    )
    trainer.fit(module, DataLoader([clip_item(i) for i in range(8)], batch_size=2))
    steps = [s[0] for s in recorder.seen]
    assert steps == [0, 1, 2, 3]
    assert [s[1] for s in recorder.seen] == pytest.approx([0.0, 0.075, 0.15, 0.225])
    assert [s[2] for s in recorder.seen] == pytest.approx([0.0, 0.5, 1.0, 1.0])
    assert [s[3] for s in recorder.seen] == pytest.approx([0.0, 0.0, 0.5, 1.0])
    assert [s[4] for s in recorder.seen] == pytest.approx([0.0, 0.0, 5e-4, 5e-4])
    # after the two frozen steps the encoder trained
    assert any(
        not torch.equal(a, b)
        for a, b in zip(encoder_before, module.adapter.encoder.parameters(), strict=True)
    )


def test_encoder_is_bitwise_unchanged_while_frozen(tiny_backbone, tmp_path):
    module = StageC(adapter=tiny_adapter_config(), text_length=32, lr=1e-2, weight_decay=0.1)
    module.attach_backbone(tiny_backbone)
    before = {k: v.clone() for k, v in module.adapter.state_dict().items()}
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        callbacks=[EncoderFreeze(10, 0.1)],
    )
    trainer.fit(module, DataLoader([clip_item(i) for i in range(6)], batch_size=2))
    after = module.adapter.state_dict()
    encoder_keys = [k for k in before if k.startswith(("encoder.", "scaffold.", "afe."))]
    head_keys = [k for k in before if k.startswith(("decoder.", "router.", "condition."))]
    assert encoder_keys and head_keys
    assert all(torch.equal(before[k], after[k]) for k in encoder_keys)
    assert any(not torch.equal(before[k], after[k]) for k in head_keys)


def test_state_is_saved_and_a_settings_change_is_reported(caplog):
    warm = PhysicsWarmup(0.3, 2000)
    state = warm.state_dict()
    assert state["settings"] == {"target": 0.3, "steps": 2000}
    other = PhysicsWarmup(0.5, 2000)
    with caplog.at_level("WARNING"):
        other.load_state_dict(state)
    assert "resumed with settings" in caplog.text
