"""Reading adapter weights out of the three kinds of checkpoint a stage can start from.

================================  ===============================================================
kind                              recognised by
================================  ===============================================================
Lightning ``.ckpt`` file          a file; ``torch.load(weights_only=True)`` gives ``state_dict``
DeepSpeed checkpoint folder       a folder with ``latest`` or ``*/mp_rank_*_model_states.pt``
exported adapter folder           a folder with ``adapter_config.json``, from ``save_pretrained``
================================  ===============================================================

Every kind yields the adapter's own ``state_dict`` (keys without the ``adapter.`` prefix)
and, where the checkpoint records it, the adapter config it was trained with. Anything
else is refused with a message naming the path and what was expected.

No file is unpickled beyond ``torch.load(weights_only=True)``
(:mod:`pila.stages.safe_load`); DeepSpeed folders are consolidated by the project's own
reader (:mod:`pila.stages.zero`), not by DeepSpeed's, which unpickles anything.
:func:`guard_checkpoint_loading` puts the same rules in front of Lightning's own loading
of ``ckpt_path`` (``pila fit --ckpt_path``).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pila.adapter.pretrained import CONFIG_NAME, read_adapter_config, read_adapter_weights
from pila.stages.safe_load import CheckpointReadError, load_checkpoint_file
from pila.stages.zero import (
    ZeroCheckpointError,
    consolidate_zero_checkpoint,
    read_client_state,
    tag_folder,
)

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
            f"{path} holds no PILA adapter weights (no '{ADAPTER_PREFIX}*' tensors; "
            f"first keys: {sample}). Expected {KINDS}."
        )
    return tensors


def _read_lightning(path: Path) -> AdapterCheckpoint:
    try:
        ckpt = load_checkpoint_file(path)
    except CheckpointReadError as err:
        raise CheckpointReadError(f"{err}. Expected {KINDS}.") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(
            f"{path} is not a Lightning checkpoint (no 'state_dict'). Expected {KINDS}."
        )
    meta = ckpt.get(CHECKPOINT_KEY) or {}
    return AdapterCheckpoint(
        state_dict=_adapter_tensors(ckpt["state_dict"], path),
        config=meta.get("adapter_config"),
        kind="lightning",
        stage=meta.get("stage"),
        path=path,
    )


def _read_deepspeed(path: Path) -> AdapterCheckpoint:
    try:
        state = consolidate_zero_checkpoint(path)
        # Lightning keeps its own checkpoint entries (ours included) as DeepSpeed client
        # state in the rank-0 model-states file.
        meta = read_client_state(path).get(CHECKPOINT_KEY) or {}
    except (ZeroCheckpointError, CheckpointReadError) as err:
        raise ValueError(f"DeepSpeed checkpoint {path}: {err}. Expected {KINDS}.") from None
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
        state_dict=read_adapter_weights(path),
        config=config.to_dict(),
        kind="adapter_folder",
        stage=None,
        path=path,
    )


def read_adapter_checkpoint(path: str | Path) -> AdapterCheckpoint:
    """Read adapter weights from any of the three checkpoint kinds (see the module docstring)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist. Expected {KINDS}.")
    if p.is_dir():
        if (p / CONFIG_NAME).exists():
            return _read_adapter_folder(p)
        if _is_deepspeed_folder(p):
            return _read_deepspeed(p)
        raise ValueError(
            f"folder {p} is neither an adapter folder nor a DeepSpeed checkpoint. "
            f"Expected {KINDS}."
        )
    return _read_lightning(p)


def _is_deepspeed_folder(path: Path) -> bool:
    return (path / "latest").is_file() or any(path.glob("*/*_model_states.pt"))


RESUME_KINDS = (
    "a Lightning .ckpt file or a DeepSpeed checkpoint folder written by `pila fit` (or 'last')"
)


def check_resume_checkpoint(path: str | os.PathLike) -> None:
    """Refuse a ``ckpt_path`` that is not a checkpoint, or whose files need code to load.

    Every file is read as :func:`~pila.stages.safe_load.load_checkpoint_file` reads it, so
    what Lightning (or DeepSpeed, for a folder) loads next holds tensors and plain values only.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a checkpoint (:class:`CheckpointReadError`), or unsafe
            (:class:`~pila.stages.safe_load.UnsafeCheckpointError`), naming the file.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"checkpoint {str(p)!r} does not exist; ckpt_path takes {RESUME_KINDS}"
        )
    if p.is_dir():
        if not _is_deepspeed_folder(p):
            raise CheckpointReadError(
                f"folder {p} is not a DeepSpeed checkpoint; ckpt_path takes {RESUME_KINDS}"
            )
        try:
            files = sorted(tag_folder(p).glob("*.pt"))
        except ZeroCheckpointError as err:
            raise CheckpointReadError(f"{err}; ckpt_path takes {RESUME_KINDS}") from None
        for file in files:
            load_checkpoint_file(file, mmap=True)
        return
    try:
        ckpt = load_checkpoint_file(p)
    except CheckpointReadError as err:
        raise CheckpointReadError(f"{err}; ckpt_path takes {RESUME_KINDS}") from None
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt or "global_step" not in ckpt:
        raise CheckpointReadError(
            f"{p} is not a Lightning training checkpoint (no state_dict and global_step); "
            f"ckpt_path takes {RESUME_KINDS}"
        )


def guard_checkpoint_loading(strategy: Any) -> None:
    """Check every path Lightning resumes from and load its files with ``weights_only=True``.

    Each path is checked with :func:`check_resume_checkpoint`.

    Wraps ``strategy.load_checkpoint``, the one call through which the trainer reads
    ``ckpt_path`` (after resolving ``"last"``/``"best"``) for every strategy, DeepSpeed's included.
    """
    original = strategy.load_checkpoint
    if getattr(original, "_pila_guarded", False):
        return
    takes_weights_only = "weights_only" in inspect.signature(original).parameters

    @functools.wraps(original)
    def load_checkpoint(checkpoint_path, *args, **kwargs):
        check_resume_checkpoint(checkpoint_path)
        if takes_weights_only:
            kwargs.pop("weights_only", None)
            return original(checkpoint_path, weights_only=True)
        return original(checkpoint_path, *args, **kwargs)

    load_checkpoint._pila_guarded = True
    strategy.load_checkpoint = load_checkpoint


def load_into_adapter(
    adapter: torch.nn.Module, ckpt: AdapterCheckpoint, *, strict: bool = True
) -> list[str]:
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
            f"{ckpt.kind} checkpoint {ckpt.path} does not fit this adapter "
            f"({' | '.join(problems)}). "
            "Build the adapter with the config the checkpoint was trained with."
        )
    adapter.load_state_dict({**own, **ckpt.state_dict}, strict=True)
    return missing
