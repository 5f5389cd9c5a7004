"""What data preparation loads of the backbone: its text encoder and VAE, never its transformer."""

from __future__ import annotations

import torch
from data_helpers import CLIP

from pila.datamodules.cache import read_manifest
from pila.datamodules.wisa import WISA80KDataModule


def test_on_the_fly_encoding_loads_the_encoders_alone_and_gives_the_cached_batch(
    prepared, wisa_fixture, tiny_backbone
):
    _, _, cache = prepared
    settings = dict(
        annotations=str(wisa_fixture["annotations"]),
        videos=str(wisa_fixture["videos"]),
        num_frames=CLIP.num_frames,
        height=CLIP.height,
        width=CLIP.width,
        batch_size=4,
        num_workers=0,
        val_fraction=0.5,
    )
    live = WISA80KDataModule(cache_dir=None, encode_on_the_fly=True, **settings)
    live.setup("fit")  # loads its own backbone: no attach_backbone
    encoded = live.on_after_batch_transfer(next(iter(live.val_dataloader())), 0)
    backbone = live._backbone
    assert backbone.loaded_components == ("text_encoder", "vae") and backbone.transformer is None
    cached = WISA80KDataModule(cache_dir=str(cache), **settings)
    cached.setup("fit")
    reference = cached.val_set.subset(encoded["id"])
    expected = next(
        iter(
            torch.utils.data.DataLoader(
                reference, batch_size=len(reference), collate_fn=cached.val_dataloader().collate_fn
            )
        )
    )
    for key in ("latents", "prompt_embeds", "pooled", "pooled_refined"):
        torch.testing.assert_close(encoded[key], expected[key], rtol=1e-4, atol=1e-4)


def test_prepare_loads_no_transformer(prepared, monkeypatch, tmp_path, wisa_fixture):
    from data_helpers import prepare_config

    from pila.backbone import WanBackbone
    from pila.datamodules.prepare import prepare_cache

    loaded = []
    original = WanBackbone.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        backbone = original(cls, *args, **kwargs)
        loaded.append(backbone)
        return backbone

    monkeypatch.setattr(WanBackbone, "from_pretrained", classmethod(spy))
    out = tmp_path / "cache"
    prepare_cache(prepare_config(wisa_fixture, out, limit=4))
    assert [b.loaded_components for b in loaded] == [("text_encoder", "vae")]
    assert read_manifest(out)["complete"]
