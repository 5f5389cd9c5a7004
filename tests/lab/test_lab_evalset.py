"""The lab's data sets (``pila.lab.evalset``): the evaluation sets are regenerated exactly,
every video draws its own noise, and no training, validation or evaluation clip of the
adapters is one the world trained on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from datamodules.synthetic import SyntheticConfig, clip_name
from pila.lab.evalset import (
    DEFAULT_EVAL_SET,
    DEMO_FILE,
    EVAL_FOLDER,
    EVAL_SETS,
    read_records,
    world_training_keys,
    write_eval_sets,
)
from pila.lab.scenes import SCENES, render_indexed

LAB = EVAL_FOLDER
SIZE = (33, 64, 64)  # frames, height, width of every lab clip


def _stage_data(stage: str) -> dict:
    return yaml.safe_load((LAB / f"{stage}.yaml").read_text())["data"]["init_args"]


def _adapter_keys() -> set[tuple[str, int, int]]:
    """(scene, render seed, index) of the stage configs' clips; validation is a split of
    these same clips."""
    keys = set()
    for stage in ("stageA", "stageB", "stageC"):
        data = _stage_data(stage)
        assert (data["num_frames"], data["height"], data["width"]) == SIZE
        keys |= {
            (s, data["seed"], i) for s in SCENES for i in range(data["num_clips_per_category"])
        }
    return keys


def _eval_keys(path: Path) -> set[tuple[str, int, int]]:
    return {(r["scene"], r["world_seed"], r["clip_index"]) for r in read_records(path)}


def _pixels_sha256(key: tuple[str, int, int]) -> str:
    scene, seed, index = key
    clip = render_indexed(scene, index, seed, *SIZE)
    return hashlib.sha256(
        np.clip(np.rint(clip.frames * 255.0), 0, 255).astype(np.uint8)
    ).hexdigest()


@pytest.mark.slow
def test_regenerating_the_evaluation_sets_gives_the_shipped_files(tmp_path):
    written = write_eval_sets(tmp_path)
    assert sorted(p.name for p in written) == sorted(
        [*(s.file_name for s in EVAL_SETS.values()), DEMO_FILE]
    )
    for path in written:
        assert path.read_bytes() == (LAB / path.name).read_bytes(), (
            f"{path.name} differs: run python -m pila.lab.evalset"
        )
    predict = yaml.safe_load((LAB / "predict.yaml").read_text())
    assert (
        Path(predict["data"]["init_args"]["prompt_file"]).name == DEMO_FILE
    )  # the demo's one video per scene


def test_every_evaluation_video_draws_its_own_noise():
    seeds_by_set = {}
    for name, spec in EVAL_SETS.items():
        records = read_records(spec.path)
        seeds = [r["seed"] for r in records]
        assert len(set(seeds)) == len(seeds), f"set {name} shares a noise draw between videos"
        per_scene = {s: sum(r["scene"] == s for r in records) for s in SCENES}
        assert min(per_scene.values()) >= 16 and set(per_scene) == {r["scene"] for r in records}
        seeds_by_set[name] = set(seeds)
    assert not seeds_by_set["a"] & seeds_by_set["b"]  # the second set draws other noise
    demo = read_records(LAB / DEMO_FILE)
    first = {r["scene"]: r for r in reversed(read_records(EVAL_SETS[DEFAULT_EVAL_SET].path))}
    assert demo == [first[s] for s in SCENES]
    # the second set's wordings are other clips' captions: some scenes' colours differ
    a, b = (read_records(EVAL_SETS[n].path) for n in ("a", "b"))
    assert _eval_keys(EVAL_SETS["a"].path).isdisjoint(_eval_keys(EVAL_SETS["b"].path))
    assert sum(x["prompt"] != y["prompt"] for x, y in zip(a, b, strict=True)) >= 16


def test_the_adapters_and_the_evaluation_never_see_a_clip_the_world_trained_on():
    world = world_training_keys()
    assert len(world) == 8 * 64 and {seed for _, seed, _ in world} == {
        0
    }  # the shipped world's record
    adapters = _adapter_keys()
    evaluation = set().union(
        *(_eval_keys(s.path) for s in EVAL_SETS.values()), _eval_keys(LAB / DEMO_FILE)
    )
    assert len(adapters) == 8 * 4 and len(evaluation) == 2 * 8 * 16
    # by render seed and index
    assert (
        world.isdisjoint(adapters)
        and world.isdisjoint(evaluation)
        and adapters.isdisjoint(evaluation)
    )
    # by the synthetic data module's clip names (the adapters' files)
    seed = _stage_data("stageC")["seed"]

    def names(keys, config):
        return {clip_name(s, i, config) for s, _, i in keys}

    world_config, adapter_config = SyntheticConfig(seed=0), SyntheticConfig(seed=seed)
    assert names(world, world_config).isdisjoint(names(adapters, adapter_config))


@pytest.mark.slow
def test_no_clip_of_the_adapters_or_the_evaluation_renders_as_a_world_clip():
    """By the rendered pixels (about 550 clips rendered)."""
    world, adapters = world_training_keys(), _adapter_keys()
    evaluation = set().union(*(_eval_keys(s.path) for s in EVAL_SETS.values()))
    world_hashes = {_pixels_sha256(k) for k in world}
    assert len(world_hashes) == len(world)
    assert world_hashes.isdisjoint(_pixels_sha256(k) for k in adapters | evaluation)


@pytest.mark.parametrize("name", sorted(EVAL_SETS))
def test_evaluation_records_name_the_clip_they_were_captioned_from(name):
    """Each record's prompt is the renderer's caption of its (world seed, clip index)."""
    records = read_records(EVAL_SETS[name].path)
    for record in records[::37]:
        clip = render_indexed(record["scene"], record["clip_index"], record["world_seed"], *SIZE)
        assert clip.prompt == record["prompt"]
