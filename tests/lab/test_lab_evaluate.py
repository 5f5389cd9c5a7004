"""``pila lab evaluate`` on a predict-style folder and on a folder of scene clips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pila.datamodules.synthetic import SyntheticConfig, write_synthetic_dataset
from pila.io import write_json_atomic, write_video
from pila.lab import corruptions as C
from pila.lab.cli import main as lab_main
from pila.lab.evaluate import infer_scene, main
from pila.lab.scenes import SCENES, render_scene


def _sidecar(prompt: str, scene: str | None) -> dict:
    """A sidecar as ``pila predict`` writes it (the fields the ruler reads)."""
    return {
        "format": "pila-video/1",
        "prompt": prompt,
        "seed": 0,
        "record": {"dimension": None, "caption": None, "extra": {"scene": scene} if scene else {}},
    }


@pytest.fixture(scope="module")
def predict_folder(tmp_path_factory):
    """mp4 + sidecar per video, like ``pila predict``'s plain layout, broken ones among them."""
    root = tmp_path_factory.mktemp("predict")
    for i, scene in enumerate(("ball_bounce", "ripple_reflection", "cooling_plate")):
        clip = render_scene(scene, np.random.default_rng([5, i]), 33, 64, 64)
        stem = f"{i:05d}_{scene}_0"
        write_video(root / f"{stem}.mp4", clip.frames, fps=16)
        # the third names no scene: it is inferred from the prompt
        write_json_atomic(root / f"{stem}.json", _sidecar(clip.prompt, scene if i < 2 else None))
    # a law-breaking video of a scene (gravity × 2)
    write_video(
        root / "00003_gravity_0.mp4", C.corrupt("ball_bounce", "law:gravity_x2", 5, 0), fps=16
    )
    write_json_atomic(root / "00003_gravity_0.json", _sidecar("a ball", "ball_bounce"))
    # broken: not a video, too short, no scene at all
    (root / "00004_broken_0.mp4").write_bytes(b"this is not an mp4")
    write_json_atomic(root / "00004_broken_0.json", _sidecar("x", "ball_bounce"))
    write_video(root / "00005_short_0.mp4", C.ground_truth("smoke_puff", 5, 0)[:5], fps=16)
    write_json_atomic(root / "00005_short_0.json", _sidecar("x", "smoke_puff"))
    write_video(root / "00006_orphan_0.mp4", C.ground_truth("smoke_puff", 5, 0), fps=16)
    return root


def test_evaluate_a_predict_folder(predict_folder, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["--videos", str(predict_folder), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    videos = {v["video"]: v for v in report["videos"]}
    assert set(videos) == {
        "00000_ball_bounce_0.mp4",
        "00001_ripple_reflection_0.mp4",
        "00002_cooling_plate_0.mp4",
        "00003_gravity_0.mp4",
    }
    assert (
        videos["00002_cooling_plate_0.mp4"]["scene"] == "cooling_plate"
    )  # from the prompt's wording
    for v in videos.values():
        assert set(v) >= {"video", "scene", "violation", "fidelity", "measures"}
        assert all(set(m) == {"raw", "z"} for m in v["measures"].values())
    truth, broken = videos["00000_ball_bounce_0.mp4"], videos["00003_gravity_0.mp4"]
    assert truth["violation"] < 1.0 < broken["violation"]
    assert truth["fidelity"] > 0.9
    skipped = {s["video"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"00004_broken_0.mp4", "00005_short_0.mp4", "00006_orphan_0.mp4"}
    assert skipped["00004_broken_0.mp4"].startswith("unreadable")
    assert skipped["00005_short_0.mp4"].startswith("too short")
    assert skipped["00006_orphan_0.mp4"].startswith("no scene")
    assert report["scenes"]["ball_bounce"]["n"] == 2
    assert set(report["scenes"]["ball_bounce"]["violation"]) == {"mean", "median", "ci95"}
    assert report["overall"]["n"] == 4 and report["overall"]["skipped"] == 3
    table = (out / "report.md").read_text()
    assert "| ball_bounce | 2 |" in table and "00004_broken_0.mp4" in table
    assert (out / "ruler.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| ripple_reflection | 1 |" in capsys.readouterr().out


def test_evaluate_against_one_scene(predict_folder, tmp_path):
    out = tmp_path / "report"
    assert main(["--videos", str(predict_folder), "--out", str(out), "--scene", "smoke_puff"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert {v["scene"] for v in report["videos"]} == {"smoke_puff"}
    assert "00006_orphan_0.mp4" in {v["video"] for v in report["videos"]}


def test_evaluate_scene_clips_with_annotations(tmp_path):
    root = tmp_path / "clips"
    write_synthetic_dataset(
        root,
        SyntheticConfig(num_clips_per_category=1, seed=3, scenes=("melting_block", "elastic_bar")),
    )
    (root / "videos" / "extra.mp4").write_bytes(b"")  # not in the annotations: ignored
    records = json.loads((root / "annotations.json").read_text())
    records.append({**records[0], "video_name": "missing.mp4"})
    (root / "annotations.json").write_text(json.dumps(records))
    out = tmp_path / "report"
    assert lab_main(["evaluate", "--videos", str(root), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert sorted(v["scene"] for v in report["videos"]) == ["elastic_bar", "melting_block"]
    assert all(v["violation"] < 1.0 and v["fidelity"] > 0.9 for v in report["videos"])
    assert [s["video"] for s in report["skipped"]] == ["missing.mp4"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--out", "x"],
        ["--videos", "/nonexistent/folder", "--out", "x"],
        ["--videos", ".", "--out", "x", "--scene", "volcano"],
        ["--videos", ".", "--out", "x", "--bogus"],
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pila lab evaluate: error:")


def test_infer_scene_from_prompt_wording():
    for i, scene in enumerate(SCENES):
        prompt = render_scene(scene, np.random.default_rng([9, i]), 2, 16, 16).prompt
        assert infer_scene(prompt) == scene, prompt
    assert infer_scene("A cat plays the piano in a jazz club.") is None
    assert infer_scene("") is None
