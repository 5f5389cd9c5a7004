"""Stage modules: what each trains, init_from across checkpoint kinds, checkpoints, export."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from pila.adapter import PILAAdapter
from pila.stages import StageA, StageB, StageC
from pila.stages.export import export_adapter
from pila.stages.module import pad_text

from .helpers import batch_of, clip_item, tiny_adapter_config


def _module(cls, tiny_backbone, **kwargs):
    module = cls(adapter=tiny_adapter_config(), text_length=32, **kwargs)
    module.attach_backbone(tiny_backbone)
    return module


def _grads_by_group(module, loss):
    module.zero_grad()
    loss.backward()
    groups = module.adapter.parameter_groups()
    return {
        name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
        for name, params in groups.items()
        if params
    }


def test_stage_losses_reach_only_what_each_stage_trains(tiny_backbone):
    batch = batch_of([clip_item(0, (0, 5)), clip_item(1, (2, 6))])
    a = _module(StageA, tiny_backbone)
    loss, logs = a.compute_loss(batch, a.prepare_step(batch))
    grads = _grads_by_group(a, loss)
    assert grads["encoder"] and grads["anchor"]
    assert not any(grads[g] for g in ("afe", "condition", "router", "experts", "decoder"))
    assert set(logs) >= {"anchor_velocity", "anchor_strain", "anchor_displacement"}

    b = _module(StageB, tiny_backbone)
    b.phase = 4
    loss, logs = b.compute_loss(batch, b.prepare_step(batch))
    grads = _grads_by_group(b, loss)
    assert grads["encoder"] and grads["anchor"] and grads["afe"]
    assert not any(grads[g] for g in ("condition", "router", "experts", "decoder"))

    c = _module(StageC, tiny_backbone)
    c.lambda_phys = 0.3
    # a fresh decoder's last layer is zero: only it receives a gradient at step 0
    loss, logs = c.compute_loss(batch, c.prepare_step(batch))
    assert torch.isfinite(loss) and logs["residual_loss"] > 0
    grads = _grads_by_group(c, loss)
    assert grads["decoder"] and grads["experts"] and grads["encoder"]
    assert not any(p.requires_grad for p in tiny_backbone.parameters())


def test_stage_b_physical_mask_reading_blends_the_mask_and_changes_the_loss(tiny_backbone):
    """R4: with physical_mask_steps the recovery residuals are weighted by a blend toward the
    physical mask."""
    batch = batch_of([clip_item(0, (0, 5)), clip_item(1, (2, 6))])
    from pila.physics.masks import blend_masks, motion_mask, physical_mask

    for steps in (0, 4):
        torch.manual_seed(0)
        b = _module(StageB, tiny_backbone, physical_mask_steps=steps)
        b.phase = 4
        seen = []
        inner = b.adapter.residual_pass
        b.adapter.residual_pass = lambda cats, fields, mask, *rest, _inner=inner, _seen=seen: (
            _seen.append(mask) or _inner(cats, fields, mask, *rest)
        )
        step = b.prepare_step(batch)
        _, logs = b.compute_loss(batch, step)
        assert float(logs["mask_blend"]) == (0.0 if steps == 0 else 0.25)
        cfg = b.adapter.config
        with torch.no_grad():
            enc = b.adapter.encode_bank(step["x_t"], step["sigma"], step["v_theta"], phase=4)
            expected = motion_mask(
                enc.v_hat,
                enc.x0_hat,
                weights=cfg.mask_weights,
                quantile=cfg.mask_quantile,
                floor=cfg.mask_floor,
            )
            if steps:
                physical = physical_mask(
                    enc.bank, enc.active_slots, quantile=cfg.mask_quantile, floor=cfg.mask_floor
                )
                assert not torch.allclose(physical, expected)
                expected = blend_masks(expected, physical, 0.25)
        torch.testing.assert_close(seen[0].detach(), expected)
    assert [StageB(adapter=tiny_adapter_config(), physical_mask_steps=0).physical_mask_blend()] == [
        0.0
    ]
    with pytest.raises(ValueError, match="physical_mask_steps"):
        StageB(adapter=tiny_adapter_config(), physical_mask_steps=-1)


def test_stage_b_terms_switch_on_with_the_recovery_phases(tiny_backbone):
    b = _module(StageB, tiny_backbone)
    from pila.physics.afe import active_slots

    counts = [len(b.active_terms(active_slots(phase))) for phase in range(5)]
    assert counts == sorted(counts) and counts[0] > 0 and counts[-1] == len(b.terms)
    assert ("optical", "wave") not in b.active_terms(active_slots(3))
    assert ("optical", "wave") in b.active_terms(active_slots(4))
    with pytest.raises(ValueError, match="unknown residual term 'fluid/nope'"):
        StageB(adapter=tiny_adapter_config(), terms=["fluid/nope"])


def test_the_stage_a_anchor_vanishes_when_the_anchor_matches_the_flow():
    from pila.adapter import BankEncoding
    from pila.stages.stages import ObservableAnchorLoss

    v = torch.randn(2, 2, 5, 8, 8)
    enc = BankEncoding(torch.randn(2, 16, 5, 8, 8), None, None, None, {}, v, {}, ())
    loss = ObservableAnchorLoss()(enc, v.clone(), tiny_adapter_config())
    assert float(loss["anchor"]) == 0.0
    assert float(ObservableAnchorLoss()(enc, v + 0.5, tiny_adapter_config())["anchor_velocity"]) > 0


def test_text_is_padded_like_the_pipeline():
    e = torch.randn(2, 7, 4)
    padded = pad_text(e, 12)
    assert (
        padded.shape == (2, 12, 4)
        and torch.equal(padded[:, :7], e)
        and padded[:, 7:].abs().sum() == 0
    )
    with pytest.raises(ValueError, match="text_length"):
        pad_text(e, 5)


def _fit(module, tmp_path, steps=2, **trainer_kwargs):
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        **trainer_kwargs,
    )
    trainer.fit(module, DataLoader([clip_item(i) for i in range(8)], batch_size=2))
    return trainer


def test_checkpoints_hold_only_the_adapter_and_chain_into_the_next_stage(tiny_backbone, tmp_path):
    a = _module(StageA, tiny_backbone)
    trainer = _fit(a, tmp_path / "a")
    ckpt_path = (
        trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path
    )
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert ckpt["state_dict"] and all(k.startswith("adapter.") for k in ckpt["state_dict"])
    stored = sum(v.numel() for v in ckpt["state_dict"].values())
    assert stored == sum(v.numel() for v in a.adapter.state_dict().values())
    # weights + AdamW's two moments of the trained part, in float32, plus small metadata
    import os

    assert os.path.getsize(ckpt_path) < 3 * 4 * stored + 200_000
    assert ckpt["pila"]["stage"] == "A"

    b = StageB(adapter=tiny_adapter_config(), text_length=32, init_from=ckpt_path)
    for (name, mine), theirs in zip(
        b.adapter.state_dict().items(), a.adapter.state_dict().values(), strict=True
    ):
        assert torch.equal(mine, theirs), name

    folder = export_adapter(ckpt_path, tmp_path / "exported")
    exported = PILAAdapter.from_pretrained(folder)
    assert all(
        torch.equal(x, y)
        for x, y in zip(
            exported.state_dict().values(), a.adapter.state_dict().values(), strict=True
        )
    )
    c = StageC(adapter=tiny_adapter_config(), text_length=32, init_from=str(folder))
    assert all(
        torch.equal(x, y)
        for x, y in zip(
            c.adapter.state_dict().values(), a.adapter.state_dict().values(), strict=True
        )
    )


def test_init_from_refuses_the_wrong_kind_or_shape(tmp_path):
    bogus = tmp_path / "bogus.ckpt"
    torch.save({"state_dict": {"model.weight": torch.zeros(2)}}, bogus)
    with pytest.raises(ValueError, match="no PILA adapter weights"):
        StageB(adapter=tiny_adapter_config(), init_from=str(bogus))
    not_ckpt = tmp_path / "notes.txt"
    not_ckpt.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt is not a checkpoint file"):
        StageB(adapter=tiny_adapter_config(), init_from=str(not_ckpt))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StageB(adapter=tiny_adapter_config(), init_from=str(tmp_path / "missing.ckpt"))
    PILAAdapter(tiny_adapter_config(hidden=24)).save_pretrained(tmp_path / "wide")
    with pytest.raises(ValueError, match="hidden: 24 vs 16"):
        StageB(adapter=tiny_adapter_config(), init_from=str(tmp_path / "wide"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="neither an adapter folder nor a DeepSpeed"):
        StageB(adapter=tiny_adapter_config(), init_from=str(tmp_path / "empty_dir"))


def test_nonfinite_losses_skip_steps_then_stop_the_run(tiny_backbone, tmp_path):
    c = _module(StageC, tiny_backbone, max_nonfinite_steps=3, weight_decay=0.1)
    original = c.compute_loss
    calls = {"n": 0}

    def flaky(batch, step):
        loss, logs = original(batch, step)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] <= 2 else loss), logs

    c.compute_loss = flaky
    before = {k: v.detach().clone() for k, v in c.adapter.named_parameters()}
    _fit(c, tmp_path / "skip", steps=2, enable_checkpointing=False)
    assert c.nonfinite_total == 2 and c.nonfinite_consecutive == 2
    # skipped steps change nothing, not even through weight decay
    assert all(torch.equal(before[k], v) for k, v in c.adapter.named_parameters())
    _fit(c, tmp_path / "resume", steps=1, enable_checkpointing=False)
    assert c.nonfinite_consecutive == 0 and c.nonfinite_total == 2
    assert any(not torch.equal(before[k], v) for k, v in c.adapter.named_parameters())

    c2 = _module(StageC, tiny_backbone, max_nonfinite_steps=3)
    original2 = c2.compute_loss
    c2.compute_loss = lambda batch, step: (original2(batch, step)[0] * float("inf"), {})
    with pytest.raises(RuntimeError, match="3 consecutive non-finite losses"):
        _fit(c2, tmp_path / "stop", steps=10, enable_checkpointing=False)


@pytest.mark.slow
def test_stage_b_with_compiled_residuals_matches_eager(tiny_backbone):
    """``compile_residuals=True`` reaches the adapter and changes nothing but the speed."""
    batch = batch_of([clip_item(0, (0, 5)), clip_item(1, (2, 6))])
    torch.manual_seed(0)
    eager = _module(StageB, tiny_backbone)
    fused = _module(StageB, tiny_backbone, compile_residuals=True)
    fused.adapter.load_state_dict(eager.adapter.state_dict())
    assert fused.adapter.residual_pass.compile and not eager.adapter.residual_pass.compile
    assert fused.hparams["compile_residuals"] is True
    results = []
    for module in (eager, fused):
        module.phase = 4
        torch.manual_seed(1)  # the same σ and noise for both
        loss, logs = module.compute_loss(batch, module.prepare_step(batch))
        module.zero_grad()
        loss.backward()
        results.append((loss, logs, {n: p.grad for n, p in module.adapter.named_parameters()}))
    (loss_e, logs_e, grads_e), (loss_f, logs_f, grads_f) = results
    assert fused.adapter.residual_pass.compile  # did not fall back to eager
    assert logs_e["recovery"] > 0
    torch.testing.assert_close(loss_f, loss_e, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(logs_f["recovery"], logs_e["recovery"], rtol=1e-5, atol=1e-7)
    for name, grad in grads_e.items():
        if grad is None:
            assert grads_f[name] is None, name
        else:
            torch.testing.assert_close(grads_f[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_the_condition_reads_the_refined_description_unless_the_raw_prompt_is_asked_for():
    batch = batch_of([clip_item(0), clip_item(1)])
    batch["pooled_refined"] = (
        batch["pooled"] + 1.0
    )  # the parser's description differs from the caption
    refined = StageC(adapter=tiny_adapter_config(), text_length=32)
    assert torch.equal(refined.condition(batch).pooled_text, batch["pooled_refined"])
    raw = StageC(adapter=tiny_adapter_config(prompt_source="raw"), text_length=32)
    assert torch.equal(raw.condition(batch).pooled_text, batch["pooled"])
    del batch["pooled_refined"]  # a cache written before refined descriptions were stored
    assert torch.equal(refined.condition(batch).pooled_text, batch["pooled"])
