"""Checkpoint files read without running code from them.

``torch.load`` unpickles: with ``weights_only=False`` (what DeepSpeed's own readers use) a
crafted file runs whatever its pickle asks for. Every checkpoint file the project reads
(Lightning ``.ckpt`` files, DeepSpeed's ``*_model_states.pt`` and ``*_optim_states.pt``)
goes through :func:`load_checkpoint_file`: ``torch.load(weights_only=True)``, which builds
tensors, containers and plain values only. The few DeepSpeed classes a ZeRO checkpoint
holds besides those are mapped to inert stand-ins that keep the pickled state and have
no behaviour (:data:`DEEPSPEED_GLOBALS`); the real DeepSpeed classes are never looked up.
A file that needs any other global is refused with :class:`UnsafeCheckpointError`, naming
the file and the global.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch


class UnsafeCheckpointError(ValueError):
    """A checkpoint file needs more than tensors and plain values to load; it is not read."""


class CheckpointReadError(ValueError):
    """A file given as a checkpoint is not one (truncated, another format, not a torch file)."""


class InertObject:
    """Stands in for a DeepSpeed object in a checkpoint: holds its pickled state, does nothing."""

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"InertObject(args={self.args!r}, state={getattr(self, 'state', None)!r})"


def _zero_stage(value: int) -> int:
    """``ZeroStageEnum(value)`` read as its integer stage."""
    return int(value)


DEEPSPEED_GLOBALS: dict[str, Any] = {
    # the optimizer-state files of ZeRO-1/2/3 (bf16 and fp16 included) hold these
    "deepspeed.runtime.fp16.loss_scaler.LossScaler": InertObject,
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler": InertObject,
    "deepspeed.runtime.zero.config.ZeroStageEnum": _zero_stage,
    "deepspeed.utils.tensor_fragment.fragment_address": InertObject,
}
"""Fully qualified names of the DeepSpeed globals a ZeRO checkpoint needs → inert stand-ins."""

_GLOBAL_PATTERN = re.compile(r"GLOBAL ([\w.]+)|unrecognized function (\S+)|but got (<[^>]*>)")


def load_checkpoint_file(path: str | os.PathLike, *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with DeepSpeed's inert stand-ins, on the CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: the file needs another global (a class or function) to load;
            nothing from it ran.
        CheckpointReadError: the file is not a torch checkpoint (truncated, another format).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file {str(p)!r} does not exist")
    allowed = [(obj, name) for name, obj in DEEPSPEED_GLOBALS.items()]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(str(err))
        refusals = ("GLOBAL", "unrecognized function", "allowlisted", "Can only")
        if any(word in reason for word in refusals):
            match = _GLOBAL_PATTERN.search(reason)
            found = next((g for g in match.groups() if g), "an object") if match else "an object"
            raise UnsafeCheckpointError(
                f"{p} needs {found} to load, which is neither a tensor, a plain value nor one of "
                "the DeepSpeed records a pila checkpoint holds; it is refused (pila never "
                "unpickles code from a checkpoint). Use a checkpoint written by `pila fit`."
            ) from None
        raise CheckpointReadError(
            f"{p} is not a checkpoint file torch can read ({reason})"
        ) from None
    # garbage makes the unpickler fail in any way (KeyError, EOFError…)
    except Exception as err:  # noqa: BLE001
        reason = f"{type(err).__name__}: {_first_line(str(err))}"
        raise CheckpointReadError(
            f"{p} is not a checkpoint file torch can read ({reason})"
        ) from None


def _unpickler_reason(text: str) -> str:
    """What the weights-only unpickler objected to, without torch's advice around it."""
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    return _first_line(" ".join(text.split()))


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "empty error"
    return line if len(line) <= 200 else line[:200] + "…"
