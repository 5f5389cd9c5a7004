"""``pila prepare`` on several processes.

The same shards as one process, the launchers' ranks, resume after a kill.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from data_helpers import CLIP, prepare_config

from pila.datamodules.cache import CachedClips, read_manifest
from pila.datamodules.prepare import DONE_SUFFIX, Ranks, prepare_cache

SUBPROCESS_ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}


def _shards(cache: Path) -> dict[str, tuple[str, int, int]]:
    """file → (sha256, bytes, clips) of every shard the manifest lists."""
    return {
        e["file"]: (e["sha256"], e["bytes"], e["num_clips"]) for e in read_manifest(cache)["shards"]
    }


def _cli_args(wisa_fixture, cache: Path, *extra: str) -> list[str]:
    return [
        "prepare",
        "--annotations",
        str(wisa_fixture["annotations"]),
        "--videos",
        str(wisa_fixture["videos"]),
        "--out",
        str(cache),
        "--shard-size",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--storage-dtype",
        "float32",
        "--num-frames",
        str(CLIP.num_frames),
        "--fps",
        str(CLIP.fps),
        "--height",
        str(CLIP.height),
        "--width",
        str(CLIP.width),
        *extra,
    ]


def test_two_ranks_build_the_shards_of_one_process_byte_for_byte(prepared, wisa_fixture, tmp_path):
    _, single, reference = prepared
    cache = tmp_path / "cache"
    config = prepare_config(wisa_fixture, cache)
    num_shards = read_manifest(reference)["num_shards"]
    assert num_shards >= 3  # both ranks own shards

    written: list[int] = []
    other = prepare_cache(
        config, ranks=Ranks(1, 2, 1), on_shard_written=lambda k, e: written.append(k)
    )
    assert written == list(range(1, num_shards, 2)) and other.shards_written == len(written)
    assert sorted(p.name for p in cache.glob("shard-*.safetensors")) == [
        f"shard-{k:05d}.safetensors" for k in written
    ]
    assert len(list(cache.glob(f"*{DONE_SUFFIX}"))) == len(written)
    assert read_manifest(cache) is None  # rank 1 never writes the manifest

    summary = prepare_cache(
        config, ranks=Ranks(0, 2, 0), on_shard_written=lambda k, e: written.append(k)
    )
    assert sorted(written) == list(range(num_shards))
    assert _shards(cache) == _shards(reference)
    manifest = read_manifest(cache)
    assert (
        manifest["complete"]
        and manifest["latent_shape"] == read_manifest(reference)["latent_shape"]
    )
    assert (summary.num_clips, summary.rejected, summary.categories) == (
        single.num_clips,
        single.rejected,
        single.categories,
    )
    assert not list(cache.glob(f"*{DONE_SUFFIX}"))  # the manifest lists every shard now
    assert (cache / "rejected.jsonl").read_bytes() == (reference / "rejected.jsonl").read_bytes()
    assert len(CachedClips(cache)) == single.num_clips


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, Ranks(0, 1, 0)),
        ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"}, Ranks(3, 8, 3)),
        (
            {
                "RANK": "9",
                "WORLD_SIZE": "16",
                "LOCAL_RANK": "1",
                "SLURM_PROCID": "0",
                "SLURM_NTASKS": "1",
            },
            Ranks(9, 16, 1),
        ),
        ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}, Ranks(5, 8, 1)),
    ],
)
def test_ranks_come_from_torchrun_then_srun(environ, expected):
    assert Ranks.from_environment(environ) == expected
    assert [k for k in range(10) if expected.owns(k)] == list(
        range(expected.rank, 10, expected.world_size)
    )


def test_bad_ranks_are_refused():
    with pytest.raises(ValueError, match="rank 2, world size 2"):
        Ranks.from_environment({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="RANK='x'"):
        Ranks.from_environment({"RANK": "x", "WORLD_SIZE": "2"})


KILL_RANK_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pila.datamodules.clips import ClipConfig
    from pila.datamodules.prepare import PrepareConfig, Ranks, prepare_cache

    config = PrepareConfig(annotations=sys.argv[1], videos=sys.argv[2], out=sys.argv[3],
                           shard_size=4, workers=0, device="cpu", storage_dtype="float32",
                           clip=ClipConfig(num_frames=17, height=32, width=48))

    def die(index, entry):
        os.kill(os.getpid(), signal.SIGKILL)  # a real kill: nothing is flushed or cleaned up

    prepare_cache(config, ranks=Ranks(int(sys.argv[4]), 2, 0), on_shard_written=die)
    """
)


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_under_torchrun_variables(
    prepared, wisa_fixture, tmp_path
):
    """Both ranks are killed after their first shard; two processes started with torchrun's
    variables (``python -m pila prepare``) finish the cache without redoing those shards."""
    _, _, reference = prepared
    cache = tmp_path / "cache"
    script = tmp_path / "kill.py"
    script.write_text(KILL_RANK_SCRIPT)
    common = [str(wisa_fixture["annotations"]), str(wisa_fixture["videos"]), str(cache)]
    killed = [
        subprocess.Popen(
            [sys.executable, str(script), *common, str(rank)],
            env=SUBPROCESS_ENV,
            stderr=subprocess.PIPE,
        )
        for rank in (0, 1)
    ]
    for process in killed:
        _, err = process.communicate(timeout=300)
        assert process.returncode == -9, err.decode()[-2000:]
    first = {k: cache / f"shard-{k:05d}.safetensors" for k in (0, 1)}
    before = {k: (p.stat().st_ino, p.stat().st_mtime_ns) for k, p in first.items()}
    assert not read_manifest(cache)["complete"]

    ranks = [
        subprocess.Popen(
            [sys.executable, "-m", "pila", *_cli_args(wisa_fixture, cache)],
            env={**SUBPROCESS_ENV, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)},
            stderr=subprocess.PIPE,
        )
        for rank in (0, 1)
    ]
    for process in ranks:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-2000:]
    assert {k: (p.stat().st_ino, p.stat().st_mtime_ns) for k, p in first.items()} == before
    assert read_manifest(cache)["complete"] and _shards(cache) == _shards(reference)


def test_the_cache_does_not_depend_on_the_threads_a_process_starts_with(
    prepared, wisa_fixture, tiny_backbone, tmp_path
):
    """``prepared`` was built by a process with one torch thread, this one has two; the VAE's
    sums depend on the thread count (``encode_threads=2`` gives other shards), so the caches
    match byte for byte only because encoding runs with ``encode_threads`` threads."""
    _, _, reference = prepared
    torch.set_num_threads(2)  # restored by one_torch_thread
    prepare_cache(prepare_config(wisa_fixture, tmp_path / "one"), backbone=tiny_backbone)
    assert torch.get_num_threads() == 2  # restored after encoding
    assert _shards(tmp_path / "one") == _shards(reference)
    prepare_cache(
        prepare_config(wisa_fixture, tmp_path / "two", encode_threads=2), backbone=tiny_backbone
    )
    assert read_manifest(tmp_path / "two")["encode_threads"] == 2
    assert _shards(tmp_path / "two") != _shards(reference)  # the count matters


def _same_cache(cache: Path, reference: Path) -> None:
    """Same shards, rejections and relabeled annotation; the same manifest but for the command
    (--out, --workers, --num-processes)."""
    assert _shards(cache) == _shards(reference)
    for name in ("rejected.jsonl", "annotations.relabeled.json"):
        assert (cache / name).read_bytes() == (reference / name).read_bytes(), name
    ours, theirs = read_manifest(cache), read_manifest(reference)
    assert str(cache) in ours.pop("command") and str(reference) in theirs.pop("command")
    assert ours == theirs


@pytest.mark.slow
def test_torchrun_and_num_processes_build_the_cache_of_one_process(
    prepared, wisa_fixture, tmp_path
):
    """torchrun starts each rank with one thread (OMP_NUM_THREADS=1), ``--num-processes``
    with torch's default (one per core); both give the one-process cache."""
    _, _, reference = prepared
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
    ]
    for launcher, extra in ((torchrun, ()), ([sys.executable], ("--num-processes", "2"))):
        cache = tmp_path / ("spawned" if extra else "torchrun")
        result = subprocess.run(
            [*launcher, "-m", "pila", *_cli_args(wisa_fixture, cache, *extra)],
            env={k: v for k, v in SUBPROCESS_ENV.items() if k != "OMP_NUM_THREADS"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        manifest = read_manifest(cache)
        assert manifest["complete"] and manifest["encode_threads"] == 1
        if extra:
            assert "[rank 1]" in result.stderr and "--num-processes 2" in manifest["command"]
        _same_cache(cache, reference)


def test_a_failing_rank_stops_the_run_with_a_message(wisa_fixture, tmp_path, caplog):
    from pila.datamodules.prepare import main

    # every rank finds no videos folder: each exits 2, and so does the command
    args = _cli_args(wisa_fixture, tmp_path / "cache", "--num-processes", "2")
    args[args.index("--videos") + 1] = str(tmp_path / "no-such-folder")
    assert main(args[1:]) == 2
    assert "run the same command again to resume" in caplog.text
