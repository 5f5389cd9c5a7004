"""Memory and speed options of the frozen backbone: offloading, VAE tiling/slicing, compiled blocks.

Each option must leave the frames unchanged. On a CPU-only machine diffusers' model offload
and group offload run with the CPU as their "accelerator" (``device="cpu"``), so their
hooks and the execution-device bookkeeping are exercised here; sequential offload fails on
CPU inside accelerate (the tied UMT5 embedding comes back as a plain tensor), so it and the
real CUDA round trips are GPU tests.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from pila.backbone import WanBackbone
from pila.backbone.runtime import (
    MemoryConfig,
    apply_memory_options,
    compile_backbone,
    execution_device,
)
from pila.generation.sampling import generate

PROMPT = "a ball bounces on the floor"
SMALL = {
    "num_frames": 5,
    "height": 16,
    "width": 16,
    "num_inference_steps": 4,
    "max_sequence_length": 16,
}


def _frames(backbone, memory=None, device=None, adapter=None):
    return generate(
        backbone, PROMPT, seed=3, adapter=adapter, memory=memory, device=device, **SMALL
    )[0]


@pytest.fixture(scope="module")
def reference(adapter_factory):
    adapter = adapter_factory(trained=True, seed=3)
    return _frames(WanBackbone.tiny(seed=0), adapter=adapter)


def test_memory_config_rejects_bad_values():
    with pytest.raises(ValueError, match="offload must be one of"):
        MemoryConfig(offload="disk")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group_blocks"):
        MemoryConfig(offload="group", group_blocks=0)


@pytest.mark.parametrize("offload", ["model", "group"])
def test_offload_and_vae_tiling_leave_the_frames_unchanged_on_cpu(
    offload, reference, adapter_factory
):
    backbone = WanBackbone.tiny(seed=0)
    adapter = adapter_factory(trained=True, seed=3)
    memory = MemoryConfig(offload=offload, vae_tiling=True, vae_slicing=True)
    frames = _frames(backbone, memory, "cpu", adapter)
    np.testing.assert_array_equal(frames, reference)
    # the hooks are diffusers' own: the execution device is the onload device
    assert execution_device(backbone.pipeline).type == "cpu"
    assert backbone.pipeline.vae.use_tiling and backbone.pipeline.vae.use_slicing
    assert next(adapter.parameters()).device.type == "cpu"


def test_the_adapter_runs_on_the_execution_device_not_where_offloaded_weights_sit(
    monkeypatch, reference, adapter_factory
):
    """Sequential offload leaves the transformer on the meta device; the adapter must not follow."""
    backbone = WanBackbone.tiny(seed=0)
    adapter = adapter_factory(trained=True, seed=3)
    apply_memory_options(backbone.pipeline, MemoryConfig(offload="model"), "cpu")
    # what a sequentially offloaded transformer reports
    monkeypatch.setattr(WanBackbone, "device", property(lambda self: torch.device("meta")))
    frames = _frames(backbone, adapter=adapter)
    np.testing.assert_array_equal(frames, reference)


def test_compiled_blocks_match_eager_frames():
    """Regional compilation (aot_eager: the same graph capture, no codegen) within 1e-5."""
    eager = _frames(WanBackbone.tiny(seed=0))
    backbone = WanBackbone.tiny(seed=0)
    compile_backbone([backbone.transformer], backend="aot_eager")
    compiled = _frames(backbone)
    np.testing.assert_allclose(compiled, eager, atol=1e-5, rtol=0)
    assert any(
        getattr(b, "_compiled_call_impl", None) is not None for b in backbone.transformer.blocks
    )


def test_predict_module_takes_memory_and_compile_options(monkeypatch):
    from pila.backbone import runtime
    from pila.generation import predict

    monkeypatch.setattr(
        predict,
        "compile_backbone",
        functools.partial(runtime.compile_backbone, backend="aot_eager"),
    )
    module = predict.PILAPredictModule(
        backbone="tiny",
        memory=MemoryConfig(offload="group", vae_tiling=True),
        compile_backbone=True,
    )
    module.setup("predict")
    backbone = module.backbone
    assert backbone.pipeline.vae.use_tiling
    assert any(
        getattr(b, "_compiled_call_impl", None) is not None for b in backbone.transformer.blocks
    )


@pytest.mark.gpu
@pytest.mark.parametrize("offload", ["none", "model", "sequential", "group"])
def test_every_offload_mode_on_cuda_matches_the_plain_run(offload, adapter_factory):
    """On CUDA (fp32, deterministic kernels aside): frames equal the un-offloaded run."""
    adapter = adapter_factory(trained=True, seed=3)
    reference = _frames(WanBackbone.tiny(seed=0).to("cuda"), adapter=adapter)
    backbone = WanBackbone.tiny(seed=0)
    adapter = adapter_factory(trained=True, seed=3)
    frames = _frames(backbone, MemoryConfig(offload=offload, vae_tiling=True), "cuda", adapter)
    assert execution_device(backbone.pipeline).type == "cuda"
    assert next(adapter.parameters()).device.type == "cuda"
    np.testing.assert_allclose(frames, reference, atol=1e-5, rtol=0)
