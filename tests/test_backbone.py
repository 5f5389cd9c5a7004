"""The frozen Wan backbone: tiny preset, save/load, freezing, Wan 2.2 boundary, errors."""

from __future__ import annotations

import json

import pytest
import torch

from pila.backbone import WanBackbone


def _inputs(batch: int = 2):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, 16, 3, 4, 4, generator=gen), torch.tensor([0.9, 0.2][:batch])


def test_tiny_preset_is_deterministic_from_its_seed():
    a, b, c = WanBackbone.tiny(seed=3), WanBackbone.tiny(seed=3), WanBackbone.tiny(seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


# Weights round-trip bit for bit. Outputs are compared to float32 round-off: tensors loaded
# from safetensors sit at other memory alignments than freshly built ones, and CPU matmul
# kernels then take other code paths (seen: 2e-7 apart with diffusers 0.42, safetensors 0.8).
ROUND_OFF = dict(rtol=1e-5, atol=1e-5)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_and_load_round_trip_keeps_every_weight_and_output(tiny_backbone, tiny_backbone_dir):
    loaded = WanBackbone.from_pretrained(tiny_backbone_dir)
    assert _same_weights(tiny_backbone, loaded)
    prompts = ["a ball bounces on the floor", "ice melts in the sun"]
    e0, e1 = tiny_backbone.encode_prompt(prompts, 32), loaded.encode_prompt(prompts, 32)
    assert torch.equal(e0.mask, e1.mask)
    torch.testing.assert_close(e0.embeds, e1.embeds, **ROUND_OFF)
    x_t, sigma = _inputs()
    torch.testing.assert_close(
        tiny_backbone.velocity(x_t, sigma, e0.embeds),
        loaded.velocity(x_t, sigma, e0.embeds),
        **ROUND_OFF,
    )
    torch.testing.assert_close(
        tiny_backbone.decode_latents(x_t[:1]), loaded.decode_latents(x_t[:1]), **ROUND_OFF
    )
    # the whole diffusers pipeline too
    kwargs = dict(num_frames=5, height=32, width=32, num_inference_steps=2, output_type="np")
    f0 = tiny_backbone.pipeline(
        "a ball", generator=torch.Generator().manual_seed(0), **kwargs
    ).frames
    f1 = loaded.pipeline("a ball", generator=torch.Generator().manual_seed(0), **kwargs).frames
    torch.testing.assert_close(torch.as_tensor(f0), torch.as_tensor(f1), **ROUND_OFF)


def test_backbone_is_frozen_and_builds_no_graph(tiny_backbone):
    assert not any(p.requires_grad for p in tiny_backbone.parameters())
    tiny_backbone.train()
    assert not tiny_backbone.training and not any(m.training for m in tiny_backbone.modules())
    x_t, sigma = _inputs()
    x_t.requires_grad_(True)
    text = tiny_backbone.encode_prompt(["a", "b"], 16).embeds
    v = tiny_backbone.velocity(x_t, sigma, text)
    assert v.grad_fn is None and not v.requires_grad


def test_prompt_embedding_mask_and_pooled_vector(tiny_backbone):
    out = tiny_backbone.encode_prompt(["short", "a somewhat longer prompt"], max_sequence_length=40)
    lengths = out.mask.sum(dim=1)
    assert out.embeds.shape == (2, 40, tiny_backbone.text_dim)
    assert lengths[0] < lengths[1]
    for i, n in enumerate(lengths.tolist()):
        assert torch.all(out.embeds[i, n:] == 0)  # zero past the valid tokens, as WanPipeline does
        torch.testing.assert_close(out.pooled[i], out.embeds[i, :n].mean(dim=0))
    # identical to the embeddings WanPipeline feeds its transformer
    ref = tiny_backbone.pipeline._get_t5_prompt_embeds(
        ["short", "a somewhat longer prompt"], max_sequence_length=40
    )
    torch.testing.assert_close(out.embeds, ref)


def test_vae_normalisation_matches_the_pipeline(tiny_backbone):
    video = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = tiny_backbone.encode_video(video)
    assert z.shape == (1, 16, *tiny_backbone.latent_shape(9, 32, 32)[1:])
    cfg = tiny_backbone.vae.config
    raw = tiny_backbone.vae.encode(video).latent_dist.mode()
    mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(z * std + mean, raw)
    decoded = tiny_backbone.decode_latents(z)
    assert decoded.shape == video.shape and decoded.abs().max() <= 1


def test_wan22_transformer_selection_matches_diffusers():
    backbone = WanBackbone.tiny(seed=0, two_stage=True)
    calls: list[tuple[str, float]] = []
    for name in ("transformer", "transformer_2"):
        model = getattr(backbone, name)
        model.register_forward_pre_hook(
            lambda mod, args, kwargs, name=name: calls.append((name, float(kwargs["timestep"][0]))),
            with_kwargs=True,
        )
    backbone.pipeline(
        "a ball",
        num_frames=5,
        height=32,
        width=32,
        num_inference_steps=8,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    )
    assert {n for n, _ in calls} == {"transformer", "transformer_2"}
    for name, t in calls:
        chosen = backbone.select_transformer(torch.tensor(t))
        assert chosen is getattr(backbone, name), (name, t)
        assert (t >= backbone.boundary_ratio * 1000) == (name == "transformer")
    # and a mixed batch is split between the two experts
    x_t, _ = _inputs()
    sigma = torch.tensor([0.95, 0.3])
    text = backbone.encode_prompt(["a", "b"], 16).embeds
    v = backbone.velocity(x_t, sigma, text)
    with torch.no_grad():
        hi = backbone.transformer(
            hidden_states=x_t[:1],
            timestep=sigma[:1] * 1000,
            encoder_hidden_states=text[:1],
            return_dict=False,
        )[0]
        lo = backbone.transformer_2(
            hidden_states=x_t[1:],
            timestep=sigma[1:] * 1000,
            encoder_hidden_states=text[1:],
            return_dict=False,
        )[0]
    torch.testing.assert_close(v, torch.cat([hi, lo]))


def test_wan22_folder_round_trip_keeps_both_transformers(tmp_path):
    backbone = WanBackbone.tiny(seed=1, two_stage=True)
    backbone.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["boundary_ratio"] == 0.875
    loaded = WanBackbone.from_pretrained(tmp_path)
    assert loaded.transformer_2 is not None and loaded.boundary_ratio == 0.875
    x_t, sigma = _inputs()
    text = backbone.encode_prompt(["a", "b"], 16).embeds
    assert _same_weights(backbone, loaded)
    torch.testing.assert_close(
        backbone.velocity(x_t, sigma, text), loaded.velocity(x_t, sigma, text), **ROUND_OFF
    )


def test_missing_folder_error_names_path_and_layout(tmp_path):
    missing = tmp_path / "no_such_wan"
    with pytest.raises(FileNotFoundError) as info:
        WanBackbone.from_pretrained(missing)
    assert str(missing) in str(info.value) and "model_index.json" in str(info.value)


def test_incomplete_folder_error_lists_missing_parts(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "vae").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        WanBackbone.from_pretrained(tmp_path)
    message = str(info.value)
    assert "transformer" in message and "text_encoder" in message and "tokenizer" in message
    assert "missing" in message


def test_dtype_from_config(tiny_backbone_dir):
    loaded = WanBackbone.from_pretrained(tiny_backbone_dir, dtype="bf16")
    assert loaded.transformer.dtype == torch.bfloat16 and loaded.vae.dtype == torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        WanBackbone.from_pretrained(tiny_backbone_dir, dtype="float8")


def test_hub_id_without_network_says_how_to_proceed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as info:
        WanBackbone.from_pretrained("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    message = str(info.value)
    assert "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in message and "pass the local folder" in message


@pytest.mark.parametrize(
    "value", ["checkpoints/Wan2.1-T2V-1.3B-Diffusers", "./Wan2.1", "~/no-such-wan-folder", "a/b/c"]
)
def test_a_missing_path_is_folder_not_found_not_a_download(tmp_path, monkeypatch, value):
    (tmp_path / "checkpoints").mkdir()
    monkeypatch.chdir(tmp_path)

    def no_download(*args, **kwargs):
        raise AssertionError(f"{value!r} was tried as a hub id")

    monkeypatch.setattr("pila.backbone.wan.WanPipeline.from_pretrained", no_download)
    with pytest.raises(FileNotFoundError, match="folder not found") as info:
        WanBackbone.from_pretrained(value)
    assert value.lstrip("./~") in str(info.value)
