"""``compile_backbone``: the frozen transformer's repeated blocks compiled, same velocity."""

from __future__ import annotations

import functools

import torch

from pila.backbone import WanBackbone, runtime
from pila.stages import StageC

from .helpers import batch_of, clip_item, tiny_adapter_config


def test_stage_module_compiles_the_backbone_blocks_and_matches_eager(monkeypatch, caplog):
    # aot_eager: the same graph capture as inductor without code generation (fast on CPU)
    monkeypatch.setattr(
        runtime,
        "compile_backbone",
        functools.partial(runtime.compile_backbone, backend="aot_eager"),
    )
    batch = batch_of([clip_item(0), clip_item(1)])
    steps = {}
    for compiled in (False, True):
        module = StageC(adapter=tiny_adapter_config(), text_length=32, compile_backbone=compiled)
        module.attach_backbone(WanBackbone.tiny(seed=0))
        with caplog.at_level("INFO", logger="pila.backbone.runtime"):
            steps[compiled] = module.prepare_step(batch, generator=torch.Generator().manual_seed(0))
    blocks = module.backbone.transformer.blocks
    assert all(getattr(b, "_compiled_call_impl", None) is not None for b in blocks)
    assert "first forward" in caplog.text  # the compile time is logged
    torch.testing.assert_close(
        steps[True]["v_theta"], steps[False]["v_theta"], atol=1e-5, rtol=1e-5
    )
