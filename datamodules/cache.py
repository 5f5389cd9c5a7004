"""The training cache written by ``pila prepare``: safetensors shards and a manifest.

Legend: C latent channels (16), T latent frames, H, W latent height and width, L_i the
valid text tokens of clip i, D text width.

Layout of a cache folder::

    manifest.json                 format, settings, backbone identity, per-shard sha256
    shard-00000.safetensors       clips 0 … N−1 of the record list (fewer if some were rejected)
    shard-00001.safetensors       …
    rejected.jsonl                one {"video_name", "reason", "detail", "index"} per skipped record
    annotations.relabeled.json    the kept records with their ``pila_labels``

A shard holds, for each of its clips i, the tensors ``{i}.latents`` (C, T, H, W),
``{i}.flow`` (2, T, H, W), ``{i}.prompt_embeds`` (L_i, D) (the valid tokens only),
``{i}.pooled`` (D,) (mean of the caption's token embeddings), ``{i}.pooled_refined``
(D,) (the same for the prompt parser's refined description, which conditions the
adapter; equal to ``pooled`` when the caption is the description) and ``{i}.labels``
(8,) uint8, in the storage dtype; its metadata (a safetensors header field ``"pila"``,
JSON) lists each clip's id, video name, prompt, refined description (if any) and labels,
and the records of the shard's range that were rejected while decoding. Shards written
before ``pooled_refined`` existed read it as ``pooled``.

Shard k always covers records ``[k·N, (k+1)·N)`` of the filtered, relabeled record list,
so a run that was killed resumes by redoing only the shards the manifest does not list.
Shards and the manifest are written to a temporary file and renamed, so a partial shard
is never read. Every shard's sha256 is in the manifest; a shard that fails it raises
:class:`CacheCorruptError` naming the file (delete it and run ``pila prepare`` again).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shlex
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import Dataset

from pila.io import atomic_path, read_json, write_json_atomic

log = logging.getLogger(__name__)

CACHE_FORMAT = "pila-latent-cache"
CACHE_VERSION = 1
MANIFEST_NAME = "manifest.json"
REJECTED_NAME = "rejected.jsonl"
RELABELED_NAME = "annotations.relabeled.json"
METADATA_KEY = "pila"
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class CacheError(RuntimeError):
    """Base class of cache problems."""


class CacheMissingError(CacheError, FileNotFoundError):
    """No finished cache where one was expected."""


class CacheMismatchError(CacheError, ValueError):
    """The cache was built with other settings than the ones asked for."""


class CacheCorruptError(CacheError):
    """One or more shards fail their checksum (or are gone)."""


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return f"shard-{index:05d}.safetensors"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 23) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_shard(
    path: str | os.PathLike,
    clips: Sequence[dict[str, Any]],
    rejected: Sequence[dict[str, Any]],
    storage_dtype: str,
) -> dict[str, Any]:
    """Write one shard atomically.

    Args:
        path: destination ``shard-XXXXX.safetensors``.
        clips: per clip ``latents`` (C, T, H, W), ``flow`` (2, T, H, W), ``prompt_embeds``
            (L_i, D), ``pooled`` (D,), optionally ``pooled_refined`` (D,), ``labels`` (8,),
            and ``id``, ``video_name``, ``prompt``, ``label_names``, optionally ``description``.
        rejected: rejections (JSON dicts) of this shard's records found while decoding.
        storage_dtype: a key of :data:`STORAGE_DTYPES` for the float tensors.

    Returns:
        The manifest entry: ``file``, ``sha256``, ``bytes``, ``num_clips``, ``num_rejected``.
    """
    dtype = STORAGE_DTYPES[storage_dtype]
    tensors: dict[str, Tensor] = {}
    info = []
    for i, clip in enumerate(clips):
        for key in ("latents", "flow", "prompt_embeds", "pooled", "pooled_refined"):
            if key in clip:
                tensors[f"{i}.{key}"] = clip[key].detach().to("cpu", dtype).contiguous()
        refined = tensors.get(f"{i}.pooled_refined")
        if refined is not None and refined.data_ptr() == tensors[f"{i}.pooled"].data_ptr():
            tensors[f"{i}.pooled_refined"] = refined.clone()  # safetensors refuses shared storage
        tensors[f"{i}.labels"] = clip["labels"].detach().to("cpu", torch.uint8).contiguous()
        entry = {
            "id": clip["id"], "video_name": clip["video_name"], "prompt": clip["prompt"],
            "labels": clip["label_names"],
        }  # fmt: skip
        if clip.get("description"):
            entry["description"] = clip["description"]
        info.append(entry)
    shard_info = {"clips": info, "rejected": list(rejected)}
    metadata = {METADATA_KEY: json.dumps(shard_info, ensure_ascii=False)}
    final = Path(path)
    with atomic_path(final) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        entry = {"file": final.name, "sha256": file_sha256(tmp), "bytes": tmp.stat().st_size}
    entry.update(num_clips=len(clips), num_rejected=len(rejected))
    return entry


def read_shard_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``"pila"`` metadata of a shard: ``{"clips": [...], "rejected": [...]}``."""
    with safe_open(str(path), framework="pt") as handle:
        return shard_metadata(handle, path)


def shard_metadata(handle: Any, path: str | os.PathLike) -> dict[str, Any]:
    """The ``"pila"`` metadata of the shard open in ``handle`` (a ``safe_open`` handle of
    ``path``), as :func:`read_shard_metadata` gives it."""
    meta = handle.metadata() or {}
    if METADATA_KEY not in meta:
        raise CacheCorruptError(
            f"{path} has no '{METADATA_KEY}' metadata; delete it and run `pila prepare` again"
        )
    return json.loads(meta[METADATA_KEY])


def read_manifest(cache_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a cache folder, or None when there is none.

    Raises:
        CacheCorruptError: the manifest exists but is not a cache manifest.
    """
    path = Path(cache_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)
    except json.JSONDecodeError as err:
        raise CacheCorruptError(
            f"{path} is not valid JSON ({err}); delete the cache folder and run `pila prepare` "
            "again"
        ) from err
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise CacheCorruptError(f"{path} is not a {CACHE_FORMAT} manifest")
    if manifest.get("version") != CACHE_VERSION:
        raise CacheMismatchError(
            f"{path} has cache version {manifest.get('version')}, this code reads "
            f"{CACHE_VERSION}; run `pila prepare` into a new folder"
        )
    return manifest


def write_manifest(cache_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically."""
    write_json_atomic(Path(cache_dir) / MANIFEST_NAME, manifest)


def check_shard(cache_dir: Path, entry: dict[str, Any]) -> str | None:
    """None when the shard matches its manifest entry, else what is wrong with it."""
    path = cache_dir / entry["file"]
    if not path.is_file():
        return "missing"
    if path.stat().st_size != entry["bytes"]:
        return f"has {path.stat().st_size} bytes, the manifest says {entry['bytes']}"
    if file_sha256(path) != entry["sha256"]:
        return "fails its sha256 checksum"
    return None


def verify_cache(cache_dir: str | os.PathLike, manifest: dict[str, Any], threads: int = 4) -> None:
    """Check every shard against the manifest's size and sha256.

    Raises:
        CacheCorruptError: naming each bad shard file and the fix.
    """
    base = Path(cache_dir)
    entries = manifest["shards"]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        problems = list(pool.map(lambda e: check_shard(base, e), entries))
    bad = [(e["file"], p) for e, p in zip(entries, problems, strict=True) if p is not None]
    if bad:
        listing = "; ".join(f"{base / name} {problem}" for name, problem in bad)
        command = manifest.get("command")
        raise CacheCorruptError(
            f"corrupt cache shard(s): {listing}. Delete the named file(s) and run the same "
            f"`pila prepare` command again: it recomputes only the missing shards"
            + (f" ({command_for_folder(command, base)})" if command else "")
        )


def command_for_folder(command: str, cache_dir: str | os.PathLike) -> str:
    """The recorded ``pila prepare`` command with its ``--out`` set to ``cache_dir``.

    A cache may have been moved or copied since it was built; the advice must name the
    folder that failed, not the one it was first written to.
    """
    words = shlex.split(command)
    folder = str(cache_dir)
    if "--out" in words[:-1]:
        words[words.index("--out") + 1] = folder
    else:
        words += ["--out", folder]
    return " ".join(shlex.quote(w) for w in words)


class CachedClips(Dataset):
    """Clips read from a finished cache, one item per clip.

    Each item is a dict: ``latents`` (C, T, H, W), ``flow`` (2, T, H, W),
    ``prompt_embeds`` (L_i, D), ``prompt_mask`` (L_i,) bool, ``pooled`` (D,),
    ``pooled_refined`` (D,) and ``labels`` (8,), all float32 except the mask, plus
    ``prompt`` and ``id`` strings.
    Shards are memory-mapped and read one clip at a time.

    Args:
        cache_dir: the folder ``pila prepare`` wrote.
        ids: keep only these clip ids (in this order); None keeps every clip.
        verify: check every shard's sha256 first (a full read of the cache).
        manifest: an already-read manifest (saves reading it again).

    Raises:
        CacheMissingError: no manifest, or the cache is unfinished.
        CacheCorruptError: a shard fails its checksum (with ``verify``).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        ids: Sequence[str] | None = None,
        verify: bool = True,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        manifest = manifest if manifest is not None else read_manifest(self.cache_dir)
        if manifest is None or not manifest.get("complete"):
            state = "has no manifest" if manifest is None else "is unfinished"
            raise CacheMissingError(
                f"cache {str(self.cache_dir)!r} {state}; run `pila prepare` to build it"
            )
        if verify:
            verify_cache(self.cache_dir, manifest)
        self.manifest = manifest
        # id → (shard file, slot, video name)
        self._locations: dict[str, tuple[str, int, str]] = {}
        for entry in manifest["shards"]:
            if entry["num_clips"] == 0:
                continue
            path = self.cache_dir / entry["file"]
            if not path.is_file():
                raise CacheCorruptError(
                    f"cache shard {path} is missing; run `pila prepare` again to rebuild it"
                )
            for slot, clip in enumerate(read_shard_metadata(path)["clips"]):
                self._locations[clip["id"]] = (entry["file"], slot, clip["video_name"])
        self._select(list(self._locations) if ids is None else ids)
        self._handles: OrderedDict[str, Any] = OrderedDict()
        self._metadata: dict[str, list[dict[str, Any]]] = {}
        self._keys: dict[str, set[str]] = {}  # tensor names per open shard
        self._warned = False

    def _select(self, ids: Sequence[str]) -> None:
        unknown = [i for i in ids if i not in self._locations]
        if unknown:
            raise KeyError(f"clip ids not in cache {str(self.cache_dir)!r}: {unknown[:5]}")
        self.ids = list(ids)
        self.items = [self._locations[i][:2] for i in self.ids]

    @property
    def video_names(self) -> list[str]:
        """Video name of each item, in item order."""
        return [self._locations[i][2] for i in self.ids]

    def subset(self, ids: Sequence[str]) -> CachedClips:
        """The same cache restricted to ``ids`` (no re-reading, no re-verification)."""
        other = copy.copy(self)
        other._select(ids)
        other._handles, other._metadata, other._keys = OrderedDict(), {}, {}
        return other

    def __len__(self) -> int:
        return len(self.items)

    def _handle(self, name: str):
        handle = self._handles.get(name)
        if handle is None:
            path = self.cache_dir / name
            handle = safe_open(str(path), framework="pt")
            self._metadata[name] = shard_metadata(handle, path)["clips"]
            self._keys[name] = set(handle.keys())
            self._warn_if_descriptions_missing(name)
            self._handles[name] = handle
            while len(self._handles) > 64:
                old, _ = self._handles.popitem(last=False)
                self._metadata.pop(old, None)
                self._keys.pop(old, None)
        else:
            self._handles.move_to_end(name)
        return handle

    def _warn_if_descriptions_missing(self, name: str) -> None:
        """Once per process: an LLM-labeled cache whose shards predate ``pooled_refined``
        conditions training on the captions, not on the parser's descriptions."""
        if self._warned or not self.manifest.get("settings", {}).get("llm_labeler"):
            return
        refined = any(k.endswith(".pooled_refined") for k in self._keys[name])
        if self._metadata[name] and not refined:
            log.warning(
                "cache %s was labeled by an LLM parser but its shards hold no refined "
                "descriptions (written by an older pila prepare): training conditions the "
                "adapter on the captions. Rebuild it with the same `pila prepare` command and "
                "--overwrite to condition on the descriptions, as generation does",
                self.cache_dir,
            )
            self._warned = True

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, slot = self.items[index]
        handle = self._handle(name)
        info = self._metadata[name][slot]
        embeds = handle.get_tensor(f"{slot}.prompt_embeds").float()  # (L_i, D)
        pooled = handle.get_tensor(f"{slot}.pooled").float()  # (D,)
        refined_key = f"{slot}.pooled_refined"
        has_refined = refined_key in self._keys[name]
        refined = handle.get_tensor(refined_key).float() if has_refined else pooled
        return {
            "latents": handle.get_tensor(f"{slot}.latents").float(),  # (C, T, H, W)
            "flow": handle.get_tensor(f"{slot}.flow").float(),  # (2, T, H, W)
            "prompt_embeds": embeds,
            "prompt_mask": torch.ones(embeds.shape[0], dtype=torch.bool),  # (L_i,)
            "pooled": pooled,
            "pooled_refined": refined,  # (D,)
            "labels": handle.get_tensor(f"{slot}.labels").float(),  # (8,)
            "prompt": info["prompt"],
            "id": info["id"],
        }

    def __getstate__(self) -> dict[str, Any]:
        # Open handles stay in the process that opened them; workers open their own.
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()
        state["_metadata"] = {}
        state["_keys"] = {}
        return state
