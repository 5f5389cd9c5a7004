"""WISA's own schemas: the released loader's records (``file``/``video_id``, integral-float
counts, the full ``physical_annotation``) train like ``video_name`` records; prompt-side
annotation records (``en_caption``, no video) are rejected as ``no_video`` when a cache is
built, relabeled by ``pila prepare --relabel-only``, and read by :func:`wisa_prompt` through
the relabeling path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from data_helpers import prepare_config, wisa_record

from pila.datamodules.cache import CachedClips
from pila.datamodules.prepare import main, prepare_cache
from pila.datamodules.prompt_side import as_wisa_record, wisa_prompt
from pila.datamodules.records import (
    FilterConfig,
    is_prompt_side_record,
    parse_record,
    select_records,
)
from pila.datamodules.rejections import REJECTION_REASONS, RecordError
from pila.datamodules.relabel import CategoryMap, relabel_records


@pytest.fixture(scope="module")
def cmap():
    return CategoryMap.load()


# --------------------------------------------------------------- WISA's released loader schema
def wisa_loader_record(**key: object) -> dict:
    """A record as WISA's released loader reads it: ``file``/``video_id`` instead of
    ``video_name``, ``text_bbox_num`` as a float, the full ``physical_annotation``."""
    raw = wisa_record("unused.mp4", text_bbox_num=0.0, width=1280.0)
    del raw["video_name"]
    raw.update(key)
    return raw


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ({"file": "e" * 64 + ".mp4"}, "e" * 64 + ".mp4"),
        ({"file": "data/videos/12/nested/" + "e" * 64 + ".mp4"}, "e" * 64 + ".mp4"),
        ({"file": "videos\\12\\" + "e" * 64 + ".mp4"}, "e" * 64 + ".mp4"),
        ({"video_id": "e" * 64}, "e" * 64 + ".mp4"),
        ({"video_id": "clip.webm"}, "clip.webm"),
        ({"video_id": 1234}, "1234.mp4"),
        ({"video_name": "a.mp4", "file": "b.mp4", "video_id": "c"}, "a.mp4"),
        ({"video_name": None, "file": "b.mp4"}, "b.mp4"),
    ],
)
def test_the_released_loader_schema_parses_with_either_video_key(key, expected):
    raw = wisa_loader_record(**key)
    record = parse_record(raw, 0)
    assert record.video_name == expected and record.id == expected.rsplit(".", 1)[0]
    assert record.text_boxes == 0 and FilterConfig().check(record) is None
    assert record.raw is raw and record.raw["physical_annotation"]["quantify_n0"] == [[0.7, 0.7]]
    assert {"q3", "q4", "n0", "n1", "n2", "quantify_n1", "quantify_n2"} <= set(
        record.raw["physical_annotation"]
    )


def test_integral_float_counts_are_counts_and_others_stay_malformed():
    def check(boxes):
        return FilterConfig().check(
            parse_record(wisa_loader_record(file="x.mp4", text_bbox_num=boxes), 0)
        )

    assert check(0.0) is None and check(1.0) is None
    assert check(2.0).reason == "too_many_text_boxes" and "text_bbox_num 2 > 1" in check(2.0).detail
    for bad in (0.5, -1.0, float("inf"), "0"):
        with pytest.raises(RecordError) as info:
            check(bad)
        assert (
            info.value.rejection.reason == "malformed_field"
            and "text_bbox_num" in info.value.rejection.detail
        )


@pytest.mark.parametrize(
    ("key", "reason", "detail"),
    [
        ({}, "missing_field", "video_name or file or video_id"),
        ({"file": ""}, "malformed_field", "file=''"),
        ({"file": "videos/"}, "malformed_field", "file="),
        ({"file": 7}, "malformed_field", "file=7"),
        ({"video_id": "dir/clip"}, "malformed_field", "video_id="),
        ({"video_id": True}, "malformed_field", "video_id=True"),
        ({"video_id": 1.5}, "malformed_field", "video_id=1.5"),
    ],
)
def test_only_an_unusable_video_key_is_rejected(key, reason, detail):
    with pytest.raises(RecordError) as info:
        parse_record(wisa_loader_record(**key), 2)
    assert (info.value.rejection.reason, info.value.rejection.video_name) == (reason, "<record 2>")
    assert detail in info.value.rejection.detail


def test_the_same_video_under_two_key_spellings_is_a_duplicate():
    name = "f" * 64 + ".mp4"
    entries = [
        wisa_record(name),
        wisa_loader_record(file=f"videos/3/{name}"),
        wisa_loader_record(video_id="f" * 64),
    ]
    kept, rejected = select_records(entries, FilterConfig())
    assert [r.video_name for r in kept] == [name]
    assert [(r.video_name, r.reason, r.index) for r in rejected] == [
        (name, "duplicate_record", 1),
        (name, "duplicate_record", 2),
    ]


def wisa_prompt_record(i: int = 0) -> dict:
    """A prompt-side annotation record as WISA publishes them for inference."""
    return {
        "en_caption": f"A glass of water freezes into ice in a freezer ({i}).",
        "phys_law": "freezing releases latent heat",
        "q0": "No obvious dynamic phenomenon",
        "q1": "solidification",
        "q2": "No obvious optical phenomenon",
        "q3": "no",
        "q4": "1. liquid objects appearance\n2. solid objects appearance",
        "label": "Solidification",
    }


def test_a_prompt_side_record_is_rejected_as_no_video():
    assert is_prompt_side_record(wisa_prompt_record())
    assert not is_prompt_side_record(wisa_prompt_record() | {"file": "x.mp4"})
    assert not is_prompt_side_record(wisa_record("x.mp4"))
    entries = [wisa_prompt_record(i) for i in range(3)]
    kept, rejected = select_records(entries, FilterConfig())
    assert kept == []
    assert [(r.reason, r.index) for r in rejected] == [
        ("no_video", 0),
        ("no_video", 1),
        ("no_video", 2),
    ]
    assert "pila predict" in rejected[0].detail and "en_caption" in rejected[0].detail
    assert "no_video" in REJECTION_REASONS


# --------------------------------------------------------------- WISA prompt-side records
def prompt_side(**changes):
    record = {
        "en_caption": "  A candle flame flickers while wax melts and drips.  ",
        "phys_law": "heat from the flame melts the wax",
        "q0": "No obvious dynamic phenomenon",
        "q1": "melting; combustion",
        "q2": "No obvious optical phenomenon",
        "q3": "no",
        "q4": "1. solid objects appearance",
        "label": "Melting",
    }
    record.update(changes)
    return record


def test_a_prompt_side_record_is_labeled_through_the_relabeling_path(cmap):
    raw = prompt_side()
    prompt = wisa_prompt(raw, cmap)
    assert prompt.caption == raw["en_caption"]  # as written; readers normalise
    # the same record as a training clip gets the same labels from relabel_records
    clip = {**as_wisa_record(raw), "video_name": "a.mp4", "duration": 3.0}
    (relabeled,), _ = relabel_records([parse_record(clip, 0)], cmap)
    assert prompt.labels == relabeled.labels
    assert (
        clip["physical_annotation"]["q1"] == "melting; combustion"
        and clip["captions"] == raw["en_caption"]
    )
    assert set(prompt.labels) == {"phase_change", "thermal", "fluid"}  # q1 + label, "drips" keyword
    assert prompt.extra["phys_law"] == raw["phys_law"] and prompt.extra["q4"] == raw["q4"]
    assert "en_caption" not in prompt.extra


def test_each_source_of_a_prompt_side_record_counts(cmap):
    quiet = "A quiet scene."
    assert wisa_prompt(prompt_side(en_caption=quiet, label="", q1="none"), cmap).labels == ()
    # only the q-answers: q2 names refraction
    assert wisa_prompt(
        prompt_side(en_caption=quiet, label="", q1="none", q2="refraction"), cmap
    ).labels == ("optical",)
    # only the label field
    assert wisa_prompt(
        prompt_side(en_caption=quiet, label="Collision", q1="none"), cmap
    ).labels == ("collision",)
    # only the caption keywords
    assert wisa_prompt(
        prompt_side(en_caption="Smoke rises.", label="", q1="none"), cmap
    ).labels == ("compressible_flow",)
    # given labels win, in category order
    given = prompt_side(pila_labels=["optical", "fluid"])
    assert wisa_prompt(given, cmap).labels == ("fluid", "optical")


def test_a_prompt_side_record_follows_a_users_map(tmp_path):
    data = json.loads(Path(CategoryMap.load().source).read_text())
    data["phenomena"]["melting"] = ["phase_change"]
    data["keywords"] = []
    data["label_field"] = ""
    path = tmp_path / "map.json"
    path.write_text(json.dumps(data))
    assert wisa_prompt(prompt_side(), CategoryMap.load(path)).labels == (
        "phase_change",
        "thermal",
    )  # combustion → thermal


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"q0": "collision"}, "en_caption"),
        (prompt_side(en_caption="   "), "en_caption"),
        (prompt_side(pila_labels=["heat"]), "pila_labels"),
        (prompt_side(pila_labels="fluid"), "pila_labels"),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_an_unusable_prompt_side_record_is_an_error_naming_the_field(cmap, record, match):
    with pytest.raises(ValueError, match=match):
        wisa_prompt(record, cmap)


def prompt_file(tmp_path: Path, extra: list | None = None) -> Path:
    prompts = [
        {
            "en_caption": f"Water boils in a pot ({i}).",
            "phys_law": "boiling",
            "q0": "liquid motion",
            "q1": "vaporization",
            "q2": "No obvious optical phenomenon",
            "q3": "no",
            "q4": "1. no change",
            "label": "Vaporization",
        }
        for i in range(3)
    ]
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(prompts + (extra or [])))
    return path


def test_relabel_only_labels_a_prompt_side_file_as_the_prompt_reader_does(tmp_path, cmap, capsys):
    path = prompt_file(
        tmp_path,
        extra=[{"en_caption": "A quiet, empty room.", "label": "none"}, {"en_caption": " "}],
    )
    assert main(["--annotations", str(path), "--out", str(tmp_path / "out"), "--relabel-only"]) == 0
    written = json.loads((tmp_path / "out" / "annotations.relabeled.json").read_text())
    entries = json.loads(path.read_text())
    # the records as they were (still a prompt file), each with the labels wisa_prompt gives it
    assert [{k: v for k, v in w.items() if k != "pila_labels"} for w in written] == entries[:3]
    assert [tuple(w["pila_labels"]) for w in written] == [
        wisa_prompt(e, cmap).labels for e in entries[:3]
    ]
    assert all("phase_change" in w["pila_labels"] for w in written)  # q1: vaporization
    rejected = [
        json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()
    ]
    assert [(r["reason"], r["index"]) for r in rejected] == [
        ("unlabeled", 3),
        ("malformed_field", 4),
    ]
    assert "category distribution over 3 clips" in capsys.readouterr().out
    # the relabeled file reads back: pila_labels win, the caption is the prompt
    again, _ = select_records(written, FilterConfig(), prompts=True)
    assert [r.captions for r in again] == [e["en_caption"] for e in entries[:3]]


def test_a_cache_run_rejects_prompt_side_records_and_exits_2_with_the_reasons(tmp_path, caplog):
    path = prompt_file(tmp_path)
    (tmp_path / "videos").mkdir()
    args = [
        "--annotations",
        str(path),
        "--out",
        str(tmp_path / "out"),
        "--videos",
        str(tmp_path / "videos"),
    ]
    with caplog.at_level(logging.WARNING, logger="pila"):
        assert main([*args, "--device", "cpu"]) == 2
    rejected = [
        json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()
    ]
    assert [(r["reason"], r["index"]) for r in rejected] == [
        ("no_video", 0),
        ("no_video", 1),
        ("no_video", 2),
    ]
    assert all("pila predict" in r["detail"] for r in rejected)
    assert "3 of 3 entries" in caplog.text and "--relabel-only" in caplog.text
    assert "no usable records" in caplog.text and "no_video: 3" in caplog.text


def test_relabel_only_that_keeps_nothing_exits_2_with_the_reasons(tmp_path, caplog):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"en_caption": "A quiet, empty room.", "label": "none"}, 7]))
    assert main(["--annotations", str(path), "--out", str(tmp_path / "out"), "--relabel-only"]) == 2
    assert "no usable records: all 2 entries" in caplog.text
    assert (
        "unlabeled: 1" in caplog.text
        and "malformed_record: 1" in caplog.text
        and "--category-map" in caplog.text
    )
    assert not (tmp_path / "out" / "annotations.relabeled.json").exists()
    reasons = [
        json.loads(line)["reason"]
        for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()
    ]
    assert reasons == ["unlabeled", "malformed_record"]


def test_records_in_the_released_loader_schema_are_cached(tmp_path, wisa_fixture, tiny_backbone):
    """``file`` (a nested path), ``video_id`` (no extension) and ``text_bbox_num: 0.0`` find
    the same videos and give the same clips as ``video_name``."""
    entries = json.loads(wisa_fixture["annotations"].read_text())
    by_name = {e["video_name"]: e for e in entries if isinstance(e, dict)}
    first, second = wisa_fixture["good"][0], wisa_fixture["good"][3]  # one in the zip, one flat
    as_file = {k: v for k, v in by_name[first].items() if k != "video_name"} | {
        "file": f"data/videos/0/{first}",
        "text_bbox_num": 0.0,
    }
    as_id = {k: v for k, v in by_name[second].items() if k != "video_name"} | {
        "video_id": second[: -len(".mp4")],
        "width": 80.0,
    }
    (tmp_path / "loader.json").write_text(json.dumps([as_file, as_id]))
    config = prepare_config(
        wisa_fixture, tmp_path / "cache", annotations=str(tmp_path / "loader.json")
    )
    summary = prepare_cache(config, backbone=tiny_backbone)
    assert (summary.num_clips, summary.rejected) == (2, {})
    clips = CachedClips(tmp_path / "cache")
    assert clips.video_names == [first, second]
    written = json.loads((tmp_path / "cache" / "annotations.relabeled.json").read_text())
    assert (
        "file" in written[0] and "video_id" in written[1] and all(w["pila_labels"] for w in written)
    )
