"""The prediction writer without a generator: claims, leftovers of killed runs, sample counts.

Runs are simulated with the writer's own hooks (``setup`` → ``on_predict_batch_start`` →
``write_result``) on frames made here, so each case takes milliseconds; the two-process
case starts real processes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pila.generation.benchmarks.vbench2 import VBench2Layout
from pila.generation.benchmarks.videophy import VideoPhy2Layout
from pila.generation.claims import ClaimBook, claim_path, read_claim
from pila.generation.predict import PredictionResult
from pila.generation.prompts import PromptDataModule
from pila.generation.sampling import GeneratedVideo
from pila.generation.writer import VideoPredictionWriter

MODULE = SimpleNamespace()  # no generation_settings / adapter_info: the writer records None
FRAMES = np.zeros((2, 8, 8, 3), dtype=np.float32)


def vbench2_folder(tmp_path: Path, **dims: list[str]) -> Path:
    folder = tmp_path / "prompts"
    folder.mkdir(exist_ok=True)
    for dim, prompts in dims.items():
        (folder / f"{dim}.txt").write_text("".join(p + "\n" for p in prompts))
    return folder


def start(writer: VideoPredictionWriter, datamodule: PromptDataModule) -> list:
    """Set the writer up as Lightning does; the items this run would generate, in order."""
    writer.setup(SimpleNamespace(datamodule=datamodule), MODULE, "predict")
    return [item for item in datamodule.items if not datamodule.skip(item)]


def generate(writer: VideoPredictionWriter, items: list) -> list:
    """One predict batch: claim, 'generate', write; the items this writer wrote."""
    batch = list(items)
    writer.on_predict_batch_start(None, MODULE, batch, 0)
    for item in batch:
        video = GeneratedVideo(frames=FRAMES.copy(), prompt=item.record.prompt, seed=item.seed)
        writer.write_result(PredictionResult(item=item, video=video), MODULE)
    return batch


def datamodule(tmp_path: Path, prompts: list[str], **kwargs) -> PromptDataModule:
    return PromptDataModule(prompts=prompts, **kwargs)


# ------------------------------------------------------------------ concurrent runs
def test_two_runs_into_one_folder_split_the_work_without_duplicates_or_gaps(tmp_path):
    prompts = [f"prompt number {i}" for i in range(6)]
    out = tmp_path / "out"
    a, b = VideoPredictionWriter(str(out)), VideoPredictionWriter(str(out))
    items_a = start(a, datamodule(tmp_path, prompts, videos_per_prompt=2))
    items_b = start(b, datamodule(tmp_path, prompts, videos_per_prompt=2))
    assert len(items_a) == len(items_b) == 12  # both planned everything: nothing was done yet

    # Interleave: each run claims its next item before the other writes it; both start
    # with the first item, then B works from the end.
    written = {"a": [], "b": []}
    pending_a, pending_b = list(items_a), items_b[:1] + list(reversed(items_b[1:]))
    while pending_a or pending_b:
        claimed_a = [pending_a.pop(0)] if pending_a else []
        claimed_b = [pending_b.pop(0)] if pending_b else []
        batch_a, batch_b = list(claimed_a), list(claimed_b)
        a.on_predict_batch_start(None, MODULE, batch_a, 0)
        b.on_predict_batch_start(None, MODULE, batch_b, 0)
        for writer, batch, name in ((a, batch_a, "a"), (b, batch_b, "b")):
            for item in batch:
                video = GeneratedVideo(
                    frames=FRAMES.copy(), prompt=item.record.prompt, seed=item.seed
                )
                writer.write_result(PredictionResult(item=item, video=video), MODULE)
                written[name].append(item.key)
    keys_a, keys_b = set(written["a"]), set(written["b"])
    assert not keys_a & keys_b  # nothing generated twice
    assert keys_a | keys_b == {item.key for item in items_a}  # nothing missing
    assert len(written["a"]) + len(written["b"]) == 12 and keys_a and keys_b
    assert b.held_elsewhere >= 1  # B found the first item held by A
    assert not list(out.rglob("*.claim"))  # every claim released
    assert len(list(out.glob("*.mp4"))) == len(list(out.glob("*.json"))) == 12


SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from types import SimpleNamespace
    import numpy as np
    from pila.generation.predict import PredictionResult
    from pila.generation.prompts import PromptDataModule
    from pila.generation.sampling import GeneratedVideo
    from pila.generation.writer import VideoPredictionWriter
    from pila.generation.benchmarks.phygenbench import PhyGenBenchLayout

    out, go, ready = sys.argv[1], sys.argv[2], sys.argv[3]
    writer = VideoPredictionWriter(out, layout=PhyGenBenchLayout())
    dm = PromptDataModule(prompts=[f"prompt {i}" for i in range(10)])
    writer.setup(SimpleNamespace(datamodule=dm), SimpleNamespace(), "predict")
    open(ready, "w").close()
    while not __import__("os").path.exists(go):
        time.sleep(0.01)
    done = []
    for item in dm.items:
        batch = [item]
        writer.on_predict_batch_start(None, SimpleNamespace(), batch, 0)
        for kept in batch:
            time.sleep(0.05)  # 'generation'
            video = GeneratedVideo(
                frames=np.zeros((2, 8, 8, 3), np.float32), prompt=kept.record.prompt, seed=kept.seed
            )
            writer.write_result(PredictionResult(item=kept, video=video), SimpleNamespace())
            done.append(kept.record.index)
    print(json.dumps(done))
    """
)


@pytest.mark.slow
def test_two_processes_split_the_work(tmp_path):
    out, go = tmp_path / "out", tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(out), str(go), str(r)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for r in ready
    ]
    deadline = time.time() + 180
    while not all(r.exists() for r in ready) and time.time() < deadline:
        time.sleep(0.05)
    go.touch()  # both runs have planned everything; they start together
    done = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0
        done.append(json.loads(stdout.strip().splitlines()[-1]))
    assert sorted(done[0] + done[1]) == list(range(10))  # each video once, none missing
    assert done[0] and done[1]  # and both runs did some
    assert sorted(p.name for p in (out / "pila").glob("*.mp4")) == sorted(
        f"output_video_{i + 1}.mp4" for i in range(10)
    )
    assert not list(out.rglob("*.claim"))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_claim(path: Path, **fields) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"token": "someone-else", **fields}))


@pytest.mark.parametrize(
    ("claim", "taken_over"),
    [
        (
            {"host": socket.gethostname(), "pid": "dead", "time": "now"},
            True,
        ),  # crashed run on this host
        (
            {"host": socket.gethostname(), "pid": os.getpid(), "time": "now"},
            False,
        ),  # a live run here
        ({"host": socket.gethostname(), "pid": os.getpid(), "time": "old"}, True),  # a reused pid
        ({"host": "another-host", "pid": 1, "time": "old"}, True),  # another host, past the timeout
        ({"host": "another-host", "pid": 1, "time": "now"}, False),  # another host, recent
    ],
)
def test_a_stale_claim_is_taken_over_and_a_live_one_is_respected(tmp_path, claim, taken_over):
    out = tmp_path / "out"
    writer = VideoPredictionWriter(str(out), claim_timeout_s=600.0)
    (item,) = start(writer, datamodule(tmp_path, ["A ball rolls."]))
    path = claim_path(writer.layout.paths(item).sidecar)
    now = time.time()
    fields = {
        **claim,
        "pid": dead_pid() if claim["pid"] == "dead" else claim["pid"],
        "time": now - 3600 if claim["time"] == "old" else now,
    }
    write_claim(path, **fields)
    wrote = generate(writer, [item])
    assert (wrote == [item]) is taken_over
    assert writer.layout.is_complete(item) is taken_over
    if taken_over:
        assert not path.exists()  # released after the sidecar
    else:
        assert read_claim(path)["token"] == "someone-else"


def test_an_empty_claim_is_stale_only_after_a_grace_period(tmp_path):
    book = ClaimBook()
    path = tmp_path / "x.json.claim"
    path.write_text("")  # a run killed between creating the claim and filling it
    assert not book.is_stale(path)
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert book.is_stale(path)
    assert book.acquire(path) and read_claim(path)["pid"] == os.getpid()
    assert not ClaimBook().acquire(path)  # a second run in this live process sees it held


def test_a_run_whose_claim_was_taken_over_does_not_write(tmp_path):
    out = tmp_path / "out"
    writer = VideoPredictionWriter(str(out))
    (item,) = start(writer, datamodule(tmp_path, ["A ball rolls."]))
    batch = [item]
    writer.on_predict_batch_start(None, MODULE, batch, 0)
    path = claim_path(writer.layout.paths(item).sidecar)
    write_claim(path, host="another-host", pid=1, time=time.time())  # another run took it over
    video = GeneratedVideo(frames=FRAMES.copy(), prompt=item.record.prompt, seed=item.seed)
    writer.write_result(PredictionResult(item=item, video=video), MODULE)
    assert not writer.layout.paths(item).video.exists() and writer.written == 0


# ------------------------------------------------------------------ leftovers of killed runs
def test_stale_temporaries_of_planned_files_are_removed_on_start(tmp_path):
    out = tmp_path / "out"
    folder = vbench2_folder(tmp_path, Mechanics=["A ball rolls.", "A spring stretches."])
    dm = PromptDataModule(prompt_file=str(folder), format="vbench2", videos_per_prompt=3)
    first = VideoPredictionWriter(str(out), layout=VBench2Layout())
    items = start(first, dm)
    paths = first.layout.paths(items[0])
    video, sidecar = paths.video, paths.sidecar
    busy = first.layout.paths(items[1])
    video.parent.mkdir(parents=True)
    sidecar.parent.mkdir(parents=True)
    killed = [
        video.parent / f".{video.name}.0a1b2c3d.mp4",  # pila.io.atomic_path's temporary names
        sidecar.parent / f".{sidecar.name}.deadbeef.json",
    ]
    live = busy.video.parent / f".{busy.video.name}.12345678.mp4"  # another live run is writing it
    write_claim(
        claim_path(busy.sidecar), host=socket.gethostname(), pid=os.getpid(), time=time.time()
    )
    foreign = [
        video.parent / ".notes.txt",
        video.parent / ".Some other video.mp4.0a1b2c3d.mp4",  # not a file this run writes
        video.parent / f".{video.name}.0a1b2c3d.json",  # the wrong suffix for a video
        video.parent / f".{video.name}.xyz.mp4",
    ]
    for path in [*killed, live, *foreign]:
        path.write_bytes(b"partial")
    dm = PromptDataModule(prompt_file=str(folder), format="vbench2", videos_per_prompt=3)
    start(VideoPredictionWriter(str(out), layout=VBench2Layout()), dm)
    assert [p.exists() for p in killed] == [False, False]
    assert live.exists()
    assert all(p.exists() for p in foreign)


def test_a_temporary_index_is_removed_only_when_old(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old, young = (
        out / ".videophy2_input.csv.0a1b2c3d.csv",
        out / ".videophy2_input.csv.1b2c3d4e.csv",
    )
    old.write_text("caption")
    young.write_text("caption")
    past = time.time() - 3600
    os.utime(old, (past, past))
    start(VideoPredictionWriter(str(out), layout=VideoPhy2Layout()), datamodule(tmp_path, ["a"]))
    assert not old.exists() and young.exists()


# ------------------------------------------------------------------ VBench-2.0 counts and names
def test_vbench2_defaults_to_the_evaluators_sample_count_per_dimension(tmp_path):
    folder = vbench2_folder(
        tmp_path, Mechanics=["A ball rolls.", "Ice melts."], Diversity=["A city street."]
    )
    dm = PromptDataModule(prompt_file=str(folder), format="vbench2")
    dm.setup("predict")
    dm.videos_per_prompt = None  # unset: the layout decides (see the writer's docstring)
    writer = VideoPredictionWriter(str(tmp_path / "out"), layout=VBench2Layout())
    items = start(writer, dm)
    per_prompt = {}
    for item in items:
        per_prompt[item.record.prompt] = per_prompt.get(item.record.prompt, 0) + 1
    assert per_prompt == {"A city street.": 20, "A ball rolls.": 3, "Ice melts.": 3}
    assert len({item.seed for item in items}) == len(items) == 26
    names = sorted(
        p.video.relative_to(tmp_path / "out").as_posix() for p in writer.layout.planned_paths()
    )
    assert names[:2] == ["Diversity/A city street.-0.mp4", "Diversity/A city street.-1.mp4"]
    assert "Mechanics/Ice melts.-2.mp4" in names


def test_vbench2_warns_when_fewer_videos_than_the_evaluator_reads(tmp_path, caplog):
    folder = vbench2_folder(tmp_path, Mechanics=["A ball rolls."])
    dm = PromptDataModule(prompt_file=str(folder), format="vbench2", videos_per_prompt=1)
    with caplog.at_level(logging.WARNING, logger="pila.generation.writer"):
        items = start(VideoPredictionWriter(str(tmp_path / "out"), layout=VBench2Layout()), dm)
    assert len(items) == 1  # the user's count is honoured
    assert (
        "videos_per_prompt 1 is below the 3 videos per prompt VBench-2.0 reads for Mechanics"
        in caplog.text
    )


def test_a_prompt_the_evaluator_cannot_find_is_in_the_summary_not_on_disk(tmp_path, caplog):
    folder = vbench2_folder(tmp_path, Mechanics=["A ball on a 1/2 inch ramp.", "A ball rolls."])
    dm = PromptDataModule(prompt_file=str(folder), format="vbench2", videos_per_prompt=3)
    writer = VideoPredictionWriter(str(tmp_path / "out"), layout=VBench2Layout())
    with caplog.at_level(logging.WARNING, logger="pila.generation.writer"):
        items = start(writer, dm)
    assert {item.record.prompt for item in items} == {"A ball rolls."}
    assert "prompt 0 gets no video" in caplog.text and "'/'" in caplog.text
    generate(writer, items)
    summary = "\n".join(writer.summary())
    assert (
        "1 prompts got no video" in summary
        and "prompt 0: VBench-2.0 names its videos 'A ball on a 1" in summary
    )
    videos = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.mp4")
    )
    assert videos == [f"Mechanics/A ball rolls.-{k}.mp4" for k in range(3)]


def test_every_sidecar_records_its_prompt_records_labels_also_without_an_adapter(tmp_path):
    """WISA q-answer labels and a ``labels`` column reach the sidecar of a baseline video."""
    from pila.generation.benchmarks import read_prompt_file

    table = tmp_path / "prompts.csv"
    table.write_text('prompt,labels\nA ball bounces.,"collision;rigid_body"\nA calm lake.,\n')
    wisa = tmp_path / "wisa.json"
    record = {
        "en_caption": "Ice melts in a pan.",
        "q0": "no obvious dynamic phenomenon",
        "q1": "melting",
        "q2": "no obvious optical phenomenon",
        "label": "",
    }
    wisa.write_text(json.dumps([record]))
    for path, expected in (
        (table, [["rigid_body", "collision"], None]),
        (wisa, [list(read_prompt_file(wisa)[0].labels)]),
    ):
        out = tmp_path / path.stem
        writer = VideoPredictionWriter(str(out))
        generate(writer, start(writer, PromptDataModule(prompt_file=str(path))))
        metas = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
        assert [m["record"]["labels"] for m in metas] == expected
        assert all(m["labels"] is None and m["adapter"] is None for m in metas)  # no adapter ran
    assert "phase_change" in expected[0]
