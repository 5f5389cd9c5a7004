"""Reading adapter weights out of the three kinds of checkpoint a stage can start from.

================================  ===============================================================
kind                              recognised by
================================  ===============================================================
Lightning ``.ckpt`` file          a file; ``torch.load(weights_only=True)`` gives ``state_dict``
DeepSpeed checkpoint folder       a folder with ``latest`` or ``*/mp_rank_*_model_states.pt``
exported adapter folder           a folder with ``adapter_config.json`` (``PILAAdapter.save_pretrained``)
================================  ===============================================================

Every kind yields the adapter's own ``state_dict`` (keys without the ``adapter.`` prefix)
and, where the checkpoint records it, the adapter config it was trained with. Anything
else is refused with a message naming the path and what was expected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pila.adapter.pretrained import CONFIG_NAME, read_adapter_config, read_adapter_weights

log = logging.getLogger(__name__)

ADAPTER_PREFIX = "adapter."
CHECKPOINT_KEY = "pila"
"""Key of the project's own entry in a Lightning checkpoint (adapter config, stage name)."""

KINDS = (
    "a Lightning .ckpt file written by a pila stage, a DeepSpeed checkpoint folder written by "
    "a pila stage, or an adapter folder from `pila export` / PILAAdapter.save_pretrained"
)


@dataclass
class AdapterCheckpoint:
    """Adapter weights read from a checkpoint.

    Attributes:
        state_dict: the adapter's tensors, keys relative to the adapter.
        config: the adapter config dict recorded with them (None if the checkpoint has none).
        kind: ``"lightning"``, ``"deepspeed"`` or ``"adapter_folder"``.
        stage: name of the stage that wrote it, when recorded.
        path: where it was read from.
    """

    state_dict: dict[str, Tensor]
    config: dict[str, Any] | None
    kind: str
    stage: str | None
    path: Path


def _adapter_tensors(state_dict: dict[str, Any], path: Path) -> dict[str, Tensor]:
    tensors = {
        key[len(ADAPTER_PREFIX) :]: value
        for key, value in state_dict.items()
        if key.startswith(ADAPTER_PREFIX) and isinstance(value, Tensor)
    }
    if not tensors:
        sample = ", ".join(list(state_dict)[:5]) or "none"
        raise ValueError(
            f"{path} holds no PILA adapter weights (no '{ADAPTER_PREFIX}*' tensors; first keys: {sample}). "
            f"Expected {KINDS}."
        )
    return tensors


def _read_lightning(path: Path) -> AdapterCheckpoint:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure gets the same advice
        raise ValueError(f"could not read {path} as a checkpoint ({err}). Expected {KINDS}.") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict'). Expected {KINDS}.")
    meta = ckpt.get(CHECKPOINT_KEY) or {}
    return AdapterCheckpoint(
        state_dict=_adapter_tensors(ckpt["state_dict"], path),
        config=meta.get("adapter_config"),
        kind="lightning",
        stage=meta.get("stage"),
        path=path,
    )


def _deepspeed_tag_dir(path: Path) -> Path:
    latest = path / "latest"
    if latest.exists():
        return path / latest.read_text().strip()
    tags = sorted({p.parent for p in path.glob("*/mp_rank_*_model_states.pt")})
    if len(tags) != 1:
        raise ValueError(f"{path}: cannot tell which DeepSpeed tag to read (found {len(tags)}, no 'latest' file)")
    return tags[0]


def _read_deepspeed(path: Path) -> AdapterCheckpoint:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    tag_dir = _deepspeed_tag_dir(path)
    state = get_fp32_state_dict_from_zero_checkpoint(str(path), tag=tag_dir.name)
    # Lightning keeps its own checkpoint entries (ours included) as DeepSpeed client state
    # in the rank-0 model-states file.
    meta: dict[str, Any] = {}
    model_states = sorted(tag_dir.glob("mp_rank_*_model_states.pt"))
    if model_states:
        try:
            client = torch.load(model_states[0], map_location="cpu", weights_only=True)
            meta = client.get(CHECKPOINT_KEY) or {}
        except Exception as err:  # noqa: BLE001 - the weights are still usable without metadata
            log.warning("could not read the pila metadata of %s (%s); the adapter config is not checked", path, err)
    return AdapterCheckpoint(
        state_dict=_adapter_tensors(state, path),
        config=meta.get("adapter_config"),
        kind="deepspeed",
        stage=meta.get("stage"),
        path=path,
    )


def _read_adapter_folder(path: Path) -> AdapterCheckpoint:
    config = read_adapter_config(path)
    return AdapterCheckpoint(
        state_dict=read_adapter_weights(path), config=config.to_dict(), kind="adapter_folder", stage=None, path=path
    )


def read_adapter_checkpoint(path: str | Path) -> AdapterCheckpoint:
    """Read adapter weights from any of the three checkpoint kinds (see the module docstring)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist. Expected {KINDS}.")
    if p.is_dir():
        if (p / CONFIG_NAME).exists():
            return _read_adapter_folder(p)
        if (p / "latest").exists() or any(p.glob("*/mp_rank_*_model_states.pt")):
            return _read_deepspeed(p)
        raise ValueError(f"folder {p} is neither an adapter folder nor a DeepSpeed checkpoint. Expected {KINDS}.")
    return _read_lightning(p)


def load_into_adapter(adapter: torch.nn.Module, ckpt: AdapterCheckpoint, *, strict: bool = True) -> list[str]:
    """Copy checkpoint tensors into ``adapter``, naming every mismatch.

    Args:
        adapter: the adapter to fill.
        ckpt: what :func:`read_adapter_checkpoint` returned.
        strict: refuse missing tensors (tensors present with another shape are always refused).

    Returns:
        Names of adapter tensors the checkpoint did not provide (empty when ``strict``).
    """
    own = adapter.state_dict()
    wrong_shape = [
        f"{k}: checkpoint {tuple(v.shape)} vs adapter {tuple(own[k].shape)}"
        for k, v in ckpt.state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    unexpected = sorted(set(ckpt.state_dict) - set(own))
    missing = sorted(set(own) - set(ckpt.state_dict))
    problems = []
    if wrong_shape:
        problems.append("shape mismatch: " + "; ".join(wrong_shape[:10]))
    if unexpected:
        problems.append("not in this adapter: " + ", ".join(unexpected[:10]))
    if missing and strict:
        problems.append("missing from the checkpoint: " + ", ".join(missing[:10]))
    if problems:
        raise ValueError(
            f"{ckpt.kind} checkpoint {ckpt.path} does not fit this adapter ({' | '.join(problems)}). "
            "Build the adapter with the config the checkpoint was trained with."
        )
    adapter.load_state_dict({**own, **ckpt.state_dict}, strict=True)
    return missing
