"""``pila prepare``: cache contents, rejections, resume after a kill, checksums, command line."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import torch
from data_helpers import CLIP, prepare_config
from safetensors import safe_open
from safetensors.torch import save_file

from pila.categories import labels_to_multihot
from pila.datamodules.cache import (
    CacheCorruptError,
    CachedClips,
    CacheMismatchError,
    file_sha256,
    read_manifest,
    read_shard_metadata,
)
from pila.datamodules.clips import ClipConfig, frames_to_model_range, read_clip
from pila.datamodules.flow_targets import FlowConfig, flow_target
from pila.datamodules.prepare import PrepareConfig, main, prepare_cache
from pila.datamodules.prepare_config import canonical_argv, command_line_leaves, parse_command_line
from pila.datamodules.sources import VideoIndex, open_video


def test_bad_data_is_skipped_with_reasons_and_the_rest_is_cached(prepared, wisa_fixture):
    config, summary, out = prepared
    expected = Counter(wisa_fixture["expected"].values()) + Counter({"malformed_record": 1})
    assert summary.rejected == dict(expected)
    assert summary.num_clips == len(wisa_fixture["good"]) == 6
    assert summary.num_entries == 6 + len(wisa_fixture["expected"]) + 1
    lines = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert len(lines) == sum(expected.values())
    assert all({"video_name", "reason", "detail", "index"} <= set(line) for line in lines)
    by_name = {line["video_name"]: line["reason"] for line in lines}
    for name, reason in wisa_fixture["expected"].items():
        assert by_name[name] == reason
    manifest = read_manifest(out)
    assert (
        manifest["complete"]
        and manifest["num_clips"] == 6
        and manifest["rejected"] == summary.rejected
    )
    assert manifest["latent_shape"] == [16, 5, 4, 6] and manifest["text_dim"] == 32
    assert manifest["backbone"]["source"] == "tiny"
    assert manifest["settings"]["clip"]["num_frames"] == 17
    for entry in manifest["shards"]:
        assert file_sha256(out / entry["file"]) == entry["sha256"]
    relabeled = json.loads((out / "annotations.relabeled.json").read_text())
    assert sorted(r["video_name"] for r in relabeled) == sorted(wisa_fixture["good"])


def test_cached_clips_equal_a_direct_encoding(prepared, wisa_fixture, tiny_backbone):
    config, _, out = prepared
    clips = CachedClips(out)
    assert sorted(clips.ids) == sorted(Path(n).stem for n in wisa_fixture["good"])
    index = VideoIndex.scan(wisa_fixture["videos"])
    for name, labels in [
        (wisa_fixture["good"][1], ["phase_change", "thermal"]),
        (wisa_fixture["good"][4], ["optical"]),
    ]:
        item = clips[clips.ids.index(Path(name).stem)]
        frames = read_clip(open_video(index.get(name)), CLIP)
        video = frames_to_model_range(frames)[None]  # (1, 3, F, H, W)
        torch.testing.assert_close(
            item["latents"], tiny_backbone.encode_video(video)[0], rtol=1e-4, atol=1e-4
        )
        torch.testing.assert_close(item["flow"], flow_target(frames, FlowConfig()))
        text = tiny_backbone.encode_prompt([item["prompt"]], max_sequence_length=512)
        valid = int(text.mask.sum())
        assert item["prompt_embeds"].shape == (valid, 32) and bool(item["prompt_mask"].all())
        torch.testing.assert_close(
            item["prompt_embeds"], text.embeds[0, :valid], rtol=1e-4, atol=1e-5
        )
        torch.testing.assert_close(item["pooled"], text.pooled[0], rtol=1e-4, atol=1e-5)
        assert torch.equal(
            item["pooled_refined"], item["pooled"]
        )  # no parser: the caption conditions
        assert torch.equal(item["labels"], labels_to_multihot(labels))
        assert item["latents"].shape == (16, 5, 4, 6) and item["flow"].shape == (2, 5, 4, 6)


def test_a_parser_description_is_cached_as_the_adapter_condition(
    tmp_path, wisa_fixture, tiny_backbone
):
    from pila.parser.base import ParsedPrompt

    def labeler(raw):  # an LLM-style parser: labels and a refined description
        caption = raw["captions"].strip()
        return ParsedPrompt(caption, f"physics: {caption.lower()} under gravity", ("fluid",), "llm")

    out = tmp_path / "cache"
    prepare_cache(
        prepare_config(wisa_fixture, out, workers=0), backbone=tiny_backbone, labeler=labeler
    )
    clips = CachedClips(out)
    described = {
        clip["id"]: clip["description"]
        for entry in read_manifest(out)["shards"]
        if entry["num_clips"]
        for clip in read_shard_metadata(out / entry["file"])["clips"]
        if "description" in clip
    }
    assert described  # records without their own pila_labels went through the parser
    for clip_id, description in described.items():
        item = clips[clips.ids.index(clip_id)]
        assert description == f"physics: {item['prompt'].lower()} under gravity"
        caption = tiny_backbone.encode_prompt([item["prompt"]], max_sequence_length=512).pooled[0]
        refined = tiny_backbone.encode_prompt([description], max_sequence_length=512).pooled[0]
        torch.testing.assert_close(item["pooled"], caption, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(item["pooled_refined"], refined, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(item["pooled_refined"], item["pooled"])
    relabeled = {
        r["video_name"]: r for r in json.loads((out / "annotations.relabeled.json").read_text())
    }
    assert {
        Path(n).stem: r["pila_description"] for n, r in relabeled.items() if "pila_description" in r
    } == described


def test_shards_without_refined_descriptions_read_the_caption_embedding(prepared, tmp_path, caplog):
    _, _, out = prepared
    cache = tmp_path / "cache"
    shutil.copytree(out, cache)
    manifest = read_manifest(cache)
    for entry in manifest["shards"]:  # rewrite every shard as an older prepare wrote it
        path = cache / entry["file"]
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {
                k: handle.get_tensor(k) for k in handle.keys() if not k.endswith(".pooled_refined")
            }
        save_file(tensors, str(path), metadata=metadata)
    clips = CachedClips(cache, verify=False)
    for i in range(len(clips)):
        item = clips[i]
        assert torch.equal(item["pooled_refined"], item["pooled"])
    # such a cache labeled by an LLM says that training will not see the descriptions
    manifest["settings"]["llm_labeler"] = "local-llm"
    with caplog.at_level(logging.WARNING, logger="pila.datamodules.cache"):
        clips = CachedClips(cache, verify=False, manifest=manifest)
        clips[0], clips[1]
    assert (
        caplog.text.count("shards hold no refined descriptions") == 1
        and "--overwrite" in caplog.text
    )


def test_a_corrupt_shard_is_reported_by_name_and_rebuilt_alone(
    prepared, tmp_path, tiny_backbone, wisa_fixture
):
    config, _, out = prepared
    cache = tmp_path / "cache"
    shutil.copytree(out, cache)
    target = cache / "shard-00001.safetensors"
    blob = bytearray(target.read_bytes())
    blob[-10] ^= 0xFF  # one flipped byte in a tensor
    target.write_bytes(bytes(blob))
    with pytest.raises(CacheCorruptError) as info:
        CachedClips(cache)
    message = str(info.value)
    assert str(target) in message and "shard-00000" not in message
    assert "Delete" in message and "pila prepare" in message
    # the advice rebuilds the folder that failed, not the one the cache was first built in
    assert (
        f"--out {cache}" in message
        and f"--out {out} " not in message
        and not message.endswith(f"--out {out})")
    )
    untouched = {p.name: p.stat().st_mtime_ns for p in cache.glob("shard-*")}
    rebuilt: list[int] = []
    summary = prepare_cache(
        prepare_config(wisa_fixture, cache, workers=2),
        backbone=tiny_backbone,
        on_shard_written=lambda k, e: rebuilt.append(k),
    )
    assert rebuilt == [1] and summary.shards_reused == 2
    assert {
        p.name: p.stat().st_mtime_ns for p in cache.glob("shard-*") if p.name != target.name
    } == {k: v for k, v in untouched.items() if k != target.name}
    assert len(CachedClips(cache)) == 6


def test_other_settings_stop_prepare_unless_overwrite(
    prepared, tmp_path, tiny_backbone, wisa_fixture
):
    _, _, out = prepared
    cache = tmp_path / "cache"
    shutil.copytree(out, cache)
    other = prepare_config(
        wisa_fixture, cache, clip=ClipConfig(num_frames=9, fps=16.0, height=32, width=48)
    )
    with pytest.raises(
        CacheMismatchError, match="clip.num_frames: cache has 17, asked for 9"
    ) as info:
        prepare_cache(other, backbone=tiny_backbone)
    assert "--overwrite" in str(info.value)
    summary = prepare_cache(
        PrepareConfig(**{**other.__dict__, "overwrite": True}), backbone=tiny_backbone
    )
    assert summary.shards_written == 3 and read_manifest(cache)["latent_shape"] == [16, 3, 4, 6]


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pila.datamodules.clips import ClipConfig
    from pila.datamodules.prepare import PrepareConfig, prepare_cache

    config = PrepareConfig(annotations=sys.argv[1], videos=sys.argv[2], out=sys.argv[3],
                           shard_size=4, workers=0, device="cpu", storage_dtype="float32",
                           clip=ClipConfig(num_frames=17, height=32, width=48))

    def die_after_first_shard(index, entry):
        # a real SIGKILL: nothing is flushed or cleaned up
        os.kill(os.getpid(), signal.SIGKILL)

    prepare_cache(config, on_shard_written=die_after_first_shard)
    """
)


@pytest.mark.slow
def test_a_killed_prepare_resumes_without_recomputing_finished_shards(
    tmp_path, wisa_fixture, tiny_backbone
):
    cache = tmp_path / "cache"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(wisa_fixture["annotations"]),
            str(wisa_fixture["videos"]),
            str(cache),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == -9, result.stderr[-2000:]
    manifest = read_manifest(cache)
    assert not manifest["complete"] and [e["index"] for e in manifest["shards"]] == [0]
    first = cache / "shard-00000.safetensors"
    before = (first.stat().st_ino, first.stat().st_mtime_ns)
    # what a kill in the middle of the next shard leaves: a temporary file, and (had the
    # rename happened) a shard the manifest does not list
    (cache / ".shard-00001.safetensors.k1ll3d.safetensors").write_bytes(b"half a shard")
    (cache / "shard-00001.safetensors").write_bytes(b"never listed in the manifest")

    written: list[int] = []
    summary = prepare_cache(
        PrepareConfig(
            annotations=str(wisa_fixture["annotations"]),
            videos=str(wisa_fixture["videos"]),
            out=str(cache),
            shard_size=4,
            workers=0,
            device="cpu",
            storage_dtype="float32",
            clip=CLIP,
        ),
        backbone=tiny_backbone,
        on_shard_written=lambda k, e: written.append(k),
    )
    assert written == [1, 2] and summary.shards_reused == 1
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == before
    assert not list(cache.glob(".shard-*"))
    assert summary.num_clips == 6 and read_manifest(cache)["complete"]
    assert len(CachedClips(cache)) == 6  # every shard passes its checksum


def test_shard_metadata_lists_clips_and_decode_rejections(prepared):
    _, _, out = prepared
    manifest = read_manifest(out)
    seen = 0
    for entry in manifest["shards"]:
        meta = read_shard_metadata(out / entry["file"])
        assert (
            len(meta["clips"]) == entry["num_clips"]
            and len(meta["rejected"]) == entry["num_rejected"]
        )
        with safe_open(str(out / entry["file"]), "pt") as handle:
            assert {f"{i}.latents" for i in range(entry["num_clips"])} <= set(handle.keys())
        seen += entry["num_clips"] + entry["num_rejected"]
    assert seen == manifest["num_records"] == 12


def test_help_describes_every_option_from_the_dataclass_docstrings(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for leaf in command_line_leaves():
        assert f"--{leaf.path} " in out
    assert (
        "--relabel-only (no value)" in out and "--print_config" in out and "--config CONFIG" in out
    )
    assert "default: 81" in out and "Wan needs 4k + 1" in out  # ClipConfig's own docstring
    assert "records per cache shard (our choice)" in out  # PrepareConfig's


def test_every_field_keeps_its_short_spelling():
    flags = {leaf.flag: leaf for leaf in command_line_leaves()}
    leaves = [
        f.name
        for f in dataclasses.fields(PrepareConfig)
        if f.name not in ("clip", "filters", "flow")
    ]
    nested = [f"clip.{f.name}" for f in dataclasses.fields(ClipConfig)] + [
        f"flow.{f.name}" for f in dataclasses.fields(FlowConfig)
    ]
    assert {leaf.path for leaf in flags.values()} >= set(leaves) | set(nested)
    assert (
        flags["--num-frames"].path == "clip.num_frames"
        and flags["--min-duration"].path == "filters.min_duration"
    )
    assert flags["--flow-winsize"].path == "flow.winsize" and flags["--relabel-only"].is_bool
    assert flags["--limit"].optional and flags["--annotations"].default is dataclasses.MISSING
    # every flag of the former hand-written table is still there
    assert set(flags) >= {
        "--annotations",
        "--videos",
        "--out",
        "--backbone",
        "--relabel-only",
        "--relabeled-out",
        "--category-map",
        "--llm-labeler",
        "--llm-labeler-cache",
        "--num-frames",
        "--fps",
        "--height",
        "--width",
        "--short-clip",
        "--anchor",
        "--min-duration",
        "--max-duration",
        "--max-text-boxes",
        "--min-motion-score",
        "--motion-score-field",
        "--min-quality",
        "--flow-max-side",
        "--flow-levels",
        "--flow-winsize",
        "--flow-iterations",
        "--flow-pyr-scale",
        "--flow-poly-n",
        "--flow-poly-sigma",
        "--max-sequence-length",
        "--shard-size",
        "--workers",
        "--encode-batch-size",
        "--device",
        "--dtype",
        "--storage-dtype",
        "--limit",
        "--overwrite",
        "--num-processes",
    }


def test_short_and_dotted_spellings_give_the_same_config():
    short = [
        "--annotations",
        "a.json",
        "--out",
        "o",
        "--videos=v",
        "--num-frames",
        "9",
        "--max-duration",
        "none",
        "--flow-winsize=9",
        "--overwrite",
        "--category-map",
        "None",
        "--log-level",
        "DEBUG",
    ]
    dotted = [
        "--annotations",
        "a.json",
        "--out",
        "o",
        "--videos",
        "v",
        "--clip.num_frames",
        "9",
        "--filters.max_duration",
        "null",
        "--flow.winsize",
        "9",
        "--overwrite",
        "true",
        "--log_level",
        "DEBUG",
    ]
    assert canonical_argv(short)[3:5] == ["--clip.num_frames=9", "--filters.max_duration=null"]
    config, level = parse_command_line(short)
    assert (config, level) == parse_command_line(dotted)
    assert (config.clip.num_frames, config.filters.max_duration, config.flow.winsize) == (
        9,
        None,
        9,
    )
    assert config.overwrite and config.category_map is None and level == "DEBUG"


def test_print_config_writes_a_yaml_that_config_reads_back(tmp_path, capsys):
    args = [
        "--annotations",
        "a.json",
        "--out",
        "o",
        "--videos",
        "v",
        "--num-frames",
        "9",
        "--min-quality",
        "4.5",
    ]
    with pytest.raises(SystemExit) as info:
        main([*args, "--print_config"])
    assert info.value.code == 0
    (tmp_path / "prepare.yaml").write_text(capsys.readouterr().out)
    config, _ = parse_command_line(["--config", str(tmp_path / "prepare.yaml")])
    assert config == parse_command_line(args)[0] and config.filters.min_quality == 4.5


def test_the_suggested_command_rebuilds_the_same_config(tmp_path):
    config = PrepareConfig(
        annotations="data/wisa 80k.json",
        videos="data/videos",
        out=str(tmp_path / "c"),
        backbone="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        clip=ClipConfig(num_frames=49, short_clip="loop"),
        flow=FlowConfig(max_side=128, winsize=9),
        max_sequence_length=256,
        shard_size=8,
        limit=10,
    )
    from pila.datamodules.records import FilterConfig

    config = PrepareConfig(
        **{**config.__dict__, "filters": FilterConfig(max_duration=None, min_quality=4.5)}
    )
    words = shlex.split(config.command())
    assert words[:2] == ["pila", "prepare"] and "--max-duration" in words
    assert parse_command_line(words[2:])[0] == config


def test_relabel_only_writes_the_annotation_and_prints_the_distribution(
    tmp_path, wisa_fixture, capsys
):
    code = main(
        [
            "--annotations",
            str(wisa_fixture["annotations"]),
            "--out",
            str(tmp_path),
            "--relabel-only",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "category distribution over 12 clips" in out
    assert "rigid_body" in out and "optical" in out
    written = json.loads((tmp_path / "annotations.relabeled.json").read_text())
    assert len(written) == 12 and all(r["pila_labels"] for r in written)
    reasons = Counter(
        json.loads(line)["reason"]
        for line in (tmp_path / "rejected.jsonl").read_text().splitlines()
    )
    assert reasons == Counter(
        {
            "duration_out_of_range": 1,
            "too_many_text_boxes": 1,
            "missing_field": 1,
            "malformed_field": 1,
            "unlabeled": 1,
            "malformed_record": 1,
        }
    )


def test_bad_arguments_exit_with_a_one_line_message(tmp_path, caplog):
    assert (
        main(
            [
                "--annotations",
                str(tmp_path / "missing.json"),
                "--out",
                str(tmp_path),
                "--relabel-only",
            ]
        )
        == 2
    )
    assert "does not exist" in caplog.text
    assert main(["--annotations", "a.json", "--out", str(tmp_path)]) == 2
    assert "videos is required" in caplog.text
    assert (
        main(
            [
                "--annotations",
                "a.json",
                "--out",
                str(tmp_path),
                "--videos",
                "v",
                "--num-frames",
                "1",
            ]
        )
        == 2
    )
    assert "num_frames must be ≥ 2" in caplog.text
    args = ["--annotations", str(tmp_path / "a.json"), "--out", str(tmp_path), "--relabel-only"]
    (tmp_path / "a.json").write_text("[]")
    assert main([*args, "--llm-labeler", str(tmp_path / "no-model")]) == 2
    assert "prompt-parser model folder" in caplog.text
    for bad, said in (
        ("--num-frames=x", "clip.num_frames"),
        ("--bogus", "--bogus"),
        ("--device=gpu", "device"),
    ):
        caplog.clear()
        assert main(["--annotations", "a.json", "--out", str(tmp_path), bad]) == 2
        assert (
            len(caplog.records) == 1
            and said in caplog.text
            and "\n" not in caplog.records[0].getMessage()
        )


def test_nothing_usable_exits_non_zero_with_the_reasons_and_what_to_check(
    tmp_path, wisa_fixture, caplog
):
    common = [
        "--annotations",
        str(wisa_fixture["annotations"]),
        "--backbone",
        "tiny",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--num-frames",
        str(CLIP.num_frames),
        "--height",
        str(CLIP.height),
        "--width",
        str(CLIP.width),
        "--fps",
        str(CLIP.fps),
    ]
    # every video is missing: found while decoding
    (tmp_path / "no_videos").mkdir()
    out = tmp_path / "cache"
    assert main([*common, "--videos", str(tmp_path / "no_videos"), "--out", str(out)]) == 2
    assert (
        "no usable records" in caplog.text
        and "video_missing:" in caplog.text
        and "--videos" in caplog.text
    )
    assert (out / "rejected.jsonl").read_text().strip()
    manifest = read_manifest(out)
    assert manifest is None or not manifest.get("complete")  # training does not take it for a cache
    # every record filtered out: found before anything is encoded
    caplog.clear()
    out = tmp_path / "filtered"
    assert (
        main(
            [
                *common,
                "--videos",
                str(wisa_fixture["videos"]),
                "--out",
                str(out),
                "--min-quality",
                "1e9",
            ]
        )
        == 2
    )
    assert (
        "no usable records" in caplog.text
        and "low_quality:" in caplog.text
        and "--min-quality" in caplog.text
    )
    assert read_manifest(out) is None and not list(out.glob("shard-*"))
