"""WISA80KDataModule: cache checks with the exact prepare command, batches, split, on-the-fly
parity."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from data_helpers import CLIP

from pila.datamodules.cache import CacheCorruptError, CacheMismatchError, CacheMissingError
from pila.datamodules.prepare import main as prepare_main
from pila.datamodules.split import split_score
from pila.datamodules.wisa import WISA80KDataModule


def data_module(fixture, cache_dir, **kwargs) -> WISA80KDataModule:
    settings = dict(
        annotations=str(fixture["annotations"]),
        videos=str(fixture["videos"]),
        cache_dir=None if cache_dir is None else str(cache_dir),
        num_frames=CLIP.num_frames,
        height=CLIP.height,
        width=CLIP.width,
        batch_size=4,
        num_workers=0,
        val_fraction=0.3,
    )
    settings.update(kwargs)
    return WISA80KDataModule(**settings)


def test_a_missing_cache_names_the_exact_prepare_command_that_builds_it(tmp_path, wisa_fixture):
    module = data_module(
        wisa_fixture, tmp_path / "cache", storage_dtype="float32", prepare_workers=0
    )
    with pytest.raises(CacheMissingError) as info:
        module.setup("fit")
    message = str(info.value)
    command = next(
        line.strip() for line in message.splitlines() if line.strip().startswith("pila prepare")
    )
    assert "prepare_if_missing" in message and "encode_on_the_fly" in message
    words = shlex.split(command)
    assert (
        words[:2] == ["pila", "prepare"]
        and "--num-frames" in words
        and str(tmp_path / "cache") in words
    )
    assert prepare_main(words[2:]) == 0  # the command as printed builds a cache the module accepts
    module.setup("fit")
    assert len(module.train_set) + len(module.val_set) == 6


def test_batches_have_the_documented_keys_shapes_and_types(prepared, wisa_fixture):
    _, _, cache = prepared
    module = data_module(wisa_fixture, cache)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    size = len(batch["id"])
    assert batch["latents"].shape == (size, 16, 5, 4, 6) and batch["latents"].dtype == torch.float32
    assert batch["flow"].shape == (size, 2, 5, 4, 6) and batch["flow"].dtype == torch.float32
    assert batch["prompt_embeds"].shape == (size, 512, 32)  # padded as WanPipeline pads
    assert batch["prompt_mask"].dtype == torch.bool and batch["prompt_mask"].shape == (size, 512)
    assert batch["pooled"].shape == (size, 32)
    assert batch["labels"].shape == (size, 8) and batch["labels"].dtype == torch.float32
    assert set(batch["labels"].unique().tolist()) <= {0.0, 1.0} and bool(
        (batch["labels"].sum(1) >= 1).all()
    )
    assert all(isinstance(p, str) and p for p in batch["prompt"])
    lengths = batch["prompt_mask"].sum(1)
    for i, length in enumerate(lengths.tolist()):
        assert torch.all(batch["prompt_embeds"][i, length:] == 0)


def test_the_split_is_the_video_name_hash(prepared, wisa_fixture):
    _, _, cache = prepared
    module = data_module(wisa_fixture, cache, val_fraction=0.3, split_seed=7)
    module.setup("fit")
    train, val = module.train_set.video_names, module.val_set.video_names
    assert sorted(train + val) == sorted(wisa_fixture["good"]) and not set(train) & set(val)
    expected = [n for n in wisa_fixture["good"] if split_score(n, 7) < 0.3]
    assert val == (expected or [min(wisa_fixture["good"], key=lambda n: split_score(n, 7))])
    again = data_module(wisa_fixture, cache, val_fraction=0.3, split_seed=7)
    again.setup("fit")
    assert again.val_set.video_names == val
    assert next(iter(again.val_dataloader()))["id"] == [Path(n).stem for n in val][:4]


def test_encoding_on_the_fly_gives_the_cached_batch(prepared, wisa_fixture, tiny_backbone):
    _, _, cache = prepared
    cached = data_module(wisa_fixture, cache, val_fraction=0.5)
    cached.setup("fit")
    live = data_module(wisa_fixture, None, encode_on_the_fly=True, val_fraction=0.5)
    live.attach_backbone(tiny_backbone)
    live.setup("fit")
    # the same split of the good clips (bad videos only show up when decoded)
    good_val = {Path(n).stem for n in cached.val_set.video_names}
    assert good_val <= set(live.val_set.ids) and not good_val & set(live.train_set.ids)
    raw = next(iter(live.val_dataloader()))
    assert raw["video"].dtype == torch.uint8 and "latents" not in raw
    encoded = live.on_after_batch_transfer(raw, 0)
    assert "video" not in encoded
    # a record whose video fails to decode is replaced by the next good one
    assert set(encoded["id"]) <= good_val
    reference = cached.val_set.subset(encoded["id"])
    expected = next(
        iter(
            torch.utils.data.DataLoader(
                reference, batch_size=len(reference), collate_fn=cached.val_dataloader().collate_fn
            )
        )
    )
    assert encoded["id"] == expected["id"] and encoded["prompt"] == expected["prompt"]
    for key in ("latents", "prompt_embeds", "pooled", "pooled_refined"):
        torch.testing.assert_close(encoded[key], expected[key], rtol=1e-4, atol=1e-4)
    for key in ("prompt_mask", "labels", "flow"):
        assert torch.equal(encoded[key], expected[key]), key


def test_on_the_fly_batches_condition_on_the_annotated_description(
    tmp_path, wisa_fixture, tiny_backbone
):
    records = json.loads(Path(wisa_fixture["annotations"]).read_text())
    for record in records:  # as `pila prepare --relabel-only --llm-labeler …` writes them
        if isinstance(record, dict) and isinstance(record.get("captions"), str):
            record["pila_description"] = "a physical description of " + record["captions"].strip()
    annotations = tmp_path / "described.json"
    annotations.write_text(json.dumps(records))
    live = data_module({**wisa_fixture, "annotations": annotations}, None, encode_on_the_fly=True)
    live.attach_backbone(tiny_backbone)
    live.setup("fit")
    encoded = live.on_after_batch_transfer(next(iter(live.train_dataloader())), 0)
    descriptions = ["a physical description of " + prompt for prompt in encoded["prompt"]]
    refined = tiny_backbone.encode_prompt(descriptions, max_sequence_length=512).pooled
    caption = tiny_backbone.encode_prompt(encoded["prompt"], max_sequence_length=512).pooled
    torch.testing.assert_close(encoded["pooled_refined"], refined, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(encoded["pooled"], caption, rtol=1e-4, atol=1e-5)


def test_a_cache_with_other_settings_is_refused_with_the_fix(prepared, wisa_fixture):
    _, _, cache = prepared
    module = data_module(wisa_fixture, cache, flow_max_side=128, min_quality=4.0)
    with pytest.raises(CacheMismatchError) as info:
        module.setup("fit")
    message = str(info.value)
    assert "flow.max_side: cache has 256, asked for 128" in message
    assert (
        "filters.min_quality" in message
        and "--flow-max-side 128" in message
        and "--overwrite" in message
    )


def test_a_corrupt_shard_stops_setup_with_its_name(prepared, wisa_fixture, tmp_path):
    _, _, cache = prepared
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    shard = copy / "shard-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")
    module = data_module(wisa_fixture, copy)
    with pytest.raises(CacheCorruptError, match="shard-00002.safetensors"):
        module.setup("fit")
    # the check can be skipped deliberately
    unchecked = data_module(wisa_fixture, copy, verify_cache=False)
    unchecked.setup("fit")


def test_constructor_arguments_are_validated():
    with pytest.raises(ValueError, match="cache_dir is required"):
        WISA80KDataModule(annotations="a.json", videos="v")
    with pytest.raises(ValueError, match="val_fraction"):
        WISA80KDataModule(annotations="a.json", videos="v", cache_dir="c", val_fraction=1.5)
    with pytest.raises(ValueError, match="num_frames"):
        WISA80KDataModule(annotations="a.json", videos="v", cache_dir="c", num_frames=1)


def test_lightning_cli_builds_it_from_yaml(tmp_path, wisa_fixture):
    from pila.cli import PilaCLI

    config = tmp_path / "data.yaml"
    config.write_text(
        "model:\n  class_path: lightning.pytorch.demos.boring_classes.BoringModel\n"
        "data:\n  class_path: pila.datamodules.WISA80KDataModule\n  init_args:\n"
        f"    annotations: {wisa_fixture['annotations']}\n    videos: {wisa_fixture['videos']}\n"
        f"    cache_dir: {tmp_path / 'cache'}\n    num_frames: 17\n"
        "    short_clip: loop\n    min_quality: null\n"
    )
    cli = PilaCLI(args=["--config", str(config)], run=False)
    module = cli.datamodule
    assert isinstance(module, WISA80KDataModule)
    assert (
        module.prepare_settings.clip.num_frames == 17
        and module.prepare_settings.clip.short_clip == "loop"
    )


def test_a_cache_built_by_another_backbone_is_refused_naming_both(
    tmp_path, wisa_fixture, tiny_backbone_dir
):
    from types import SimpleNamespace

    from pila.backbone import WanBackbone
    from pila.datamodules.prepare import backbone_identity

    other = tmp_path / "tiny_seed1"
    WanBackbone.tiny(seed=1).save_pretrained(other)  # same configs and file sizes, other weights
    assert (
        backbone_identity(str(other))["fingerprint"]
        != backbone_identity(str(tiny_backbone_dir))["fingerprint"]
    )
    moved = tmp_path / "moved"
    shutil.copytree(tiny_backbone_dir, moved)
    assert (
        backbone_identity(str(moved))["fingerprint"]
        == backbone_identity(str(tiny_backbone_dir))["fingerprint"]
    )

    cache = tmp_path / "cache"
    built = data_module(
        wisa_fixture,
        cache,
        backbone=str(tiny_backbone_dir),
        storage_dtype="float32",
        prepare_workers=0,
        prepare_if_missing=True,
        device="cpu",
    )
    built.prepare_data()
    with pytest.raises(CacheMismatchError) as info:
        data_module(wisa_fixture, cache, backbone=str(other), storage_dtype="float32").setup("fit")
    message = str(info.value)
    assert (
        str(tiny_backbone_dir.resolve()) in message
        and str(other) in message
        and "allow_backbone_mismatch" in message
    )
    # the training module's backbone is checked too
    module = data_module(wisa_fixture, cache, backbone=str(moved), storage_dtype="float32")
    module.trainer = SimpleNamespace(
        lightning_module=SimpleNamespace(hparams={"backbone": str(other)}), local_rank=0
    )
    with pytest.raises(CacheMismatchError, match="training module's backbone"):
        module.setup("fit")
    # an explicit override trains on it
    allowed = data_module(
        wisa_fixture,
        cache,
        backbone=str(other),
        storage_dtype="float32",
        allow_backbone_mismatch=True,
    )
    allowed.setup("fit")
    assert len(allowed.train_set) + len(allowed.val_set) == 6
