"""An adapter in use with a backbone: the fit check, its identity in sidecars, loading.

What ``pila.generate``, ``pila predict`` and the lab share once an adapter folder exists
(:mod:`pila.adapter.pretrained` reads and writes the folder itself):

- the check that an adapter fits a backbone, from its config before any weight is read
  (:func:`check_backbone_sizes`) or from a built adapter (:func:`check_adapter_compatible`);
- what identifies an adapter in a sidecar: its folder and the SHA-256 of its weights
  (:func:`adapter_identity`, :func:`folder_weights_sha256`);
- :func:`load_adapter`, which does all of it and returns a frozen adapter in eval mode.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pila.adapter.adapter import PILAAdapter
from pila.adapter.config import AdapterConfig
from pila.adapter.pretrained import read_adapter_config, resolve_adapter_folder

if TYPE_CHECKING:
    from pila.backbone import WanBackbone


def adapter_config(adapter: nn.Module) -> AdapterConfig:
    """The adapter's ``AdapterConfig`` (raises a clear error for modules without one)."""
    config = getattr(adapter, "config", None)
    if config is None or not hasattr(config, "latent_channels") or not hasattr(config, "text_dim"):
        raise TypeError(
            f"{type(adapter).__name__} is not a PILA adapter (it has no config with "
            "latent_channels and text_dim); load one with "
            "pila.adapter.PILAAdapter.from_pretrained(folder)"
        )
    return config


def check_backbone_sizes(
    config: AdapterConfig, backbone: WanBackbone, source: str = "the adapter"
) -> None:
    """Refuse an adapter built for another backbone (latent channels or text width differ).

    Raises:
        ValueError: naming ``source``, both values and the fix.
    """
    problems = []
    if int(config.latent_channels) != backbone.latent_channels:
        problems.append(
            f"latent_channels {config.latent_channels} vs the backbone's "
            f"{backbone.latent_channels}"
        )
    if int(config.text_dim) != backbone.text_dim:
        problems.append(
            f"text_dim {config.text_dim} vs the backbone's text-encoder width {backbone.text_dim}"
        )
    if problems:
        raise ValueError(
            f"{source} does not match the backbone {backbone.source!r}: {'; '.join(problems)}. "
            "Use an adapter trained (or exported) for a backbone with the same VAE latents and "
            "text encoder, or load the backbone it was trained with."
        )


def check_adapter_compatible(
    adapter: nn.Module, backbone: WanBackbone, source: str = "the adapter"
) -> None:
    """:func:`check_backbone_sizes` for a built adapter."""
    check_backbone_sizes(adapter_config(adapter), backbone, source)


def safetensors_sha256(path: Path) -> str:
    """SHA-256 of what a safetensors file holds, whatever order its writer laid it out in.

    safetensors writes its metadata in hash-map order, which changes from process to
    process: the same weights saved twice are two different byte strings. This hashes the
    metadata's items sorted, then each tensor's name, dtype, shape and raw bytes in name
    order (the format: an 8-byte little-endian header length, a JSON header of
    ``{name: {dtype, shape, data_offsets}}`` and ``__metadata__``, then the data).
    """
    with path.open("rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
        data = handle.read()
    digest = hashlib.sha256()
    metadata = header.pop("__metadata__", None) or {}
    digest.update(json.dumps(sorted(metadata.items())).encode() + b"\0")
    for name in sorted(header):
        entry = header[name]
        start, end = entry["data_offsets"]
        digest.update(json.dumps([name, entry["dtype"], entry["shape"]]).encode())
        digest.update(data[start:end])
    return digest.hexdigest()


def _state_sha256(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        raw = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        digest.update(raw.numpy().tobytes())
    return digest.hexdigest()


def _joined(hashes: dict[str, str]) -> str:
    joined = "".join(f"{k}:{v}" for k, v in sorted(hashes.items()))
    return hashlib.sha256(joined.encode()).hexdigest()


def folder_weights_sha256(folder: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """The SHA-256 identifying an adapter folder's weights, and each ``*.safetensors`` file's
    (:func:`safetensors_sha256`: the same weights give the same hash, however written).

    One file: that file's hash; several: a hash of their names and hashes.
    """
    files = sorted(Path(folder).glob("*.safetensors"))
    weights = {p.name: safetensors_sha256(p) for p in files}
    return (next(iter(weights.values())) if len(weights) == 1 else _joined(weights)), weights


def adapter_identity(
    adapter: nn.Module | None, folder: str | os.PathLike | None = None
) -> dict[str, Any] | None:
    """What identifies the adapter in a sidecar: its folder and the SHA-256 of its weights.

    For a folder, the hash is that of its ``*.safetensors`` file(s); for an in-memory
    adapter, of its state dict (names and raw bytes).
    """
    if adapter is None:
        return None
    config = adapter_config(adapter)
    identity: dict[str, Any] = {
        "class": f"{type(adapter).__module__}.{type(adapter).__qualname__}",
        "num_parameters": sum(p.numel() for p in adapter.parameters()),
        "top_k": int(getattr(config, "top_k", -1)),
    }
    if folder is not None:
        identity["folder"] = str(Path(folder).resolve())
        identity["sha256"], identity["weights"] = folder_weights_sha256(folder)
    else:
        identity["folder"] = None
        identity["sha256"] = _state_sha256(adapter)
    return identity


def load_adapter(
    path_or_id: str | os.PathLike,
    backbone: WanBackbone,
    *,
    device: torch.device | str | None = None,
) -> PILAAdapter:
    """``PILAAdapter.from_pretrained``, checked against ``backbone``, frozen, in eval mode.

    The sizes are checked from the config before any weight is read.

    Raises:
        FileNotFoundError: the folder does not exist or the hub id cannot be fetched.
        ValueError: the adapter does not match the backbone (:func:`check_backbone_sizes`).
    """
    folder = resolve_adapter_folder(path_or_id)
    source = f"adapter {os.fspath(path_or_id)!r}"
    check_backbone_sizes(read_adapter_config(folder), backbone, source)
    adapter = PILAAdapter.from_pretrained(folder)
    adapter.requires_grad_(False).eval()
    return adapter.to(device if device is not None else backbone.device)


__all__ = [
    "adapter_config",
    "adapter_identity",
    "check_adapter_compatible",
    "check_backbone_sizes",
    "folder_weights_sha256",
    "safetensors_sha256",
    "load_adapter",
]
