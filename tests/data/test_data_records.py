"""WISA records: parsing, validation, filters, rejections and the hash split."""

from __future__ import annotations

import json

import pytest
from data_helpers import wisa_record

from pila.datamodules.records import (
    FilterConfig,
    load_annotations,
    parse_record,
    select_records,
)
from pila.datamodules.rejections import REJECTION_REASONS, RecordError, Rejection
from pila.datamodules.split import split_names, split_score


def test_a_real_format_record_parses_with_every_field_reachable():
    raw = wisa_record("ab" * 32 + ".mp4")
    record = parse_record(raw, 3)
    assert record.video_name == "ab" * 32 + ".mp4"
    assert record.id == "ab" * 32
    assert record.duration == 3.0 and record.index == 3
    assert record.captions.startswith("Two balls collide")
    assert record.number("motion_score") == 0.8 and record.number("visual_quality_score") == 5.0
    assert record.raw["physical_annotation"]["q0"] == "collision, rigid body motion"


@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        ({"video_name": None}, "missing_field", "video_name"),
        ({"video_name": 7}, "malformed_field", "video_name"),
        ({"video_name": "dir/x.mp4"}, "malformed_field", "video_name"),
        ({"captions": None}, "missing_field", "captions"),
        ({"captions": "   "}, "malformed_field", "captions"),
        ({"duration": None}, "missing_field", "duration"),
        ({"duration": "3 s"}, "malformed_field", "duration"),
        ({"duration": -1.0}, "malformed_field", "duration"),
        ({"duration": float("nan")}, "malformed_field", "duration"),
        ({"fps": "fast"}, "malformed_field", "fps"),
        ({"text_bbox_num": 1.5}, "malformed_field", "text_bbox_num"),
        ({"text_bbox_num": True}, "malformed_field", "text_bbox_num"),
        ({"label": ["collision"]}, "malformed_field", "label"),
        ({"physical_annotation": "q0: collision"}, "malformed_field", "physical_annotation"),
        ({"pila_labels": ["rigid", "collision"]}, "malformed_field", "pila_labels"),
        ({"pila_description": ["not", "text"]}, "malformed_field", "pila_description"),
    ],
)
def test_missing_or_malformed_fields_are_rejections_naming_the_field(change, reason, detail):
    raw = wisa_record("c" * 64 + ".mp4")
    raw.update(change)
    with pytest.raises(RecordError) as info:
        parse_record(raw, 0)
    assert info.value.rejection.reason == reason
    assert detail in info.value.rejection.detail


def test_a_non_object_entry_is_a_malformed_record():
    with pytest.raises(RecordError) as info:
        parse_record("just a string", 5)
    assert info.value.rejection.reason == "malformed_record"
    assert info.value.rejection.video_name == "<record 5>"


def test_unknown_rejection_reasons_are_refused():
    with pytest.raises(ValueError, match="unknown rejection reason"):
        Rejection("x.mp4", "bad vibes")
    assert {"video_missing", "video_empty", "video_undecodable", "video_too_short"} <= set(
        REJECTION_REASONS
    )


def test_default_filters_follow_wisa_and_optional_thresholds_apply():
    filters = FilterConfig()
    assert (filters.min_duration, filters.max_duration, filters.max_text_boxes) == (2.0, 10.0, 1)

    def reason(filters, **change):
        problem = filters.check(parse_record(wisa_record("d" * 64 + ".mp4", **change), 0))
        return None if problem is None else problem.reason

    assert reason(filters) is None
    assert reason(filters, duration=1.99) == "duration_out_of_range"
    assert reason(filters, duration=10.01) == "duration_out_of_range"
    assert reason(filters, duration=2.0) is None and reason(filters, duration=10.0) is None
    assert reason(filters, text_bbox_num=1) is None
    assert reason(filters, text_bbox_num=2) == "too_many_text_boxes"
    assert reason(filters, text_bbox_num=None) == "missing_field"
    strict = FilterConfig(min_motion_score=1.0, min_quality=5.5)
    assert reason(strict) == "low_motion"  # motion_score 0.8
    assert (
        reason(FilterConfig(min_motion_score=1.0, motion_score_field="motion_score_v2")) is None
    )  # v2 is 1.1
    assert reason(FilterConfig(min_quality=5.5)) == "low_quality"
    assert reason(FilterConfig(min_quality=5.5), visual_quality_score=None) == "missing_field"
    open_filters = FilterConfig(min_duration=None, max_duration=None, max_text_boxes=None)
    assert reason(open_filters, duration=60.0, text_bbox_num=9) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_duration": -1.0},
        {"min_duration": 5.0, "max_duration": 2.0},
        {"max_text_boxes": -1},
        {"motion_score_field": "speed"},
    ],
)
def test_filter_config_validates_itself(kwargs):
    with pytest.raises(ValueError):
        FilterConfig(**kwargs)


def test_select_records_keeps_file_order_and_rejects_duplicates(tmp_path):
    names = [f"{i:064x}.mp4" for i in range(4)]
    entries = [wisa_record(n) for n in names] + [wisa_record(names[1], captions="again")] + [42]
    kept, rejected = select_records(entries, FilterConfig())
    assert [r.video_name for r in kept] == names
    assert [(r.video_name, r.reason, r.index) for r in rejected] == [
        (names[1], "duplicate_record", 4),
        ("<record 5>", "malformed_record", 5),
    ]


def test_annotations_load_from_a_json_list_or_json_lines(tmp_path):
    records = [wisa_record(f"{i:064x}.mp4") for i in range(3)]
    (tmp_path / "a.json").write_text(json.dumps(records))
    assert load_annotations(tmp_path / "a.json") == records
    lines = [json.dumps(r) for r in records]
    lines.insert(1, "{broken json")
    (tmp_path / "a.jsonl").write_text("\n".join(lines))
    entries = load_annotations(tmp_path / "a.jsonl")
    kept, rejected = select_records(entries, FilterConfig())
    assert len(kept) == 3 and [r.reason for r in rejected] == ["malformed_record"]
    (tmp_path / "obj.json").write_text(json.dumps({"records": records}))
    with pytest.raises(ValueError, match="JSON list"):
        load_annotations(tmp_path / "obj.json")
    with pytest.raises(FileNotFoundError, match="wisa-80k.json"):
        load_annotations(tmp_path / "nope.json")


def test_split_is_a_pure_function_of_the_name_and_seed():
    names = [f"{i:064x}.mp4" for i in range(2000)]
    train, val = split_names(names, 0.1, seed=0)
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(names)
    assert 150 < len(val) < 250  # ~10 %
    # a name's side does not depend on the other names or their order
    sub_train, sub_val = split_names(list(reversed(names[:500])), 0.1, seed=0)
    assert set(sub_val) == set(val) & set(names[:500])
    assert all(split_score(n, 0) < 0.1 for n in val)
    # another seed gives another split
    assert set(split_names(names, 0.1, seed=1)[1]) != set(val)


def test_split_keeps_one_validation_clip_for_tiny_sets_and_none_when_asked():
    names = [f"{i:064x}.mp4" for i in range(3)]
    train, val = split_names(names, 0.01, seed=0)
    assert len(val) == 1 and val[0] == min(names, key=lambda n: split_score(n, 0))
    assert split_names(names, 0.0, seed=0) == (names, [])
    with pytest.raises(ValueError, match="val_fraction"):
        split_names(names, 1.0, seed=0)
