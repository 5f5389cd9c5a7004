"""Prompt files: every format, every bad-input error, seeds, and the per-rank split."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from pila.generation.benchmarks import read_prompt_file
from pila.generation.prompts import (
    PromptDataModule,
    PromptItemDataset,
    RankShardSampler,
    build_items,
    shard_indices,
)
from pila.generation.records import PromptFileError


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- formats
def test_txt_one_prompt_per_line_blank_lines_skipped(tmp_path):
    records = read_prompt_file(write(tmp_path / "p.txt", "A ball rolls.\n\n  Water   pours.  \n"))
    assert [(r.index, r.prompt) for r in records] == [(0, "A ball rolls."), (1, "Water pours.")]
    assert records[0].dimension is None and records[0].labels is None


def test_jsonl_with_seed_labels_and_refined_prompt(tmp_path):
    lines = [
        {"prompt": "A ball bounces.", "seed": 7, "labels": ["collision", "rigid_body"]},
        {
            "caption": "Ice melts.",
            "labels": "phase_change; thermal",
            "refined_prompt": "solid ice turns to water",
        },
        "Smoke rises.",
    ]
    path = write(tmp_path / "p.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    a, b, c = read_prompt_file(path)
    assert (a.prompt, a.seed, a.labels) == ("A ball bounces.", 7, ("rigid_body", "collision"))
    assert (b.prompt, b.labels, b.refined_prompt) == (
        "Ice melts.",
        ("phase_change", "thermal"),
        "solid ice turns to water",
    )
    assert (c.index, c.prompt, c.seed) == (2, "Smoke rises.", None)


def test_json_list_and_csv(tmp_path):
    path = write(tmp_path / "p.json", json.dumps({"prompts": [{"prompt": "x", "id": "a1"}, "y"]}))
    records = read_prompt_file(path)
    assert [r.prompt for r in records] == ["x", "y"] and records[0].extra == {"id": "a1"}
    csv_path = write(
        tmp_path / "p.csv", 'prompt,seed,labels\n"A ball, rolling",3,rigid_body\nB,,\n'
    )
    rows = read_prompt_file(csv_path)
    assert [(r.prompt, r.seed, r.labels) for r in rows] == [
        ("A ball, rolling", 3, ("rigid_body",)),
        ("B", None, None),
    ]


def test_phygenbench_prompts_json_is_detected(tmp_path):
    data = [
        {
            "caption": "A ball falls.",
            "physical_laws": "gravity",
            "sub_category": "Gravity",
            "main_category": "Force",
        },
        {
            "caption": "Light bends.",
            "physical_laws": "refraction",
            "sub_category": "Refraction",
            "main_category": "Light",
        },
    ]
    records = read_prompt_file(write(tmp_path / "prompts.json", json.dumps(data)))
    assert [r.prompt for r in records] == ["A ball falls.", "Light bends."]
    assert records[1].extra["main_category"] == "Light" and records[1].index == 1


def test_videophy2_csv_with_upsampled_prompts_keeps_the_short_caption(tmp_path):
    text = (
        "caption,upsampled_caption,action,category,is_hard\n"
        "A cat jumps.,A grey cat leaps onto a table.,jump,animal,0\n"
    )
    path = write(tmp_path / "videophy2.csv", text)
    (short,) = read_prompt_file(path, "videophy2")
    assert short.prompt == "A cat jumps." and short.evaluator_caption == "A cat jumps."
    (long,) = read_prompt_file(path, "videophy2", prompt_column="upsampled_caption")
    assert (
        long.prompt == "A grey cat leaps onto a table." and long.evaluator_caption == "A cat jumps."
    )
    assert long.extra["action"] == "jump"
    (v1,) = read_prompt_file(
        write(tmp_path / "videophy.csv", "caption,states_of_matter\nWater flows.,fluid\n"),
        "videophy",
    )
    assert v1.prompt == "Water flows."


def test_vbench2_dimension_comes_from_the_file_name(tmp_path):
    records = read_prompt_file(
        write(tmp_path / "Mechanics.txt", "A spring oscillates.\nA ball rolls.\n"), "vbench2"
    )
    assert {r.dimension for r in records} == {"Mechanics"}
    named = read_prompt_file(tmp_path / "Mechanics.txt", "vbench2", dimension="Material")
    assert named[0].dimension == "Material"


def test_vbench2_folder_reads_every_dimension(tmp_path):
    folder = tmp_path / "vbench2"
    folder.mkdir()
    write(folder / "Mechanics.txt", "A spring oscillates.\nA ball rolls.\n")
    write(folder / "Material.txt", "Clay deforms.\n")
    records = read_prompt_file(folder, "vbench2")
    assert [(r.index, r.dimension, r.prompt) for r in records] == [
        (0, "Material", "Clay deforms."),
        (1, "Mechanics", "A spring oscillates."),
        (2, "Mechanics", "A ball rolls."),
    ]
    with pytest.raises(PromptFileError, match="holds no .txt prompt lists"):
        read_prompt_file(_empty_dir(tmp_path), "vbench2")


def _empty_dir(tmp_path):
    path = tmp_path / "none"
    path.mkdir()
    return path


# ------------------------------------------------------- benchmark prompt-file shapes
def test_phygenbench_explicit_prompts_honour_prompt_column_and_keep_the_index(tmp_path):
    data = [
        {
            "caption": "A ball falls.",
            "explicit_caption": (
                "A red rubber ball is released and accelerates downward under gravity."
            ),
            "physical_laws": "gravity",
            "sub_category": "Gravity",
            "main_category": "Force",
        },
        {
            "caption": "Light bends.",
            "explicit_caption": "A laser beam bends as it enters a tank of water.",
            "physical_laws": "refraction",
            "sub_category": "Refraction",
            "main_category": "Light",
        },
    ]
    path = write(tmp_path / "explicit_prompts.json", json.dumps(data))
    short = read_prompt_file(path)
    assert [r.prompt for r in short] == ["A ball falls.", "Light bends."]
    assert (
        short[0].extra["explicit_caption"] == data[0]["explicit_caption"]
    )  # the alternative is kept
    explicit = read_prompt_file(
        path, prompt_column="explicit_caption"
    )  # auto-detected as PhyGenBench
    assert [(r.index, r.prompt) for r in explicit] == [
        (0, data[0]["explicit_caption"]),
        (1, data[1]["explicit_caption"]),
    ]
    assert (
        explicit[1].evaluator_caption == "Light bends."
        and explicit[1].extra["caption"] == "Light bends."
    )
    assert (
        explicit[1].extra["main_category"] == "Light"
        and "explicit_caption" not in explicit[1].extra
    )
    with pytest.raises(
        PromptFileError,
        match=r"explicit_prompts\.json.*entry 0 needs a non-empty 'long_caption'.*prompt_column",
    ):
        read_prompt_file(path, prompt_column="long_caption")


def test_videophy_test_csv_folds_repeated_captions_in_first_row_order(tmp_path, caplog):
    captions = ["Water pours into a glass.", "A ball rolls down a ramp.", "Ice melts on a stove."]
    rows = ["caption,states_of_matter,source_model"]
    for model in (
        "lavie",
        "svd",
        "pika",
    ):  # the public test layout: every caption once per source model
        rows += [f"{c},fluid,{model}" for c in captions]
    path = write(tmp_path / "videophy_test.csv", "\n".join(rows) + "\n")
    dm = PromptDataModule(prompt_file=str(path), format="videophy", videos_per_prompt=2)
    with caplog.at_level("INFO", logger="pila.generation.prompts"):
        dm.setup("predict")
    assert [(r.index, r.prompt) for r in dm.records] == list(enumerate(captions))
    assert dm.records[0].extra["source_model"] == "lavie"  # the first row's fields
    assert (
        len(dm.items) == 6 and dm.folded_duplicates == 6 and dm.summary()["folded_duplicates"] == 6
    )
    assert "6 rows repeat an earlier caption" in caplog.text
    auto = PromptDataModule(prompt_file=str(path))  # VideoPhy's columns: read as videophy
    auto.setup("predict")
    assert auto.read_as == "videophy" and len(auto.records) == 3 and auto.folded_duplicates == 6
    text = path.read_text().replace("states_of_matter", "medium")
    generic = write(tmp_path / "generic.csv", text)
    plain = PromptDataModule(prompt_file=str(generic))  # a generic CSV keeps every row
    plain.setup("predict")
    assert plain.read_as == "csv" and len(plain.records) == 9 and plain.folded_duplicates == 0


def test_vbench2_augmented_file_is_generated_from_and_named_by_the_short_prompt(tmp_path):
    short = write(tmp_path / "Mechanics.txt", "A spring oscillates.\nA ball rolls.\n")
    aug_dir = tmp_path / "wanx_aug_prompt"
    aug_dir.mkdir()
    aug = write(
        aug_dir / "Mechanics.txt",
        "A steel spring bounces up and down, close-up.\nA wooden ball rolls across a table.\n",
    )
    records = read_prompt_file(short, "vbench2", augmented_file=aug)
    assert [(r.prompt, r.evaluator_caption, r.dimension) for r in records] == [
        ("A steel spring bounces up and down, close-up.", "A spring oscillates.", "Mechanics"),
        ("A wooden ball rolls across a table.", "A ball rolls.", "Mechanics"),
    ]
    dm = PromptDataModule(prompt_file=str(short), format="vbench2", augmented_file=str(aug))
    dm.setup("predict")
    assert dm.records == records
    # a folder of lists pairs with a folder of same-named augmented lists
    folder = tmp_path / "prompt"
    folder.mkdir()
    write(folder / "Mechanics.txt", short.read_text())
    assert read_prompt_file(folder, "vbench2", augmented_file=aug_dir) == records
    # mismatched line counts: one line naming both files
    bad = write(tmp_path / "short_aug.txt", "only one line\n")
    with pytest.raises(
        PromptFileError,
        match=r"^augmented prompt file '.*short_aug\.txt' has 1 prompts "
        r"but prompt file '.*Mechanics\.txt' has 2",
    ):
        read_prompt_file(short, "vbench2", augmented_file=bad)


def test_a_record_names_its_short_prompt_in_name_prompt_or_caption(tmp_path):
    lines = [
        {
            "prompt": "A steel spring bounces up and down.",
            "name_prompt": "A spring oscillates.",
            "dimension": "Mechanics",
        },
        {"prompt": "A wooden ball rolls across a table.", "caption": "A ball rolls."},
        {"prompt": "Smoke rises."},
    ]
    a, b, c = read_prompt_file(
        write(tmp_path / "aug.jsonl", "\n".join(json.dumps(x) for x in lines))
    )
    assert (a.prompt, a.evaluator_caption, a.dimension, a.extra) == (
        lines[0]["prompt"],
        "A spring oscillates.",
        "Mechanics",
        {},
    )
    assert (b.prompt, b.evaluator_caption) == (lines[1]["prompt"], "A ball rolls.")
    assert c.caption is None and c.evaluator_caption == "Smoke rises."
    (row,) = read_prompt_file(
        write(tmp_path / "aug.csv", "prompt,name_prompt\nA long text.,Short.\n")
    )
    assert (row.prompt, row.evaluator_caption) == ("A long text.", "Short.")


WISA_PROMPTS = [
    {
        "en_caption": "A glass marble is dropped onto a tiled floor and bounces several times.",
        "phys_law": "Collisions conserve momentum.",
        "q0": "collision, rigid body motion",
        "q1": "no obvious thermodynamic phenomenon",
        "q2": "reflection",
        "q3": "no",
        "q4": "1. solid objects appearance",
        "label": "collision",
    },
    {
        "en_caption": "A quiet empty room.",
        "phys_law": "",
        "q0": "no obvious dynamic phenomenon",
        "q1": "no obvious thermodynamic phenomenon",
        "q2": "no obvious optical phenomenon",
        "q3": "no",
        "q4": "",
        "label": "",
    },
]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_wisa_prompt_side_records_are_a_prompt_file_labeled_through_the_category_map(
    tmp_path, suffix
):
    from pila.datamodules.prompt_side import wisa_prompt
    from pila.parser.category_map import CategoryMap

    text = (
        json.dumps(WISA_PROMPTS)
        if suffix == ".json"
        else "\n".join(json.dumps(r) for r in WISA_PROMPTS)
    )
    marble, room = read_prompt_file(write(tmp_path / f"wisa_prompts{suffix}", text))
    assert marble.prompt == WISA_PROMPTS[0]["en_caption"]
    expected = wisa_prompt(WISA_PROMPTS[0], CategoryMap.load()).labels  # the relabeling path
    assert marble.labels == expected and {"rigid_body", "collision", "optical"} <= set(
        marble.labels
    )
    assert marble.extra["phys_law"] == "Collisions conserve momentum." and marble.extra[
        "q0"
    ].startswith("collision")
    assert room.labels is None  # no label: the prompt parser decides
    dm = PromptDataModule(prompt_file=str(tmp_path / f"wisa_prompts{suffix}"))
    dm.setup("predict")
    assert [r.prompt for r in dm.records] == [r["en_caption"] for r in WISA_PROMPTS]


def test_wisa_prompt_records_use_their_own_category_map(tmp_path):
    table = json.loads(
        (Path(__file__).resolve().parents[2] / "pila" / "parser" / "category_map.json").read_text()
    )
    table["phenomena"]["collision"] = ["elastic"]
    table["keywords"] = []
    table["answer_fields"] = []
    custom = write(tmp_path / "my_map.json", json.dumps(table))
    path = write(tmp_path / "wisa.json", json.dumps(WISA_PROMPTS[:1]))
    (record,) = read_prompt_file(path, category_map=custom)
    assert record.labels == ("elastic",)
    with pytest.raises(PromptFileError, match=r"wisa\.json.*entry 0.*en_caption"):
        read_prompt_file(
            write(tmp_path / "wisa.json", json.dumps([{"en_caption": " ", "q0": "x"}])), "wisa"
        )


# ------------------------------------------------------- formats known by their columns
VIDEOPHY_TEST_HEADER = "video_url,caption,states_of_matter,complexity,source"
VIDEOPHY2_HEADER = "caption,upsampled_caption,action,category,is_hard"


def videophy_rows(header: str, captions: list[str], repeats: int) -> str:
    """Each caption ``repeats`` times (VideoPhy's test CSV: once per source model)."""
    rows = [header]
    for k in range(repeats):
        for c in captions:
            if header == VIDEOPHY_TEST_HEADER:
                rows.append(f'https://x/{k}.mp4,"{c}",fluid,1,model{k}')
            else:
                rows.append(f'"{c}","In detail: {c}",act,cat,{k % 2}')
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize(
    ("header", "expected", "marker"),
    [
        (VIDEOPHY_TEST_HEADER, "videophy", "states_of_matter"),
        (VIDEOPHY2_HEADER, "videophy2", "upsampled_caption, is_hard"),
    ],
)
def test_a_videophy_csv_without_format_is_read_as_its_format_and_folded(
    tmp_path, caplog, header, expected, marker
):
    captions = ["Water pours into a glass.", "A ball, thrown, rolls down a ramp."]
    path = write(tmp_path / "prompts.csv", videophy_rows(header, captions, repeats=3))
    dm = PromptDataModule(prompt_file=str(path))  # no format
    with caplog.at_level("INFO"):
        dm.setup("predict")
    assert dm.read_as == expected and dm.summary()["read_as"] == expected
    assert [(r.index, r.evaluator_caption) for r in dm.records] == list(enumerate(captions))
    assert dm.folded_duplicates == 4
    assert f"read as {expected} (detected from its columns caption, {marker})" in caplog.text
    named = PromptDataModule(prompt_file=str(path), format=expected)  # the same as naming it
    named.setup("predict")
    assert named.records == dm.records


def test_videophy_columns_video_url_and_source_mark_it_together_and_not_alone(tmp_path):
    rows = "video_url,caption,source\nu1,A cup tips.,m1\nu2,A cup tips.,m2\n"
    both = write(tmp_path / "both.csv", rows)
    dm = PromptDataModule(prompt_file=str(both))
    dm.setup("predict")
    assert dm.read_as == "videophy" and len(dm.records) == 1
    for header in ("caption,source", "video_url,caption", "prompt,states_of_matter"):
        one = write(tmp_path / "one.csv", f"{header}\nA cup tips.,x\nA cup tips.,y\n")
        dm = PromptDataModule(prompt_file=str(one))
        dm.setup("predict")
        assert dm.read_as == "csv" and len(dm.records) == 2, header  # a generic CSV keeps every row


# ----------------------------------------------------------------------- bad input
def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt.*does not exist"):
        read_prompt_file(tmp_path / "nope.txt")


@pytest.mark.parametrize("text", ["", "\n  \n", "prompt,seed\n"])
def test_empty_prompt_file_is_an_error_naming_it(tmp_path, text):
    path = write(tmp_path / ("empty.csv" if "," in text else "empty.txt"), text)
    with pytest.raises(PromptFileError, match=r"empty\.(txt|csv).*(is empty|holds no prompts)"):
        read_prompt_file(path)


def test_unknown_format_names_the_extension_and_the_fix(tmp_path):
    path = write(tmp_path / "prompts.xlsx", "whatever")
    with pytest.raises(
        PromptFileError, match=r"prompts\.xlsx.*unknown prompt-file format.*'\.xlsx'.*format"
    ):
        read_prompt_file(path)


def test_unreadable_file_is_an_error_naming_it(tmp_path):
    binary = tmp_path / "latin1.txt"
    binary.write_bytes(b"caf\xe9 au lait\n")
    with pytest.raises(PromptFileError, match="latin1.txt.*not UTF-8"):
        read_prompt_file(binary)
    if os.geteuid() != 0:  # root reads anything
        locked = write(tmp_path / "locked.txt", "a\n")
        locked.chmod(0)
        with pytest.raises(PromptFileError, match="cannot be read"):
            read_prompt_file(locked)
    with pytest.raises(PromptFileError, match="not a file"):
        read_prompt_file(tmp_path)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.jsonl", '{"prompt": "a"}\n{oops\n', "line 2 is not valid JSON"),
        ("bad.jsonl", '{"text": "a"}\n', "line 1 has no prompt"),
        ("bad.json", "[1, 2]", "entry 0 must be an object"),
        ("bad.json", '{"prompt": "a"', "is not valid JSON"),
        ("bad.csv", "text\nhello\n", "needs a 'prompt' or 'caption' column"),
        (
            "bad.jsonl",
            '{"prompt": "a", "labels": ["plasma"]}\n',
            "unknown categories \\['plasma'\\]",
        ),
        ("bad.jsonl", '{"prompt": "a", "seed": "x1"}\n', "'seed' must be an integer"),
    ],
)
def test_bad_records_name_the_row(tmp_path, name, text, message):
    with pytest.raises(PromptFileError, match=message):
        read_prompt_file(write(tmp_path / name, text))


def test_datamodule_raises_in_setup_before_any_dataloader(tmp_path):
    dm = PromptDataModule(prompt_file=str(write(tmp_path / "empty.txt", "")))
    with pytest.raises(PromptFileError, match="empty.txt"):
        dm.setup("predict")
    with pytest.raises(ValueError, match="exactly one of prompt_file"):
        PromptDataModule()


# --------------------------------------------------------------------- items, seeds
def test_items_seeds_are_base_plus_index_unless_the_prompt_has_one(tmp_path):
    path = write(
        tmp_path / "p.jsonl", '{"prompt": "a"}\n{"prompt": "b", "seed": 100}\n{"prompt": "c"}\n'
    )
    items = build_items(read_prompt_file(path), videos_per_prompt=2, seed=10)
    assert [(it.record.prompt, it.sample, it.seed) for it in items] == [
        ("a", 0, 10),
        ("a", 1, 11),
        ("b", 0, 100),
        ("b", 1, 101),
        ("c", 0, 14),
        ("c", 1, 15),
    ]
    assert len({it.seed for it in items}) == len(items)


# ----------------------------------------------------------------- the per-rank split
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("num_items", [0, 1, 3, 7, 10])
def test_shards_cover_every_item_once(world_size, num_items):
    shares = [shard_indices(num_items, rank, world_size) for rank in range(world_size)]
    flat = [i for share in shares for i in share]
    assert sorted(flat) == list(range(num_items))  # no gaps, no duplicates
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1


def test_shard_arguments_are_checked():
    with pytest.raises(ValueError, match="rank"):
        shard_indices(5, 2, 2)
    with pytest.raises(ValueError, match="world_size"):
        shard_indices(5, 0, 0)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_each_ranks_dataloader_gets_its_own_share_minus_completed_items(world_size):
    done = {(1, 0), (4, 1)}
    seen = []
    for rank in range(world_size):
        dm = PromptDataModule(
            prompts=[f"prompt {i}" for i in range(5)], videos_per_prompt=2, batch_size=2
        )
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=world_size)
        dm.setup("predict")
        dm.skip = lambda item: item.key in done
        loader = dm.predict_dataloader()
        assert isinstance(loader.sampler, RankShardSampler)
        seen += [item.key for batch in loader for item in batch]
    expected = {(i, k) for i in range(5) for k in range(2)} - done
    assert sorted(seen) == sorted(expected)


def test_rank_sampler_is_a_distributed_sampler_lightning_leaves_alone():
    from torch.utils.data.distributed import DistributedSampler

    dataset = PromptItemDataset(build_items(read_records(), videos_per_prompt=1))
    sampler = RankShardSampler(dataset, rank=1, world_size=2)
    assert isinstance(sampler, DistributedSampler)
    assert list(sampler) == [1] and len(sampler) == 1


def read_records():
    from pila.generation.records import PromptRecord

    return [PromptRecord(index=i, prompt=p) for i, p in enumerate(["a", "b", "c"])]


def test_inline_prompts_pair_with_an_augmented_file_too(tmp_path):
    aug = write(tmp_path / "aug.txt", "A steel spring bounces up and down.\n")
    dm = PromptDataModule(prompts=["A spring oscillates."], augmented_file=str(aug))
    dm.setup("predict")
    assert (dm.records[0].prompt, dm.records[0].evaluator_caption) == (
        "A steel spring bounces up and down.",
        "A spring oscillates.",
    )
    with pytest.raises(
        PromptFileError, match=r"aug\.txt' has 1 prompts but the inline prompts list has 2"
    ):
        PromptDataModule(prompts=["a", "b"], augmented_file=str(aug)).setup("predict")


def test_the_evaluators_text_is_kept_as_written_while_the_prompt_is_cleaned(tmp_path):
    """VBench-2.0 names videos by ``prompt[:180]`` of its own lines and VideoPhy's evaluator
    matches the CSV caption: both are the source text byte for byte, spaces included."""
    raw = "A ball  falls,   then bounces "
    lines = tmp_path / "Mechanics.txt"
    lines.write_text(f"{raw}\nA clean prompt\n", encoding="utf-8")
    first, second = read_prompt_file(lines, "vbench2")
    assert first.prompt == "A ball falls, then bounces" and first.evaluator_caption == raw
    assert second.caption is None and second.evaluator_caption == "A clean prompt"
    table = tmp_path / "videophy.csv"
    table.write_text(f'caption\n"{raw}"\n', encoding="utf-8")
    (row,) = read_prompt_file(table, "videophy")
    assert row.prompt == "A ball falls, then bounces" and row.evaluator_caption == raw
