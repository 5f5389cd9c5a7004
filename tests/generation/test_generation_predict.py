"""`pila predict` end to end on the tiny preset: configs, sidecars, layouts, resume, bad input."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pila.adapter.loading import safetensors_sha256
from pila.cli import main
from pila.generation import SamplingConfig
from pila.generation.benchmarks import read_prompt_file
from pila.io import read_video

CONFIGS = Path(__file__).resolve().parents[2] / "lightning_configs"
TINY = CONFIGS / "tiny" / "predict.yaml"
SHIPPED = sorted(CONFIGS.glob("predict*.yaml")) + [TINY]
SAMPLING_FIELDS = {f.name for f in dataclasses.fields(SamplingConfig)}
VIDEOPHY = "pila.generation.benchmarks.videophy.VideoPhy2Layout"


def tiny_config(
    out: Path, *, model: dict | None = None, data: dict | None = None, writer: dict | None = None
) -> dict:
    config = yaml.safe_load(TINY.read_text())
    config = copy.deepcopy(config)
    config["trainer"]["default_root_dir"] = str(out)
    config["trainer"]["enable_progress_bar"] = False
    config["trainer"]["enable_model_summary"] = False
    callback = config["trainer"]["callbacks"][0]["init_args"]
    callback["output_dir"] = str(out)
    callback.update(writer or {})
    model = dict(model or {})
    sampling = {k: model.pop(k) for k in list(model) if k in SAMPLING_FIELDS}
    config["model"]["init_args"].update(model)
    config["model"]["init_args"].setdefault("sampling", {}).update(sampling)
    config["data"]["init_args"].update(data or {})
    return config


def run_predict(tmp_path: Path, config: dict, name: str = "config.yaml") -> int:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return main(
        ["predict", "--debug", "--config", str(path)]
    )  # --debug: errors raise, with their type


def small_model(small: dict, **extra) -> dict:
    keys = ("num_frames", "height", "width", "num_inference_steps", "max_sequence_length")
    return {**{k: small[k] for k in keys}, **extra}


def mp4s(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.mp4"))


# ---------------------------------------------------------------------- configs
@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_predict_yaml_parses_against_the_real_signatures(config, capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "--config", str(config), "--print_config"])
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "pila.generation.PILAPredictModule"
    assert printed["data"]["class_path"] == "pila.generation.PromptDataModule"
    writer = printed["trainer"]["callbacks"][0]
    assert writer["class_path"] == "pila.generation.VideoPredictionWriter"
    assert set(printed["model"]["init_args"]["sampling"]) == SAMPLING_FIELDS
    assert printed["return_predictions"] is False


def test_paper_configs_hold_the_papers_settings():
    wan21 = yaml.safe_load((CONFIGS / "predict.yaml").read_text())
    m = wan21["model"]["init_args"]
    s = m["sampling"]
    assert (
        s["num_inference_steps"],
        s["num_frames"],
        s["height"],
        s["width"],
        s["guidance_scale"],
    ) == (50, 81, 480, 832, 5.0)
    assert wan21["trainer"]["callbacks"][0]["init_args"]["fps"] == 16.0 and m["adapter"]
    wan22 = yaml.safe_load((CONFIGS / "predict_wan22.yaml").read_text())
    m2 = wan22["model"]["init_args"]
    s2 = m2["sampling"]
    assert (
        s2["num_inference_steps"],
        s2["guidance_scale"],
        s2["guidance_scale_2"],
        s2["shift"],
    ) == (40, 4.0, 3.0, 12.0)
    assert m2["adapter"] == m["adapter"]  # the Wan 2.1-trained adapter, transferred
    assert "Wan2.2-T2V-A14B" in m2["backbone"]


@pytest.mark.slow
def test_tiny_yaml_runs_end_to_end_on_cpu(tmp_path):
    config = tiny_config(tmp_path, data={"limit": 1})
    assert run_predict(tmp_path, config) == 0
    (video,) = mp4s(tmp_path)
    frames, fps = read_video(video)
    assert frames.shape == (17, 64, 64, 3) and fps == pytest.approx(8.0)
    meta = json.loads(video.with_suffix(".json").read_text())
    assert meta["prompt"] == config["data"]["init_args"]["prompts"][0] and meta["seed"] == 0
    assert meta["adapter"] is None and meta["routing_weights"] is None  # the uncorrected baseline
    assert meta["settings"]["num_inference_steps"] == 4 and meta["settings"]["backbone"] == "tiny"


# ------------------------------------------------------------- sidecars and resume
@pytest.mark.slow
def test_adapter_run_records_everything_and_a_rerun_regenerates_only_what_is_missing(
    tmp_path, trained_adapter_dir, small
):
    prompts = [
        "A rubber ball bounces on the floor.",
        "Water boils in a pot.",
        "A mirror reflects a candle.",
    ]
    config = tiny_config(
        tmp_path / "out",
        model=small_model(small, adapter=str(trained_adapter_dir), correction_steps="3-4", top_k=2),
        data={"prompts": prompts, "seed": 100},
    )
    assert run_predict(tmp_path, config) == 0
    videos = mp4s(tmp_path / "out")
    assert len(videos) == 3
    metas = [json.loads(v.with_suffix(".json").read_text()) for v in videos]
    first = metas[0]
    assert first["prompt"] == prompts[0] and first["seed"] == 100
    assert (
        first["labels"] == ["rigid_body", "elastic", "collision"]
        and first["refined_prompt"] == prompts[0]
    )
    assert metas[1]["labels"] == ["fluid", "phase_change", "thermal"] and metas[2]["seed"] == 102
    assert first["corrected_steps"] == [3, 4] and first["settings"]["correction_steps"] == [3, 4]
    weights = first["routing_weights"]
    assert set(weights) == {
        "rigid_body",
        "elastic",
        "fluid",
        "compressible_flow",
        "phase_change",
        "collision",
        "thermal",
        "optical",
    }
    assert (
        sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
        and sum(w > 0 for w in weights.values()) <= 4
    )
    sha = safetensors_sha256(trained_adapter_dir / "model.safetensors")
    assert first["adapter"]["sha256"] == sha and first["adapter"]["folder"] == str(
        trained_adapter_dir.resolve()
    )
    assert first["settings"]["top_k"] == 2 and first["settings"]["parser"]["type"] == "rules"
    assert set(first["timings"]) >= {
        "text_encoding",
        "denoise_backbone",
        "adapter",
        "vae_decode",
        "mp4_write",
    }

    # delete one output; the re-run regenerates exactly that one
    before = {v: v.stat().st_mtime_ns for v in videos}
    frames_before, _ = read_video(videos[1])
    videos[1].unlink()
    videos[2].with_suffix(".json").unlink()  # an mp4 without its sidecar is unfinished, too
    assert run_predict(tmp_path, config) == 0
    assert mp4s(tmp_path / "out") == videos
    assert videos[0].stat().st_mtime_ns == before[videos[0]]
    assert videos[2].stat().st_mtime_ns != before[videos[2]]
    frames_after, _ = read_video(videos[1])
    assert np.array_equal(frames_before, frames_after)  # same seed, same video
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left

    # the same folder with other settings is refused before anything is generated
    config["model"]["init_args"]["sampling"]["num_inference_steps"] = 3
    config["model"]["init_args"]["sampling"]["correction_steps"] = None
    with pytest.raises(ValueError, match="made with other generation settings.*overwrite: true"):
        run_predict(tmp_path, config)
    assert all(v.stat().st_mtime_ns == before[v] for v in videos[:1])


@pytest.mark.slow
def test_benchmark_layouts_through_predict(tmp_path, small):
    csv_path = tmp_path / "videophy2.csv"
    csv_path.write_text(
        "caption,upsampled_caption\nA cat jumps.,A grey cat leaps onto a table.\n"
        "Glass breaks.,A glass falls and shatters.\n"
    )
    config = tiny_config(
        tmp_path / "vp",
        model=small_model(small),
        data={
            "prompts": None,
            "prompt_file": str(csv_path),
            "format": "videophy2",
            "prompt_column": "upsampled_caption",
        },
        writer={"layout": {"class_path": VIDEOPHY}},
    )
    assert run_predict(tmp_path, config, "vp.yaml") == 0
    with (tmp_path / "vp" / "videophy2_input.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["caption", "videopath"]
    assert [r["caption"] for r in rows] == ["A cat jumps.", "Glass breaks."]
    assert all(Path(r["videopath"]).is_file() for r in rows)

    mechanics = tmp_path / "Mechanics.txt"
    mechanics.write_text("A spring: stretched, then released.\n")
    config = tiny_config(
        tmp_path / "vb",
        model=small_model(small),
        data={
            "prompts": None,
            "prompt_file": str(mechanics),
            "format": "vbench2",
            "videos_per_prompt": 2,
        },
        writer={"layout": "VBench2Layout"},
    )
    leftover = (
        tmp_path / "vb" / "Mechanics" / ".A spring: stretched, then released.-0.mp4.0a1b2c3d.mp4"
    )
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half an mp4 from a killed run")
    assert run_predict(tmp_path, config, "vb.yaml") == 0
    assert not leftover.exists() and not list((tmp_path / "vb").rglob("*.claim"))
    names = [p.relative_to(tmp_path / "vb").as_posix() for p in mp4s(tmp_path / "vb")]
    assert names == [
        "Mechanics/A spring: stretched, then released.-0.mp4",
        "Mechanics/A spring: stretched, then released.-1.mp4",
    ]
    assert (
        tmp_path / "vb" / "pila_meta" / "Mechanics" / "A spring: stretched, then released.-1.json"
    ).is_file()


# ------------------------------------------------------------- prompt sources
def test_a_prompt_file_on_the_command_line_wins_over_the_configs_inline_prompts(tmp_path, small):
    """The tiny YAML's own comment.

    `pila predict --config tiny/predict.yaml --data.init_args.prompt_file my.txt`.
    """
    mine = tmp_path / "my.txt"
    mine.write_text("A cup slides off a table.\n")
    config = tiny_config(tmp_path / "out", model=small_model(small, num_inference_steps=1))
    assert config["data"]["init_args"]["prompts"]  # the YAML's inline prompts stay in the config
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert (
        main(
            ["predict", "--debug", "--config", str(path), "--data.init_args.prompt_file", str(mine)]
        )
        == 0
    )
    (video,) = mp4s(tmp_path / "out")
    assert (
        json.loads(video.with_suffix(".json").read_text())["prompt"] == "A cup slides off a table."
    )


def test_inline_prompts_on_the_command_line_win_over_the_configs_prompt_file(tmp_path, small):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "prompts.txt").write_text("A ball bounces.\nWater pours.\n")
    config = tiny_config(
        tmp_path / "out",
        model=small_model(small, num_inference_steps=1),
        data={"prompts": None, "prompt_file": "prompts.txt"},
    )
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert (
        main(
            [
                "predict",
                "--debug",
                "--config",
                str(path),
                "--data.init_args.prompts",
                "[A flag waves.]",
            ]
        )
        == 0
    )
    (video,) = mp4s(tmp_path / "out")
    assert json.loads(video.with_suffix(".json").read_text())["prompt"] == "A flag waves."
    # the config's relative prompt_file names the file next to the config, from any directory
    assert (
        main(
            [
                "predict",
                "--debug",
                "--config",
                str(path),
                "--trainer.callbacks.init_args.output_dir",
                str(tmp_path / "out2"),
            ]
        )
        == 0
    )
    assert len(mp4s(tmp_path / "out2")) == 2


def test_data_sources_settle_in_command_line_order(tmp_path):
    from jsonargparse import Namespace

    from pila.cli import settle_data_sources

    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "prompts.txt").write_text("a\n")
    inline = cfg / "inline.yaml"
    inline.write_text(yaml.safe_dump({"data": {"init_args": {"prompts": ["x"]}}}))
    with_file = cfg / "file.yaml"
    with_file.write_text(yaml.safe_dump({"data": {"init_args": {"prompt_file": "prompts.txt"}}}))

    def settle(argv, **final):
        ns = Namespace(**{"prompt_file": None, "prompts": None, "augmented_file": None, **final})
        settle_data_sources(ns, argv)
        return ns.prompt_file, ns.prompts

    assert settle(
        ["--config", str(inline), "--data.init_args.prompt_file=my.txt"],
        prompt_file="my.txt",
        prompts=["x"],
    ) == ("my.txt", None)
    assert settle(
        ["--config", str(with_file), "--data.prompts", "[y]"],
        prompt_file="prompts.txt",
        prompts=["y"],
    ) == (None, ["y"])
    assert settle(["--config", str(with_file)], prompt_file="prompts.txt") == (
        str(cfg / "prompts.txt"),
        None,
    )
    assert settle(
        ["--config", str(with_file), "--config", str(inline)],
        prompt_file="prompts.txt",
        prompts=["x"],
    ) == (None, ["x"])
    # a relative path typed on the command line stays relative to the current directory
    assert settle(
        ["--config", str(inline), "--data.init_args.prompt_file", "prompts.txt"],
        prompt_file="prompts.txt",
        prompts=["x"],
    ) == ("prompts.txt", None)
    # both in one config file: nothing to order, the data module reports the conflict
    both = cfg / "both.yaml"
    both.write_text(
        yaml.safe_dump({"data": {"init_args": {"prompts": ["x"], "prompt_file": "prompts.txt"}}})
    )
    assert settle(["--config", str(both)], prompt_file="prompts.txt", prompts=["x"])[1] == ["x"]


@pytest.mark.slow
def test_augmented_wisa_and_videophy_prompt_files_through_predict(tmp_path, small):
    short = tmp_path / "Mechanics.txt"
    short.write_text("A spring oscillates.\n")
    aug = tmp_path / "aug" / "Mechanics.txt"
    aug.parent.mkdir()
    aug.write_text("A steel spring bounces up and down on a hook, close-up.\n")
    config = tiny_config(
        tmp_path / "vb",
        model=small_model(small, num_inference_steps=1),
        data={
            "prompts": None,
            "prompt_file": str(short),
            "format": "vbench2",
            "augmented_file": str(aug),
        },
        writer={"layout": "VBench2Layout"},
    )
    assert run_predict(tmp_path, config, "vb.yaml") == 0
    (video,) = mp4s(tmp_path / "vb")
    assert (
        video.relative_to(tmp_path / "vb").as_posix() == "Mechanics/A spring oscillates.-0.mp4"
    )  # named by the short prompt
    meta = json.loads(
        (tmp_path / "vb" / "pila_meta" / "Mechanics" / video.with_suffix(".json").name).read_text()
    )
    assert meta["prompt"] == aug.read_text().strip()  # generated from the augmented text
    assert meta["record"]["caption"] == "A spring oscillates."  # the evaluator's name

    wisa = tmp_path / "wisa_prompts.json"
    wisa.write_text(
        json.dumps(
            [
                {
                    "en_caption": "A glass marble bounces on a tiled floor.",
                    "q0": "collision, rigid body motion",
                    "q1": "no obvious thermodynamic phenomenon",
                    "q2": "no obvious optical phenomenon",
                    "label": "collision",
                }
            ]
        )
    )
    config = tiny_config(
        tmp_path / "wisa",
        model=small_model(small, num_inference_steps=1),
        data={"prompts": None, "prompt_file": str(wisa)},
    )
    assert run_predict(tmp_path, config, "wisa.yaml") == 0
    (video,) = mp4s(tmp_path / "wisa")
    meta = json.loads(video.with_suffix(".json").read_text())
    assert (
        meta["prompt"] == "A glass marble bounces on a tiled floor."
        and meta["record"]["extra"]["label"] == "collision"
    )
    # the baseline (no adapter, so no parser labels) still records the record's q-answer labels
    (record,) = read_prompt_file(wisa)
    assert meta["adapter"] is None and meta["labels"] is None
    assert meta["record"]["labels"] == list(record.labels) and "collision" in record.labels

    videophy = tmp_path / "videophy_test.csv"
    videophy.write_text(
        "caption,source\nWater flows.,a\nIce melts.,a\nWater flows.,b\nIce melts.,b\n"
    )
    config = tiny_config(
        tmp_path / "vp",
        model=small_model(small, num_inference_steps=1),
        data={"prompts": None, "prompt_file": str(videophy), "format": "videophy"},
        writer={"layout": {"class_path": VIDEOPHY, "init_args": {"version": 1}}},
    )
    assert run_predict(tmp_path, config, "vp.yaml") == 0
    assert len(mp4s(tmp_path / "vp")) == 2


# -------------------------------------------------------------------- bad input
def test_bad_inputs_fail_before_any_generation(tmp_path, adapter_factory, small):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    unknown = tmp_path / "prompts.tsv"
    unknown.write_text("a\tb\n")
    wide = tmp_path / "adapter_for_another_backbone"
    adapter_factory(text_dim=4096).save_pretrained(wide)
    cases = [
        ({"prompts": None, "prompt_file": str(empty)}, {}, r"empty\.txt.*is empty"),
        (
            {"prompts": None, "prompt_file": str(unknown)},
            {},
            r"prompts\.tsv.*unknown prompt-file format",
        ),
        (
            {},
            {"adapter": str(wide)},
            r"adapter_for_another_backbone.*text_dim 4096 vs the backbone's text-encoder width 32",
        ),
    ]
    for i, (data, model, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        config = tiny_config(out, model=small_model(small, **model), data=data)
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            run_predict(tmp_path, config, f"bad{i}.yaml")
        assert mp4s(out) == []


# -------------------------------------------------------------------- several ranks
@pytest.mark.slow
def test_two_ranks_share_the_work_and_a_rank_with_nothing_left_still_finishes(tmp_path, small):
    """Two CPU processes (DDP over gloo), as on two GPUs: rank 1's share is already complete."""
    import os
    import subprocess
    import sys

    from pila.generation.benchmarks.videophy import VideoPhy2Layout
    from pila.generation.prompts import build_items
    from pila.generation.records import PromptRecord

    prompts = ["a ball", "a wave", "a flame", "a spring", "a mirror"]
    out = tmp_path / "out"
    layout = VideoPhy2Layout().bind(out)
    records = [PromptRecord(index=i, prompt=p) for i, p in enumerate(prompts)]
    layout.plan(records, 1)
    items = build_items(records, 1, seed=0)
    for item in items[1::2]:  # rank 1 of 2 owns items 1 and 3: mark them done
        paths = layout.paths(item)
        paths.video.parent.mkdir(parents=True, exist_ok=True)
        paths.video.write_bytes(b"done before")
        paths.sidecar.parent.mkdir(parents=True, exist_ok=True)
        paths.sidecar.write_text(json.dumps({"prompt": item.record.prompt, "seed": item.seed}))
    writer = {"layout": {"class_path": VIDEOPHY}}
    config = tiny_config(out, model=small_model(small), data={"prompts": prompts}, writer=writer)
    config["trainer"].update(devices=2, strategy="ddp")
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    exe = Path(sys.executable).with_name("pila")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [str(exe), "predict", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    videos = mp4s(out)
    assert len(videos) == 5
    untouched = [layout.paths(item).video.read_bytes() == b"done before" for item in items]
    assert untouched == [False, True, False, True, False]  # rank 0 made 0, 2, 4; nothing twice
    with (out / "videophy2_input.csv").open(newline="") as handle:
        assert [r["caption"] for r in csv.DictReader(handle)] == prompts
