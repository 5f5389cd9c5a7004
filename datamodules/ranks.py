"""The processes of a multi-process ``pila prepare``: ranks, shard ownership, completion markers.

Shard k is built by rank ``k mod N``. Every rank marks each shard it finishes with
``shard-k.done.json`` (the shard's manifest entry and the run's key); rank 0 waits for every
marker, then writes the manifest. ``--num-processes N`` spawns the ranks on this machine;
under ``torchrun`` or ``srun`` the launcher's variables name them (:meth:`Ranks.from_environment`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pila.io import read_json, write_json_atomic

from .cache import shard_name

log = logging.getLogger(__name__)

DONE_SUFFIX = ".done.json"
"""Suffix of a shard's completion marker, ``shard-k.done.json``: the shard's manifest entry and
the key of the run that wrote it. Every rank writes one per finished shard; rank 0 turns them
into the manifest and removes them; a resumed run keeps the shards whose markers hold its key."""
POLL_SECONDS = 1.0
"""How often rank 0 looks for the other ranks' completion markers (ours)."""
LAUNCHER_VARIABLES = (
    ("RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
)
"""(rank, world size, local rank) variables of torchrun, then of srun."""


@dataclass(frozen=True)
class Ranks:
    """Which process of a multi-process ``pila prepare`` this is.

    Shard k is built by rank ``k mod world_size``; rank 0 writes the manifest once every
    shard is done.

    Attributes:
        rank: this process's index, 0 … world_size − 1.
        world_size: processes building the cache together.
        local_rank: its index on this machine (picks its GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ValueError(
                f"bad process ranks: rank {self.rank}, world size {self.world_size}, "
                f"local rank {self.local_rank}"
            )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Ranks:
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK, else srun's SLURM_PROCID / SLURM_NTASKS /
        SLURM_LOCALID, else one process."""
        env = os.environ if environ is None else environ
        for rank, world, local in LAUNCHER_VARIABLES:
            if rank in env and world in env:
                try:
                    return cls(int(env[rank]), int(env[world]), int(env.get(local, env[rank])))
                except ValueError as err:
                    raise ValueError(
                        f"{rank}={env[rank]!r}, {world}={env[world]!r}: {err}"
                    ) from err
        return cls()

    def owns(self, shard: int) -> bool:
        """Whether this rank builds shard ``shard``."""
        return shard % self.world_size == self.rank


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without CUDA is a ValueError.

    A CUDA device is ``cuda:local_rank`` (modulo the GPUs this process sees).
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was asked for but torch sees no CUDA device; use --device cpu or auto"
        )
    if device == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(device)


def shard_index(path: Path) -> int | None:
    """The k of ``shard-k.…`` or of its temporary ``.shard-k.…`` (None for other names)."""
    match = re.match(r"\.?shard-(\d+)\.", path.name)
    return int(match.group(1)) if match else None


# ------------------------------------------------------------------ completion markers
def run_key(expected: dict[str, Any]) -> str:
    """What a completion marker must hold to count for this run: a hash of the cache's identity."""
    blob = json.dumps(expected, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def marker_path(out: Path, shard: int) -> Path:
    return out / (shard_name(shard).removesuffix(".safetensors") + DONE_SUFFIX)


def read_marker(out: Path, shard: int, key: str) -> dict[str, Any] | None:
    """The completion marker of ``shard`` when it belongs to this run (``key``), else None."""
    try:
        marker = read_json(marker_path(out, shard))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(marker, dict) or marker.get("key") != key:
        return None
    return marker if marker.get("entry", {}).get("index") == shard else None


def write_marker(out: Path, shard: int, key: str, entry: dict[str, Any], **extra: Any) -> None:
    write_json_atomic(marker_path(out, shard), {"key": key, "entry": entry, **extra})


def gather_shards(
    out: Path, manifest: dict[str, Any], key: str, poll_seconds: float = POLL_SECONDS
) -> None:
    """Rank 0: wait until every shard has this run's completion marker; list them all in
    ``manifest``."""
    num_shards = manifest["num_shards"]
    entries: dict[int, dict[str, Any]] = {}
    last_report = time.monotonic()
    while True:
        for k in range(num_shards):
            marker = None if k in entries else read_marker(out, k, key)
            if marker is not None and (out / marker["entry"]["file"]).is_file():
                entries[k] = marker["entry"]
                manifest.update({f: marker[f] for f in ("latent_shape", "text_dim") if f in marker})
        missing = [k for k in range(num_shards) if k not in entries]
        if not missing:
            break
        if time.monotonic() - last_report > 60:
            log.info(
                "waiting for %d shards from the other ranks (first: %s)",
                len(missing), shard_name(missing[0]),
            )  # fmt: skip
            last_report = time.monotonic()
        time.sleep(poll_seconds)
    manifest["shards"] = [entries[k] for k in range(num_shards)]


# ------------------------------------------------------------------ processes on this machine
def _spawned(run: Callable[[Any, Ranks, str], int], config: Any, ranks: Ranks, level: str) -> None:
    raise SystemExit(run(config, ranks, level))


def spawn_ranks(
    run: Callable[[Any, Ranks, str], int], config: Any, world: int, log_level: str = "INFO"
) -> int:
    """Run ``run(config, ranks, log_level)`` as ``world`` processes on this machine.

    Returns the first non-zero exit status (the other processes are then stopped), else 0.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_spawned,
            args=(run, config, Ranks(rank, world, rank), log_level),
            name=f"pila-prepare-{rank}",
        )  # fmt: skip
        for rank in range(world)
    ]
    for process in processes:
        process.start()
    status = 0
    try:
        while any(p.is_alive() for p in processes):
            failed = [p for p in processes if p.exitcode not in (None, 0)]
            if failed:
                status = failed[0].exitcode
                break
            time.sleep(0.2)
        status = status or next((p.exitcode for p in processes if p.exitcode), 0)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
    if status:
        log.error(
            "a pila prepare process failed (exit status %s); run the same command again to resume",
            status,
        )
        return 2 if status > 0 else 1
    return 0
