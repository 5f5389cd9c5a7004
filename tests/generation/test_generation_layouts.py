"""Benchmark layouts: file names, sanitising, clashes, completeness and CSV indexes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pila.generation.benchmarks.phygenbench import PhyGenBenchLayout
from pila.generation.benchmarks.plain import PlainLayout
from pila.generation.benchmarks.vbench2 import VBench2Layout
from pila.generation.benchmarks.videophy import VideoPhy2Layout
from pila.generation.layouts import META_DIR, sanitize_filename, slugify
from pila.generation.prompts import build_items
from pila.generation.records import PromptRecord


def records(*prompts: str, dimension: str | None = None, **fields) -> list[PromptRecord]:
    return [
        PromptRecord(index=i, prompt=p, dimension=dimension, **fields)
        for i, p in enumerate(prompts)
    ]


def complete(layout, item, prompt: str | None = None, seed: int | None = None) -> None:
    """Create the files of a finished output (the sidecar last, as the writer does)."""
    paths = layout.paths(item)
    paths.video.parent.mkdir(parents=True, exist_ok=True)
    paths.video.write_bytes(b"mp4")
    paths.sidecar.parent.mkdir(parents=True, exist_ok=True)
    meta = {"prompt": prompt or item.record.prompt, "seed": item.seed if seed is None else seed}
    paths.sidecar.write_text(json.dumps(meta))


# ----------------------------------------------------------------------- sanitising
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A ball rolls.", "A ball rolls."),
        ("../../etc/passwd", "__._etc_passwd"),
        ("a/b\\c", "a_b_c"),
        ("line\nbreak\ttab\x00nul", "line_break_tab_nul"),
        (".hidden", "_hidden"),
        ("..", "_"),
        ("wait... what?", "wait. what?"),
        ("   ", "_"),
    ],
)
def test_sanitize_removes_escapes_and_control_characters(text, expected):
    name = sanitize_filename(text)
    assert name == expected
    assert "/" not in name and "\\" not in name and ".." not in name and not name.startswith(".")
    assert Path("root", name).parent == Path("root")


def test_long_names_are_cut_by_bytes_with_a_hash():
    long_a = "é" * 300 + "a"
    long_b = "é" * 300 + "b"
    a, b = sanitize_filename(long_a, max_bytes=100), sanitize_filename(long_b, max_bytes=100)
    assert len(a.encode()) <= 100 and len(b.encode()) <= 100
    assert a != b and "~" in a
    assert sanitize_filename("short") == "short"


def test_slugify():
    assert slugify("A Ball, Rolling DOWN a ramp!") == "a-ball-rolling-down-a-ramp"
    assert slugify("日本語") == "prompt"
    assert len(slugify("x" * 100)) == 48


# ------------------------------------------------------------------------ layouts
def test_plain_layout_names_and_sidecar_next_to_the_video(tmp_path):
    layout = PlainLayout().bind(tmp_path)
    recs = records("A ball rolls.", "Ice melts!")
    layout.plan(recs, videos_per_prompt=2)
    items = build_items(recs, 2)
    assert layout.paths(items[3]).video == tmp_path / "00001_ice-melts_1.mp4"
    assert layout.paths(items[3]).sidecar == tmp_path / "00001_ice-melts_1.json"


def test_phygenbench_layout_is_output_video_i_plus_1_under_the_model(tmp_path):
    layout = PhyGenBenchLayout(model_name="pila_wan21").bind(tmp_path)
    recs = records("a", "b", "c")
    layout.plan(recs, videos_per_prompt=2)
    items = build_items(recs, 2)
    assert layout.paths(items[0]).video == tmp_path / "pila_wan21" / "output_video_1.mp4"
    assert layout.paths(items[4]).video == tmp_path / "pila_wan21" / "output_video_3.mp4"
    assert layout.paths(items[5]).video == tmp_path / "pila_wan21-1" / "output_video_3.mp4"
    assert (
        layout.paths(items[4]).sidecar == tmp_path / META_DIR / "pila_wan21" / "output_video_3.json"
    )
    assert isinstance(layout, PhyGenBenchLayout)


def test_vbench2_layout_uses_the_first_180_characters_faithfully(tmp_path):
    long_prompt = "A heavy steel ball rolls " + "slowly " * 40 + "and stops."
    recs = records("A spring: stretched, then released?", long_prompt, dimension="Mechanics")
    layout = VBench2Layout().bind(tmp_path)
    layout.plan(recs, videos_per_prompt=3)
    items = build_items(recs, 3)
    assert (
        layout.paths(items[2]).video
        == tmp_path / "Mechanics" / "A spring: stretched, then released?-2.mp4"
    )
    assert layout.paths(items[3]).video.name == f"{long_prompt[:180]}-0.mp4"


def test_vbench2_clashing_names_get_a_hash_and_never_overwrite(tmp_path):
    shared = "x" * 180
    recs = records(shared + " first ending", shared + " second ending", "a_b", dimension="Material")
    layout = VBench2Layout().bind(tmp_path)
    layout.plan(recs, videos_per_prompt=1)
    paths = [layout.paths(item).video for item in build_items(recs, 1)]
    assert len(set(paths)) == 3
    assert paths[0].name == f"{shared}-0.mp4"  # the first keeps VBench's own name
    assert paths[1].name.startswith(shared[:100]) and "~" in paths[1].name
    assert paths[2].name == "a_b-0.mp4"
    assert all(p.parent == tmp_path / "Material" for p in paths)
    assert list(layout.renamed) == [1] and "prompt 0's" in layout.renamed[1]


# VBench-2.0: the evaluator opens f"{prompt[:180]}-{i}.mp4" in the dimension's folder,
# byte for byte.
def vbench2_expected(prompt: str, i: int) -> str:
    return f"{prompt[:180]}-{i}.mp4"


def test_vbench2_keeps_a_trailing_space_at_the_cut(tmp_path):
    prompt = (
        "A" * 179 + " ball rolls down a ramp and stops."
    )  # character 180 (index 179) is a space
    assert prompt[179] == " "
    layout = VBench2Layout(dimension="Mechanics").bind(tmp_path)
    recs = records(prompt)
    layout.plan(recs, 3)
    names = [layout.paths(item).video.name for item in build_items(recs, 3)]
    assert names == [vbench2_expected(prompt, i) for i in range(3)]
    assert names[0].encode() == ("A" * 179 + " -0.mp4").encode()


@pytest.mark.parametrize(
    "prompt",
    [
        "  Two  spaces, a tab\there and a backslash \\ stay.",
        "...a leading dot and dots... stay",
        "Caf\u00e9 au lait (e + combining accent: e\u0301) is not normalised",
        "..",
    ],
)
def test_vbench2_names_are_the_evaluators_byte_for_byte(tmp_path, prompt):
    layout = VBench2Layout(dimension="Material").bind(tmp_path)
    recs = records(prompt)
    layout.plan(recs, 1)
    (item,) = build_items(recs, 1)
    video = layout.paths(item).video
    assert video.name.encode() == vbench2_expected(prompt, 0).encode()
    assert video.parent == tmp_path / "Material"  # one component: nothing escapes the folder
    assert layout.unnamed == {}


@pytest.mark.parametrize(
    ("prompt", "reason"),
    [
        ("A ball on a 1/2 inch ramp rolls.", "'/'"),
        ("A nul \x00 character", "NUL"),
        ("\u6c34" * 90, "UTF-8 bytes"),  # 180 characters of 3 bytes: 270 bytes, over 255
    ],
)
def test_vbench2_prompts_that_cannot_be_named_get_no_output_and_a_reason(tmp_path, prompt, reason):
    layout = VBench2Layout(dimension="Mechanics").bind(tmp_path)
    recs = records("A spring stretches.", prompt)
    layout.plan(recs, 3)
    items = build_items(recs, 3)
    assert [layout.has_output(item) for item in items] == [True] * 3 + [False] * 3
    assert list(layout.unnamed) == [1] and reason in layout.unnamed[1]
    with pytest.raises(KeyError, match="prompt 1 has no output"):
        layout.paths(items[3])
    assert all(p.video.parent == tmp_path / "Mechanics" for p in layout.planned_paths())


def test_vbench2_augmented_prompts_are_named_by_the_short_prompt(tmp_path):
    short = "A ball rolls down a ramp."
    augmented = (
        "A heavy steel ball rolls down a long wooden ramp, speeding up under gravity, then stops."
    )
    recs = [PromptRecord(index=0, prompt=augmented, caption=short, dimension="Mechanics")]
    layout = VBench2Layout().bind(tmp_path)
    layout.plan(recs, 3)
    assert [layout.paths(item).video.name for item in build_items(recs, 3)] == [
        vbench2_expected(short, i) for i in range(3)
    ]


def test_vbench2_sample_counts_are_the_evaluators(tmp_path):
    assert VBench2Layout.required_samples("Mechanics") == 3
    assert VBench2Layout.required_samples("Diversity") == 20
    layout = VBench2Layout().bind(tmp_path)
    recs = [
        PromptRecord(index=0, prompt="A ball rolls.", dimension="Mechanics"),
        PromptRecord(index=1, prompt="A city street.", dimension="Diversity"),
    ]
    assert [layout.samples_for(r, None) for r in recs] == [3, 20]  # unset: the evaluator's count
    assert [layout.samples_for(r, 5) for r in recs] == [5, 5]  # set: the user's
    assert layout.sample_warnings(recs, None) == []
    assert layout.sample_warnings(recs, 20) == []
    (warning,) = layout.sample_warnings(recs, 4)
    assert (
        "videos_per_prompt 4 is below the 20 videos per prompt VBench-2.0 reads for Diversity"
        in warning
    )
    assert len(layout.sample_warnings(recs, 1)) == 2
    layout.plan(recs, {0: 3, 1: 20})
    assert sorted(p.video.name for p in layout.planned_paths())[-1] == "A city street.-9.mp4"
    assert len(layout.planned_paths()) == 23
    assert PlainLayout().bind(tmp_path).samples_for(recs[0], None) == 1


def test_vbench2_without_a_dimension_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="vbench2 layout needs a dimension.*format=vbench2"):
        VBench2Layout().bind(tmp_path).plan(records("a"), 1)
    layout = VBench2Layout(dimension="Mechanics").bind(tmp_path)
    layout.plan(records("a"), 1)
    assert layout.paths(build_items(records("a"), 1)[0]).video.parent.name == "Mechanics"


def test_complete_means_video_and_sidecar_with_the_same_prompt_and_seed(tmp_path):
    layout = PlainLayout().bind(tmp_path)
    recs = records("a", "b")
    layout.plan(recs, 1)
    first, second = build_items(recs, 1)
    assert not layout.is_complete(first)
    complete(layout, first)
    assert layout.is_complete(first)
    layout.paths(first).sidecar.unlink()
    assert not layout.is_complete(first)  # an mp4 without its sidecar is unfinished
    complete(layout, second, prompt="an older prompt")
    assert not layout.is_complete(second)
    complete(layout, second, seed=99)
    assert not layout.is_complete(second)
    layout.paths(second).sidecar.write_text("{truncated")
    assert not layout.is_complete(second)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_videophy2_csv_is_rebuilt_from_the_complete_outputs(tmp_path):
    recs = records("A cat jumps, lands.", "Water flows.", "Glass breaks.")
    recs[0] = PromptRecord(
        index=0,
        prompt="A long upsampled cat prompt.",
        caption="A cat jumps, lands.",
        extra={"rule": "gravity"},
    )
    layout = VideoPhy2Layout().bind(tmp_path)
    layout.plan(recs, 1)
    items = build_items(recs, 1)
    complete(layout, items[0])
    complete(layout, items[2])
    written = layout.write_indexes()
    assert written == [tmp_path / "videophy2_input.csv", tmp_path / "videophy2_rule_input.csv"]
    columns, rows = read_csv(tmp_path / "videophy2_input.csv")
    assert columns == ["caption", "videopath"]
    assert [r["caption"] for r in rows] == ["A cat jumps, lands.", "Glass breaks."]
    assert rows[1]["videopath"] == str((tmp_path / "videos" / "00002_glass-breaks_0.mp4").resolve())
    rule_columns, rule_rows = read_csv(tmp_path / "videophy2_rule_input.csv")
    assert rule_columns == ["videopath", "rule"] and rule_rows[0]["rule"] == "gravity"
    complete(layout, items[1])
    layout.write_indexes()
    assert len(read_csv(tmp_path / "videophy2_input.csv")[1]) == 3
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_videophy_v1_csv_is_videopath_caption_with_relative_paths(tmp_path):
    layout = VideoPhy2Layout(version=1, csv_paths="relative").bind(tmp_path)
    recs = records("Water flows.")
    layout.plan(recs, 2)
    for item in build_items(recs, 2):
        complete(layout, item)
    (path,) = layout.write_indexes()
    columns, rows = read_csv(path)
    assert path.name == "videophy_input.csv" and columns == ["videopath", "caption"]
    assert [r["videopath"] for r in rows] == [
        "videos/00000_water-flows_0.mp4",
        "videos/00000_water-flows_1.mp4",
    ]


def test_a_layout_without_a_folder_says_to_bind_it():
    layout = PlainLayout()
    layout.plan(records("a"), 1)
    with pytest.raises(RuntimeError, match=r"no folder; call bind\(output_dir\) first"):
        layout.planned_paths()


def test_bind_gives_a_fresh_copy_and_leaves_the_given_layout_alone(tmp_path):
    given = VBench2Layout(dimension="Mechanics")
    a, b = given.bind(tmp_path / "a"), given.bind(tmp_path / "b")
    a.plan(records("A ball rolls."), 1)
    assert given.root is None and a.root == tmp_path / "a" and b.dimension == "Mechanics"
    assert a.has_output(build_items(records("A ball rolls."))[0])
    assert not b.has_output(build_items(records("A ball rolls."))[0])  # nothing planned in b


CAPTIONS = [
    "Two  spaces,  and a comma.",
    "  Leading and trailing spaces  ",
    'A "quoted" word and a line\nbreak',
    "A carriage\rreturn and a tab\there",
]


@pytest.mark.parametrize("version", [1, 2])
def test_evaluator_csv_captions_round_trip_unchanged(tmp_path, version):
    recs = [PromptRecord(index=i, prompt=f"prompt {i}", caption=c) for i, c in enumerate(CAPTIONS)]
    layout = VideoPhy2Layout(version=version).bind(tmp_path)
    layout.plan(recs, 1)
    for item in build_items(recs, 1):
        complete(layout, item)
    (path,) = layout.write_indexes()
    with path.open(newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    assert header == (["caption", "videopath"] if version == 2 else ["videopath", "caption"])
    assert [row[header.index("caption")] for row in rows] == CAPTIONS
