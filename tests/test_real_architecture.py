"""The real Wan 2.1-1.3B transformer (random weights) through stage C and ``pila.generate`` on CPU.

17 × 128 × 128 pixels → latents 16 × 5 × 16 × 16 (320 transformer tokens); the adapter
has the paper's size (``AdapterConfig()``), the prompt embeddings UMT5-XXL's width (4096).
The VAE and text encoder are dimension-compatible stand-ins
(:func:`pila.backbone.presets.random_wan_backbone`). Measured on a shared 2-core CPU
(``/usr/bin/time -v pytest tests/test_real_architecture.py``): 6.4 GB peak resident
memory, 120 s of CPU time (260 s wall while the cores were shared), of which building
the 1.42 B-parameter transformer is 40–90 s wall.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pila.adapter import AdapterConfig, PILAAdapter
from pila.backbone.presets import WAN21_T2V_1_3B_TRANSFORMER, random_wan_backbone
from pila.generation.sampling import generate
from pila.stages import StageC

pytestmark = pytest.mark.slow

FRAMES, HEIGHT, WIDTH = 17, 128, 128  # latents 16 × 5 × 16 × 16
TEXT_TOKENS = 64


@pytest.fixture(scope="module")
def backbone():
    return random_wan_backbone(seed=0)


def _clip(i: int) -> dict:
    g = torch.Generator().manual_seed(i)
    labels = torch.zeros(8)
    labels[i % 8] = 1
    return {
        "latents": torch.randn(16, 5, 16, 16, generator=g),
        "prompt_embeds": torch.randn(TEXT_TOKENS, 4096, generator=g),  # as the cache stores them
        "prompt_mask": torch.ones(TEXT_TOKENS, dtype=torch.bool),
        "pooled": torch.randn(4096, generator=g),
        "labels": labels,
        "flow": torch.randn(2, 5, 16, 16, generator=g),
        "id": f"clip{i}",
    }


def test_the_real_transformer_config_is_built(backbone):
    config = backbone.transformer.config
    for key in ("num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim", "text_dim"):
        assert config[key] == WAN21_T2V_1_3B_TRANSFORMER[key]
    params = sum(p.numel() for p in backbone.transformer.parameters())
    assert 1.3e9 < params < 1.45e9  # Wan 2.1-T2V-1.3B: 1.42 B transformer parameters


def test_one_stage_c_step_on_the_real_architecture(backbone, tmp_path):
    module = StageC(text_length=512)  # the paper's adapter and Wan's text length
    module.attach_backbone(backbone)
    before = {k: v.clone() for k, v in module.adapter.state_dict().items()}
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    items = [_clip(0)]
    trainer.fit(module, train_dataloaders=DataLoader(items, batch_size=1, collate_fn=_collate))
    after = module.adapter.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the adapter trained
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())


def _collate(items: list[dict]) -> dict:
    out = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "id"}
    out["id"] = [it["id"] for it in items]
    return out


def test_one_generation_step_on_the_real_architecture(backbone):
    adapter = PILAAdapter(AdapterConfig()).eval()
    frames = generate(
        backbone,
        "a ball bounces",
        adapter=adapter,
        seed=0,
        num_frames=FRAMES,
        height=HEIGHT,
        width=WIDTH,
        num_inference_steps=1,
        max_sequence_length=TEXT_TOKENS,
    )[0]
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert np.isfinite(frames).all()
