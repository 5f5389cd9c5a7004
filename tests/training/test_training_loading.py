"""Training loads only what it calls: the frozen transformer(s), never the text encoder or VAE."""

from __future__ import annotations

import shutil

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from pila.backbone import WanBackbone
from pila.stages import StageA, StageC

from .helpers import batch_of, clip_item, tiny_adapter_config

ROUND_OFF = dict(
    rtol=1e-5, atol=1e-5
)  # outputs of weights read back from safetensors (see tests/test_backbone.py)


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].detach().clone())


def _fit(module, steps: int = 2) -> list[torch.Tensor]:
    loader = DataLoader([clip_item(i) for i in range(2 * steps)], batch_size=2, collate_fn=batch_of)
    losses = _Losses()
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[losses],
    )
    trainer.fit(module, train_dataloaders=loader)
    return losses.losses


def _stage(cls, **kwargs):
    L.seed_everything(0, verbose=False)
    return cls(adapter=tiny_adapter_config(), text_length=32, **kwargs)


def _only_transformers(backbone: WanBackbone) -> None:
    assert backbone.loaded_components == ("transformer",)
    assert backbone.text_encoder is None and backbone.vae is None
    names = {name.split(".")[0] for name, _ in backbone.named_parameters()}
    assert names <= {"transformer", "transformer_2"}, names


def test_a_stage_trained_from_a_cache_loads_the_transformer_alone_and_loses_nothing():
    lean = _stage(StageC, backbone="tiny")
    lean_losses = _fit(lean)
    _only_transformers(lean.backbone)

    full = _stage(StageC, backbone="tiny")
    full.attach_backbone(WanBackbone.tiny(seed=0))  # text encoder and VAE loaded too
    full_losses = _fit(full)
    assert len(lean_losses) == len(full_losses) == 2
    for a, b in zip(lean_losses, full_losses, strict=True):
        assert torch.equal(a, b)  # bit for bit
    for a, b in zip(lean.adapter.parameters(), full.adapter.parameters(), strict=True):
        assert torch.equal(a, b)


def test_wan22_stages_load_both_experts_and_their_boundary_only(tmp_path):
    full = WanBackbone.tiny(seed=0, two_stage=True)
    full.save_pretrained(tmp_path / "wan22")
    # the encoders' weights are never read: training works without them on disk
    for part in ("text_encoder", "vae"):
        for weights in (tmp_path / "wan22" / part).glob("*.safetensors*"):
            weights.unlink()
    module = _stage(StageA, backbone=str(tmp_path / "wan22"))
    batch = batch_of([clip_item(0), clip_item(1)])
    step = module.prepare_step(batch, generator=torch.Generator().manual_seed(0))
    backbone = module.backbone
    _only_transformers(backbone)
    assert backbone.transformer_2 is not None and backbone.boundary_ratio == 0.875
    text = torch.nn.functional.pad(
        batch["prompt_embeds"], (0, 0, 0, 32 - batch["prompt_embeds"].shape[1])
    )
    torch.testing.assert_close(
        step["v_theta"], full.velocity(step["x_t"], step["sigma"], text), **ROUND_OFF
    )


def test_left_out_components_load_on_first_use(tiny_backbone_dir, tiny_backbone):
    lean = WanBackbone.from_pretrained(tiny_backbone_dir, components=("transformer",))
    assert lean.loaded_components == ("transformer",) and lean.text_dim == tiny_backbone.text_dim
    prompts = ["a ball bounces", "ice melts"]
    embeds = lean.encode_prompt(prompts, 16).embeds
    assert lean.loaded_components == ("transformer", "text_encoder")
    torch.testing.assert_close(embeds, tiny_backbone.encode_prompt(prompts, 16).embeds, **ROUND_OFF)
    latents = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        lean.decode_latents(latents), tiny_backbone.decode_latents(latents), **ROUND_OFF
    )
    assert lean.loaded_components == ("transformer", "text_encoder", "vae")
    assert not any(p.requires_grad for p in lean.parameters()) and not any(
        m.training for m in lean.modules()
    )

    encoders = WanBackbone.from_pretrained("tiny", components=("text_encoder", "vae"))
    assert encoders.transformer is None and encoders.latent_channels == 16
    assert encoders.vae_scale_factor_temporal == 4 and encoders.vae_scale_factor_spatial == 8
    x_t, sigma = torch.randn(1, 16, 2, 4, 4), torch.tensor([0.5])
    torch.testing.assert_close(
        encoders.velocity(x_t, sigma, embeds[:1]), tiny_backbone.velocity(x_t, sigma, embeds[:1])
    )


def test_components_left_out_follow_the_backbone_to_its_device():
    backbone = WanBackbone.from_pretrained("tiny", components=())
    assert backbone.loaded_components == () and backbone.device == torch.device("cpu")
    backbone.to("meta")
    assert backbone.load_component("vae").decoder.conv_in.weight.is_meta


def test_unknown_components_are_refused():
    with pytest.raises(ValueError, match="unknown backbone components"):
        WanBackbone.from_pretrained("tiny", components=("unet",))
    with pytest.raises(ValueError, match="unknown backbone components"):
        WanBackbone.from_pretrained("tiny", components="transformer")
    bare = WanBackbone(WanBackbone.tiny().pipeline)
    bare.text_encoder = None
    with pytest.raises(RuntimeError, match="without its text_encoder"):
        bare.encode_prompt(["a"], 8)


def test_from_a_copy_without_encoder_weights(tiny_backbone_dir, tmp_path):
    folder = tmp_path / "wan"
    shutil.copytree(tiny_backbone_dir, folder)
    for part in ("text_encoder", "vae"):
        for weights in (folder / part).glob("*.safetensors*"):
            weights.unlink()
    lean = WanBackbone.from_pretrained(folder, components=("transformer",))
    _only_transformers(lean)
    with pytest.raises(OSError):
        lean.load_component("vae")
