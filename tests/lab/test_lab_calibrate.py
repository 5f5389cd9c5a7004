"""The ruler's calibration: normalisers per (scene, sub-measure), one scene recalibrated
without touching the others or the fidelity prototypes, and ``pila lab calibrate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pila.io import read_json, write_json_atomic
from pila.lab import corruptions as C
from pila.lab.cli import main as lab_main
from pila.lab.ruler import MIN_SCALE, SCENE_MEASURES, load_calibration, prepare
from pila.lab.ruler.calibration import calibrate, write_calibration
from pila.lab.scenes import SCENES

SMALL = {"count": 2, "seed": 11, "crf": None}
"""A calibration small enough for a test: two clips per scene, no mp4 round trip."""
UPDATED = "cooling_plate"
TAMPERED_MEDIAN = 123.0


def _text(obj) -> str:
    """The file's bytes as :func:`pila.io.write_json_atomic` writes them."""
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


@pytest.fixture(scope="module")
def small_calibration(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calibration") / "calibration.json"
    write_calibration(path, **SMALL)
    return path


@pytest.fixture
def tampered(small_calibration, tmp_path) -> Path:
    """A copy of the small calibration whose updated scene holds a median no run gives."""
    data = read_json(small_calibration)
    for stats in data["scenes"][UPDATED].values():
        stats["median"] = TAMPERED_MEDIAN
    path = tmp_path / "calibration.json"
    write_json_atomic(path, data)
    return path


def test_normalisers_are_keyed_by_scene_and_sub_measure():
    assert list(MIN_SCALE) == list(SCENES) == list(SCENE_MEASURES)
    for scene in SCENES:
        raw = SCENE_MEASURES[scene](prepare(C.ground_truth(scene, 3, 0))).raw
        assert list(MIN_SCALE[scene]) == list(raw), scene
    # names shared by scenes are separate normalisers (equal floors today, as before)
    shared = {"restitution_error", "size_change", "missing", "conservation"}
    for name in shared:
        owners = [s for s in SCENES if name in MIN_SCALE[s]]
        assert len(owners) >= 2, name
    stored = load_calibration()
    for scene, stats in stored["scenes"].items():
        for name, entry in stats.items():
            assert entry["scale"] >= MIN_SCALE[scene][name], (scene, name)


def test_one_scene_is_recalibrated_and_the_rest_kept_byte_for_byte(tampered):
    before = read_json(tampered)
    assert tampered.read_text(encoding="utf-8") == _text(before)
    write_calibration(tampered, scenes=(UPDATED,), **SMALL)
    after = read_json(tampered)
    # the updated scene is measured again, as a calibration of that scene alone gives it
    expected = calibrate(scenes=(UPDATED,), **SMALL)["scenes"][UPDATED]
    assert after["scenes"][UPDATED] == expected
    assert all(s["median"] != TAMPERED_MEDIAN for s in after["scenes"][UPDATED].values())
    # every other byte is the old file's: the other scenes, the prototypes, the settings
    after["scenes"][UPDATED] = before["scenes"][UPDATED]
    assert _text(after) == _text(before)
    assert list(after["scenes"]) == list(SCENES) and list(after["fidelity"]) == list(SCENES)


def test_an_update_with_other_settings_is_refused_and_writes_nothing(tampered):
    text = tampered.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="calibrated with"):
        write_calibration(tampered, scenes=(UPDATED,), count=3, seed=11, crf=None)
    with pytest.raises(ValueError, match="unknown scene 'volcano'"):
        write_calibration(tampered, scenes=("volcano",), **SMALL)
    with pytest.raises(FileNotFoundError, match="no calibration"):
        write_calibration(tampered.with_name("absent.json"), scenes=(UPDATED,), **SMALL)
    assert tampered.read_text(encoding="utf-8") == text


def test_the_command_recalibrates_one_scene(tampered, capsys):
    before = read_json(tampered)
    argv = ["calibrate", "--scenes", UPDATED, "--out", str(tampered), "--count", "2"]
    assert lab_main([*argv, "--seed", "11", "--crf", "none"]) == 0
    assert "wrote" in capsys.readouterr().out
    after = read_json(tampered)
    assert after["scenes"][UPDATED] != before["scenes"][UPDATED]
    after["scenes"][UPDATED] = before["scenes"][UPDATED]
    assert _text(after) == _text(before)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenes", "volcano"], "unknown scene 'volcano'"),
        (["--scenes", "ball_bounce,ball_bounce"], "each scene once"),
        (["--count", "many"], "--count"),
        (["--count", "1"], "at least 2"),
        (["--crf", "99"], "--crf"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--scenes"], "expected one argument"),
        (["--scenes", "ball_bounce", "--count", "3"], "calibrated with"),
    ],
)
def test_the_commands_bad_input_is_a_one_line_error(tampered, capsys, args, message):
    text = tampered.read_text(encoding="utf-8")
    settings = ["--seed", "11", "--crf", "none"] if "--crf" not in args else ["--seed", "11"]
    assert lab_main(["calibrate", "--out", str(tampered), *settings, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pila lab calibrate: error: ") and message in err, err
    assert err.count("\n") == 1, err
    assert tampered.read_text(encoding="utf-8") == text


def test_an_update_without_a_file_names_the_fix(tmp_path, capsys):
    missing = tmp_path / "none.json"
    assert lab_main(["calibrate", "--scenes", UPDATED, "--out", str(missing)]) == 2
    assert "without --scenes" in capsys.readouterr().err
    assert not missing.exists()


def test_ruler_identity_follows_the_calibration_and_nothing_else(tmp_path):
    from pila.lab.ruler import ruler_identity
    from pila.lab.ruler.normalise import CALIBRATION_PATH

    copy = tmp_path / "calibration.json"
    copy.write_bytes(CALIBRATION_PATH.read_bytes())
    assert ruler_identity(copy) == ruler_identity() == ruler_identity(CALIBRATION_PATH)
    copy.write_bytes(CALIBRATION_PATH.read_bytes().replace(b"0", b"1", 1))
    assert ruler_identity(copy) != ruler_identity()
