"""Relabeling: the shipped category map follows the table in formats.md; sources, hooks, errors."""

from __future__ import annotations

import json

import pytest
from data_helpers import wisa_record

from pila.categories import CATEGORIES
from pila.datamodules.records import parse_record
from pila.datamodules.relabel import (
    category_distribution,
    format_distribution,
    parser_labeler,
    relabel_records,
    relabeled_annotation,
)
from pila.parser.category_map import DEFAULT_CATEGORY_MAP, CategoryMap

# formats.md: "A starting map to the eight PILA categories"
TABLE = {
    "rigid body motion": {"rigid_body"},
    "elastic motion": {"elastic"},
    "deformation": {"elastic"},
    "liquid motion": {"fluid"},
    "gas motion": {"compressible_flow"},
    "explosion": {"compressible_flow", "thermal"},
    "collision": {"collision"},
    "melting": {"phase_change", "thermal"},
    "solidification": {"phase_change", "thermal"},
    "vaporization": {"phase_change", "thermal"},
    "liquefaction": {"phase_change", "thermal"},
    "combustion": {"thermal"},
    "reflection": {"optical"},
    "refraction": {"optical"},
    "scattering": {"optical"},
    "interference and diffraction": {"optical"},
    "unnatural light source": {"optical"},
}

NO_ANSWERS = {
    "q0": "No obvious dynamic phenomenon",
    "q1": "No obvious thermodynamic phenomenon",
    "q2": "No obvious optical phenomenon",
}


@pytest.fixture(scope="module")
def cmap():
    return CategoryMap.load()


def test_the_map_ships_as_package_data_and_covers_all_17_phenomena(cmap):
    assert DEFAULT_CATEGORY_MAP.name == "category_map.json" and DEFAULT_CATEGORY_MAP.is_file()
    assert set(cmap.phenomena) == set(TABLE)
    assert len(cmap.sha256) == 64


@pytest.mark.parametrize("phenomenon", sorted(TABLE))
def test_each_wisa_label_maps_as_the_table_says(cmap, phenomenon):
    # a bare record: only the label speaks (neutral caption, no answers)
    record = {
        "label": phenomenon.title(),
        "captions": "A scene.",
        "physical_annotation": NO_ANSWERS,
    }
    assert set(cmap.labels_for_record(record)) == TABLE[phenomenon]


def test_answers_add_every_named_phenomenon_and_skip_no_obvious(cmap):
    record = {
        "label": "solidification",
        "captions": "A scene.",
        "physical_annotation": {
            "q0": "liquid motion, deformation",
            "q1": "solidification; melting",
            "q2": "No obvious optical phenomenon",
        },
    }
    sources = cmap.label_sources(record)
    assert sources["label"] == ["phase_change", "thermal"]
    assert sources["answers"] == ["elastic", "fluid", "phase_change", "thermal"]
    assert sources["keywords"] == []
    assert cmap.labels_for_record(record) == ["elastic", "fluid", "phase_change", "thermal"]
    assert cmap.labels_from_answers(
        {"physical_annotation": {"q2": "interference and diffraction"}}
    ) == ["optical"]


def test_labels_come_in_category_order_and_couple_mechanisms(cmap):
    # the paper's two examples (App. B.1)
    assert cmap.labels_for_text("A steel ball bounces across the floor") == [
        "rigid_body",
        "collision",
    ]
    assert cmap.labels_for_text("Water boils in a pot on the stove") == [
        "fluid",
        "phase_change",
        "thermal",
    ]
    assert cmap.labels_for_text("Light refracts through a glass prism into a rainbow") == [
        "optical"
    ]
    assert cmap.labels_for_text("A quiet empty room") == []
    for text in ("smoke rises", "The ice is melting", "a car crashes into a wall"):
        labels = cmap.labels_for_text(text)
        assert labels == [c for c in CATEGORIES if c in labels]


def test_keywords_read_only_the_configured_fields(cmap):
    record = {
        "label": "collision",
        "captions": "Balls collide.",
        "physical_annotation": {"phys_law": "heat flows"},
    }
    assert "thermal" not in cmap.labels_for_record(record)


def test_a_replacement_map_file_is_used_and_validated(tmp_path):
    custom = {
        "version": 1,
        "phenomena": {"collision": ["collision", "rigid_body"]},
        "label_field": "label",
        "answer_fields": [],
        "keyword_fields": ["captions"],
        "keywords": [{"pattern": "\\bgoo\\b", "categories": ["fluid"]}],
    }
    path = tmp_path / "map.json"
    path.write_text(json.dumps(custom))
    cmap = CategoryMap.load(path)
    assert cmap.labels_for_record({"label": "Collision", "captions": "goo everywhere"}) == [
        "rigid_body",
        "fluid",
        "collision",
    ]
    assert cmap.labels_for_record({"label": "melting", "captions": "x"}) == []

    for broken, message in [
        ({**custom, "phenomena": {"collision": ["smash"]}}, "unknown categories"),
        (
            {**custom, "keywords": [{"pattern": "(", "categories": ["fluid"]}]},
            "not a valid regular expression",
        ),
        ({**custom, "version": 2}, "unsupported version"),
        ({**custom, "answer_fields": "q0"}, "answer_fields"),
    ]:
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=message) as info:
            CategoryMap.load(path)
        assert str(path) in str(info.value)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CategoryMap.load(path)
    with pytest.raises(FileNotFoundError, match="shipped"):
        CategoryMap.load(tmp_path / "missing.json")


def _records(*raws):
    return [parse_record(raw, i) for i, raw in enumerate(raws)]


def test_relabel_precedence_pila_labels_then_labeler_then_map(cmap):
    given = wisa_record("a" * 64 + ".mp4", pila_labels=["optical"])
    plain = wisa_record("b" * 64 + ".mp4")
    empty = wisa_record(
        "c" * 64 + ".mp4", label="?", captions="A quiet room.", physical_annotation=NO_ANSWERS
    )
    calls = []

    def labeler(raw):
        calls.append(raw["video_name"])
        return ["thermal", "fluid"] if raw["video_name"] == plain["video_name"] else []

    kept, rejected = relabel_records(_records(given, plain, empty), cmap, labeler)
    assert [r.labels for r in kept] == [("optical",), ("fluid", "thermal")]
    assert [(r.video_name, r.reason) for r in rejected] == [(empty["video_name"], "unlabeled")]
    assert calls == [plain["video_name"], empty["video_name"]]  # never asked about a labeled record

    kept, _ = relabel_records(_records(plain), cmap, lambda raw: [])  # empty answer → the map
    assert kept[0].labels == ("rigid_body", "collision")
    with pytest.raises(ValueError, match="unknown categories"):
        relabel_records(_records(plain), cmap, lambda raw: ["physics"])


def test_distribution_counts_each_label_and_the_relabeled_annotation_round_trips(cmap):
    kept, _ = relabel_records(
        _records(
            wisa_record("a" * 64 + ".mp4"),
            wisa_record(
                "b" * 64 + ".mp4",
                label="melting",
                captions="Ice melts.",
                physical_annotation=NO_ANSWERS,
            ),
        ),
        cmap,
    )
    counts = category_distribution(kept)
    assert list(counts) == list(CATEGORIES)
    assert counts == {
        **dict.fromkeys(CATEGORIES, 0),
        "rigid_body": 1,
        "collision": 1,
        "phase_change": 1,
        "thermal": 1,
    }
    table = format_distribution(counts, len(kept))
    assert "phase_change" in table and "50.0%" in table
    written = relabeled_annotation(kept)
    assert [w["pila_labels"] for w in written] == [
        ["rigid_body", "collision"],
        ["phase_change", "thermal"],
    ]
    again, _ = relabel_records(
        _records(*written), CategoryMap.from_dict({"version": 1})
    )  # an empty map
    assert [r.labels for r in again] == [r.labels for r in kept]


def test_the_llm_prompt_parser_can_relabel_records(cmap):
    from pila.parser import LLMPromptParser

    asked = []

    def completion(text: str) -> str:
        asked.append(text)
        if '"categories"' in text:
            return '{"categories": ["Fluid", "thermal", "plasma"]}'
        return '{"description": "water is heated until it moves"}'

    parser = LLMPromptParser(completion_fn=completion)
    record = wisa_record("e" * 64 + ".mp4", captions="Water is heated in a glass pot.")
    kept, _ = relabel_records(_records(record), cmap, parser_labeler(parser))
    assert kept[0].labels == ("fluid", "thermal")  # the LLM's answer, unknown names dropped
    assert kept[0].description == "water is heated until it moves"  # conditions the adapter
    assert kept[0].condition_text == kept[0].description
    assert any("Water is heated in a glass pot." in text for text in asked)
    # the relabeled annotation carries the description; reading it back restores it
    (written,) = relabeled_annotation(kept)
    assert written["pila_description"] == "water is heated until it moves"
    (again,) = relabel_records(_records(written), cmap)[0]
    assert again.description == kept[0].description and again.labels == kept[0].labels
    # a model that answers nonsense falls back to the rules on the caption
    nonsense = LLMPromptParser(completion_fn=lambda text: "I think it is physics.", retries=0)
    kept, _ = relabel_records(_records(record), cmap, parser_labeler(nonsense))
    assert kept[0].labels == tuple(cmap.labels_for_text(record["captions"]))
    assert (
        kept[0].description == "" and kept[0].condition_text == record["captions"]
    )  # nothing refined


def test_a_description_is_kept_only_when_it_says_more_than_the_caption(cmap):
    from pila.parser.base import ParsedPrompt

    def parser_says(text):
        return lambda raw: ParsedPrompt(raw["captions"], text, ("fluid",), "llm")

    record = wisa_record("f" * 64 + ".mp4", captions="Water  pours\ninto a glass.")
    # the rule-based parser's description is the caption with its whitespace collapsed
    kept, _ = relabel_records(_records(record), cmap, parser_says("Water pours into a glass."))
    assert kept[0].description == "" and kept[0].condition_text == record["captions"].strip()
    # a parser answer replaces an earlier description, also by "nothing more to say"
    stale = {**record, "pila_description": "an old description"}
    kept, _ = relabel_records(_records(stale), cmap, parser_says(record["captions"]))
    assert kept[0].description == ""
    kept, _ = relabel_records(_records(stale), cmap, parser_says("  water is  poured  "))
    assert kept[0].description == "water is poured"
    # a labeler that answers with names only keeps the annotated description
    kept, _ = relabel_records(_records(stale), cmap, lambda raw: ["fluid"])
    assert kept[0].description == "an old description"
