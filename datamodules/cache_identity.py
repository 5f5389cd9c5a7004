"""What a ``pila prepare`` cache is: the settings, records and backbone its content depends on.

A cache folder is resumed (or trained on) only when its identity matches the request:
:func:`backbone_identity` fingerprints the VAE and text encoder without loading them,
:func:`records_sha256` the kept records and their labels, :func:`settings_diff` names what
differs, and :func:`check_out_dir` stops (or, with ``overwrite``, clears) a folder that holds
another cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pila.io import is_hub_id

from .cache import MANIFEST_NAME, CacheMismatchError
from .ranks import DONE_SUFFIX, Ranks, shard_index
from .records import WisaRecord

log = logging.getLogger(__name__)

WEIGHT_SAMPLES = 64
"""Blocks of :data:`WEIGHT_SAMPLE_BYTES` read, evenly strided, from each weight file (ours)."""
WEIGHT_SAMPLE_BYTES = 4096
"""Bytes per sampled block (ours: one page)."""


def backbone_identity(spec: str) -> dict[str, Any]:
    """What identifies a backbone's VAE and text encoder, without loading it.

    ``fingerprint`` is compared between a cache and a request: for ``"tiny"`` a hash of
    the tiny preset's configs; for a folder a hash of its model_index.json, the VAE,
    text-encoder and tokenizer configs and a fingerprint of each of their weight files
    (:func:`weights_fingerprint`: so two folders with the same configs but other weights
    differ, and a moved folder still matches); for a hub id the id itself.
    """
    if spec == "tiny":
        from pila.backbone.tiny import TINY_TEXT_ENCODER_CONFIG, TINY_VAE_CONFIG

        configs = {"vae": TINY_VAE_CONFIG, "text_encoder": TINY_TEXT_ENCODER_CONFIG, "seed": 0}
        blob = json.dumps(configs, sort_keys=True, default=str)
        fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:16]
        return {"source": "tiny", "fingerprint": "tiny:" + fingerprint}
    from pila.backbone.wan import WanBackbone

    path = WanBackbone.named_folder(spec) or Path(spec).expanduser()
    if path.is_dir():
        digest = hashlib.sha256()
        for part in ("model_index.json", "vae", "text_encoder", "tokenizer"):
            target = path / part
            for f in sorted(target.rglob("*")) if target.is_dir() else [target]:
                if not f.is_file():
                    continue
                digest.update(str(f.relative_to(path)).encode())
                if f.suffix in (".json", ".txt", ".model"):
                    digest.update(f.read_bytes())
                else:
                    digest.update(weights_fingerprint(f).encode())
        return {"source": str(path.resolve()), "fingerprint": "folder:" + digest.hexdigest()[:16]}
    if not is_hub_id(spec):
        from pila.backbone.folders import check_wan_folder

        check_wan_folder(path)  # a path that does not exist: "folder not found: …"
    return {"source": spec, "fingerprint": f"hub:{spec}"}


def weights_fingerprint(path: Path) -> str:
    """A cheap fingerprint of a weight file: its size, its safetensors header and a strided
    sample of its bytes.

    Reads at most the header and 64 × 4 KiB, whatever the file's size; two files with
    the same tensor names and shapes but other values differ in the sampled bytes.
    """
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as handle:
        if path.suffix == ".safetensors" and size >= 8:
            header_len = int.from_bytes(handle.read(8), "little")
            if 0 < header_len <= min(size - 8, 100 << 20):
                digest.update(handle.read(header_len))
        stride = max(size // WEIGHT_SAMPLES, 1)
        for offset in range(0, size, stride):
            handle.seek(offset)
            digest.update(handle.read(WEIGHT_SAMPLE_BYTES))
    return digest.hexdigest()


def records_sha256(records: Sequence[WisaRecord]) -> str:
    """A hash of the kept records: video names, captions, labels and parser descriptions."""
    digest = hashlib.sha256()
    for r in records:
        fields = [r.video_name, r.captions, list(r.labels)] + (
            [r.description] if r.description else []
        )
        digest.update(json.dumps(fields, ensure_ascii=False).encode())
    return digest.hexdigest()


def settings_diff(expected: dict[str, Any], found: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two settings dicts (``key: found → expected``)."""
    out = []
    for key in sorted(set(expected) | set(found)):
        a, b = expected.get(key), found.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += settings_diff(a, b, name + ".")
        elif a != b:
            hint = (
                " (the kept records, their labels or their parser descriptions differ)"
                if key == "records_sha256"
                else ""
            )
            out.append(f"{name}: cache has {b!r}, asked for {a!r}{hint}")
    return out


def check_out_dir(
    out: Path,
    manifest: dict[str, Any] | None,
    overwrite: bool,
    expected: dict[str, Any],
    ranks: Ranks | None = None,
) -> dict[str, Any] | None:
    """The manifest to resume from: leftover temporaries go; a manifest with another identity
    is an error (or, with ``overwrite``, goes with its shards).

    Each rank touches the files of its own shards only (rank 0 the manifest's too), so
    ranks starting at different moments never remove each other's work.

    Raises:
        CacheMismatchError: ``out`` holds a cache with another identity and not ``overwrite``.
    """
    ranks = ranks or Ranks()
    for leftover in out.glob(".shard-*"):
        index = shard_index(leftover)
        if index is not None and ranks.owns(index):
            leftover.unlink(missing_ok=True)
    if ranks.rank == 0:
        for leftover in out.glob(f".{MANIFEST_NAME}.*"):
            leftover.unlink(missing_ok=True)
    if manifest is None:
        return None
    diff = settings_diff(expected, {k: manifest.get(k) for k in expected})
    if not diff:
        return manifest
    if not overwrite:
        raise CacheMismatchError(
            f"cache {str(out)!r} was built with other settings ({'; '.join(diff)}). "
            "Use another --out, or pass --overwrite to replace it."
        )
    log.warning("replacing cache %s built with other settings: %s", out, "; ".join(diff))
    for shard in [*out.glob("shard-*.safetensors"), *out.glob(f"shard-*{DONE_SUFFIX}")]:
        index = shard_index(shard)
        if index is not None and ranks.owns(index):
            shard.unlink(missing_ok=True)
    if ranks.rank == 0:
        (out / MANIFEST_NAME).unlink(missing_ok=True)
    return None
