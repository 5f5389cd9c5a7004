"""The lab's capacity control: the world's transformer fine-tuned with a LoRA."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from pila.adapter import AdapterConfig, PILAAdapter
from pila.adapter.loading import safetensors_sha256
from pila.backbone import WanBackbone
from pila.stages.export import main as export_main
from pila.stages.finetune import (
    LORA_METADATA_KEY,
    LORA_TARGETS,
    LORA_WEIGHTS,
    WorldFinetune,
    _canonical_lora_metadata,
    load_transformer_lora,
    lora_parameter_count,
)
from tests.training.helpers import batch_of, clip_item

ROOT = Path(__file__).resolve().parents[2]


def lab_batch(n: int = 2) -> dict:
    """Items shaped as the lab world's latents (16 channels), text of its width (32)."""
    return batch_of([clip_item(i) for i in range(n)])


def test_lora_matches_the_plain_adapters_trainable_parameters_within_ten_percent():
    stage_c = yaml.safe_load((ROOT / "lightning_configs/lab/stageC.yaml").read_text())
    plain = PILAAdapter(
        AdapterConfig(**stage_c["model"]["init_args"]["adapter"], plain_adapter=True)
    )
    plain_count = sum(p.numel() for p in plain.parameters() if p.requires_grad)
    module = WorldFinetune(backbone="lab")
    lora_count = module.num_trainable_parameters()
    assert lora_count == lora_parameter_count(module.transformer, 19, LORA_TARGETS)
    assert abs(lora_count - plain_count) <= 0.10 * plain_count, (lora_count, plain_count)
    frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
    assert frozen and all("lora_" not in n for n in frozen)


def test_a_fresh_lora_is_the_world_and_training_moves_only_the_lora():
    module = WorldFinetune(backbone="lab", lr=1e-2)
    world = WanBackbone.from_pretrained("lab", dtype="float32", components=("transformer",))
    batch = lab_batch()
    x_t, sigma = batch["latents"], torch.tensor([0.3, 0.8])
    text = batch["prompt_embeds"]
    with torch.no_grad():
        assert torch.equal(module.velocity(x_t, sigma, text), world.velocity(x_t, sigma, text))
    frozen_before = {n: p.clone() for n, p in module.named_parameters() if not p.requires_grad}
    optimizer = module.configure_optimizers()
    torch.manual_seed(0)
    first = module.flow_loss(batch, generator=torch.Generator().manual_seed(0))
    for _ in range(6):
        optimizer.zero_grad()
        module.flow_loss(batch, generator=torch.Generator().manual_seed(0)).backward()
        optimizer.step()
    last = module.flow_loss(batch, generator=torch.Generator().manual_seed(0))
    assert last < first  # the same σ and noise draw: the LoRA fits it
    for name, param in module.named_parameters():
        if not param.requires_grad:
            assert torch.equal(param, frozen_before[name]), name


def test_checkpoint_holds_the_lora_alone_and_export_reproduces_the_trained_velocity(tmp_path):
    module = WorldFinetune(backbone="lab", lr=1e-2)
    optimizer = module.configure_optimizers()
    batch = lab_batch()
    for _ in range(3):
        optimizer.zero_grad()
        module.flow_loss(batch, generator=torch.Generator().manual_seed(1)).backward()
        optimizer.step()
    hparams = dict(module.hparams) | {"_class_path": "pila.stages.finetune.WorldFinetune"}
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": hparams}  # as pila fit
    module.on_save_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == set(module.lora_parameters())
    torch.save(checkpoint, tmp_path / "last.ckpt")

    assert (
        export_main(["--ckpt", str(tmp_path / "last.ckpt"), "--out", str(tmp_path / "lora")]) == 0
    )
    folder = tmp_path / "lora"
    weights = folder / LORA_WEIGHTS
    # readable as the umask allows (safetensors alone writes 0600), targets in sorted order
    assert stat.S_IMODE(weights.stat().st_mode) == 0o666 & ~current_umask()
    with safe_open(str(weights), framework="pt") as f:
        targets = json.loads(f.metadata()[LORA_METADATA_KEY])["target_modules"]
    assert targets == sorted(LORA_TARGETS)
    backbone = WanBackbone.from_pretrained("lab", dtype="float32", components=("transformer",))
    load_transformer_lora(backbone, folder)
    assert not any("lora_" in n for n, _ in backbone.transformer.named_parameters())  # fused
    x_t, sigma, text = batch["latents"], torch.tensor([0.5, 0.9]), batch["prompt_embeds"]
    with torch.no_grad():
        expected = module.velocity(x_t, sigma, text)
    torch.testing.assert_close(backbone.velocity(x_t, sigma, text), expected, atol=1e-5, rtol=1e-4)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_the_same_lora_has_one_identity_whatever_order_its_targets_were_listed_in(tmp_path):
    """peft holds the targets as a set, listed in the order of the process's string hashing:
    two exports of one LoRA must still have one identity (it names the videos it made)."""
    tensors = {"blocks.0.attn1.to_q.lora_A.weight": torch.arange(6.0).reshape(2, 3)}
    files = []
    for i, order in enumerate((LORA_TARGETS, tuple(reversed(LORA_TARGETS)))):
        config = {"target_modules": list(order), "r": 19, "lora_alpha": 19.0}
        path = tmp_path / f"{i}.safetensors"
        save_file(tensors, str(path), metadata={LORA_METADATA_KEY: json.dumps(config)})
        _canonical_lora_metadata(path)
        files.append(safetensors_sha256(path))
    assert files[0] == files[1]
    with safe_open(str(tmp_path / "0.safetensors"), framework="pt") as f:
        assert torch.equal(
            f.get_tensor("blocks.0.attn1.to_q.lora_A.weight"),
            tensors["blocks.0.attn1.to_q.lora_A.weight"],
        )


def test_a_checkpoint_of_another_rank_and_a_two_transformer_backbone_are_refused(tmp_path):
    module = WorldFinetune(backbone="lab", lora_rank=4)
    with pytest.raises(ValueError, match="lacks .* LoRA tensors"):
        module.on_load_checkpoint({"state_dict": {}})
    folder = tmp_path / "wan22"
    WanBackbone.tiny(two_stage=True).pipeline.save_pretrained(folder)
    with pytest.raises(ValueError, match="has two"):
        WorldFinetune(backbone=str(folder))


def test_pila_predict_fuses_the_lora_into_the_world_and_refuses_it_beside_an_adapter(tmp_path):
    from pila.generation import PILAPredictModule

    module = WorldFinetune(backbone="lab", lr=1e-2)
    optimizer = module.configure_optimizers()
    optimizer.zero_grad()
    module.flow_loss(lab_batch(), generator=torch.Generator().manual_seed(2)).backward()
    optimizer.step()
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "last.ckpt")
    assert (
        export_main(["--ckpt", str(tmp_path / "last.ckpt"), "--out", str(tmp_path / "lora")]) == 0
    )

    predict = PILAPredictModule(
        backbone="lab", dtype="float32", transformer_lora=str(tmp_path / "lora")
    )
    predict.setup("predict")
    assert predict.generation_settings()["transformer_lora"] == str(tmp_path / "lora")
    world = WanBackbone.from_pretrained("lab", dtype="float32", components=("transformer",))
    tuned = dict(predict.backbone.transformer.named_parameters())
    changed = [n for n, p in world.transformer.named_parameters() if not torch.equal(p, tuned[n])]
    assert changed and all(".attn" in n or ".ffn" in n for n in changed)
    with pytest.raises(ValueError, match="give one of them"):
        PILAPredictModule(backbone="lab", adapter=str(tmp_path), transformer_lora=str(tmp_path))
