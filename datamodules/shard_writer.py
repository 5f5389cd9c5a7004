"""Decode, encode and write the shards of one ``pila prepare`` rank.

Clips are decoded and their flow computed in DataLoader workers; the frozen VAE and text
encoder (:func:`load_encoders`, on the rank's device) run over batches in this process
(:func:`encode_shards`) with a fixed number of torch threads (:func:`torch_threads`), so
the bytes of a shard never depend on the launcher, the number of processes or the
machine's cores.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pila.categories import labels_to_multihot

from .cache import shard_name, write_manifest, write_shard
from .decoded import DecodedClips, encode_clips, keep_item, worker_init, workers_start
from .prepare_config import PrepareConfig
from .ranks import Ranks, resolve_device, write_marker
from .records import WisaRecord
from .sources import VideoIndex


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op torch threads (restored after).

    The CPU kernels of convolutions and matmuls split their reductions by thread count, so
    the same inputs give results that differ in the last bits under another count: torchrun
    starts each process with one thread (OMP_NUM_THREADS=1), ``--num-processes`` and a plain
    run with as many as there are cores.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_encoders(config: PrepareConfig, backbone: Any | None, ranks: Ranks) -> Any:
    """The backbone's VAE and text encoder on this rank's device (loaded unless given)."""
    device = resolve_device(config.device, ranks.local_rank)
    if backbone is not None:
        backbone.to(device)
        return backbone
    from pila.backbone import WanBackbone
    from pila.backbone.wan import ENCODING_COMPONENTS

    return WanBackbone.from_pretrained(
        config.backbone, dtype=config.dtype, device=device, components=ENCODING_COMPONENTS
    )


def _cached_clip(record: WisaRecord, item: dict[str, Any], encoded: dict[str, Any], i: int) -> dict:
    """The tensors and metadata of clip ``i`` of an encoded batch, as a shard stores them."""
    mask = encoded["prompt_mask"][i]  # (L,)
    return {
        "latents": encoded["latents"][i],
        "flow": item["flow"],
        "prompt_embeds": encoded["prompt_embeds"][i][mask],  # (L_i, D)
        "pooled": encoded["pooled"][i],
        "pooled_refined": encoded["pooled_refined"][i],
        "labels": labels_to_multihot(record.labels),
        "id": record.id,
        "video_name": record.video_name,
        "prompt": record.captions,
        "description": record.description,
        "label_names": list(record.labels),
    }


def encode_shards(
    config: PrepareConfig,
    records: Sequence[WisaRecord],
    videos: VideoIndex,
    backbone: Any,
    pending: Sequence[int],
    manifest: dict[str, Any],
    key: str,
    ranks: Ranks,
    on_shard_written: Callable[[int, dict[str, Any]], None] | None = None,
) -> int:
    """Decode, encode and write the ``pending`` shards; returns how many were written.

    Each shard gets its completion marker (and, on one process, its manifest entry) as soon
    as it is on disk, then ``on_shard_written(index, entry)`` is called.
    """
    out, n = Path(config.out), config.shard_size
    positions = [p for k in pending for p in range(k * n, min((k + 1) * n, len(records)))]
    dataset = DecodedClips(
        [records[p] for p in positions], videos, config.clip, config.flow,
        backbone.vae_scale_factor_temporal, backbone.vae_scale_factor_spatial,
    )  # fmt: skip
    if config.workers:
        workers_start()
    loader = DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=config.workers, collate_fn=keep_item,
        worker_init_fn=worker_init if config.workers else None,
        prefetch_factor=2 if config.workers else None,
    )  # fmt: skip
    remaining = Counter(p // n for p in positions)  # records left per shard
    decoded: dict[int, list[dict[str, Any]]] = {k: [] for k in pending}  # awaiting encoding
    encoded: dict[int, list[dict[str, Any]]] = {k: [] for k in pending}
    rejected: dict[int, list[dict[str, Any]]] = {k: [] for k in pending}

    def encode(shard: int) -> None:
        batch, decoded[shard] = decoded[shard], []
        if batch:
            batch_records = [records[item["position"]] for item in batch]
            result = encode_clips(
                backbone, torch.stack([item["video"] for item in batch]),
                [r.captions for r in batch_records], config.max_sequence_length,
                [r.condition_text for r in batch_records],
            )  # fmt: skip
            encoded[shard] += [
                _cached_clip(r, item, result, i)
                for i, (r, item) in enumerate(zip(batch_records, batch, strict=True))
            ]

    written = num_rejected = 0
    with tqdm(
        total=len(positions), unit="clip", desc="prepare", dynamic_ncols=True, smoothing=0.1
    ) as progress:
        for item in loader:
            position = positions[item["position"]]
            shard = position // n
            if "rejection" in item:
                rejected[shard].append(item["rejection"])
                num_rejected += 1
            else:
                decoded[shard].append({**item, "position": position})
                if len(decoded[shard]) >= config.encode_batch_size:
                    encode(shard)
            remaining[shard] -= 1
            progress.update(1)
            progress.set_postfix(rejected=num_rejected, refresh=False)
            if remaining[shard]:
                continue
            encode(shard)
            entry = write_shard(
                out / shard_name(shard),
                encoded.pop(shard),
                rejected.pop(shard),
                config.storage_dtype,
            )
            entry["index"] = shard
            write_marker(
                out,
                shard,
                key,
                entry,
                latent_shape=manifest["latent_shape"],
                text_dim=manifest["text_dim"],
            )
            manifest["shards"] = sorted([*manifest["shards"], entry], key=lambda e: e["index"])
            if ranks.world_size == 1:
                write_manifest(out, manifest)
            written += 1
            if on_shard_written is not None:
                on_shard_written(shard, entry)
    return written
