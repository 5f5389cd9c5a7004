"""DeepSpeed ZeRO checkpoint folders, consolidated without DeepSpeed's unpickling readers.

What DeepSpeed's ``zero_to_fp32`` does, reading every file through
:func:`pila.stages.safe_load.load_checkpoint_file` (``weights_only=True``). Layout of a
checkpoint folder (``latest`` names the tag folder)::

    <folder>/latest                                  the tag, e.g. "checkpoint"
    <folder>/<tag>/mp_rank_00_model_states.pt        ZeRO-1/2: module (buffers), buffer_names,
                                                     param_shapes (per group: name → size),
                                                     frozen_param_shapes/fragments, shared_params,
                                                     and the trainer's client state (Lightning's)
    <folder>/<tag>/zero_pp_rank_{r}_mp_rank_00_model_states.pt    ZeRO-3: one per rank
    <folder>/<tag>/[bf16_]zero_pp_rank_{r}_mp_rank_00_optim_states.pt
                                                     optimizer_state_dict: zero_stage,
                                                     partition_count, rank r's part of the fp32
                                                     master weights: single_partition_of_fp32_groups
                                                     (ZeRO-1/2, one flat tensor per group, the
                                                     ranks' parts concatenated in rank order) or
                                                     fp32_flat_groups (ZeRO-3, each parameter split
                                                     over the ranks)

Only data-parallel checkpoints (``mp_rank_00``, no pipeline or tensor parallelism) are read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pila.stages.safe_load import load_checkpoint_file


class ZeroCheckpointError(ValueError):
    """A DeepSpeed folder that this reader cannot consolidate (named in the message)."""


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def tag_folder(folder: Path) -> Path:
    """The tag folder of a DeepSpeed checkpoint: the one ``latest`` names, or the only one."""
    latest = folder / "latest"
    if latest.is_file():
        tag = latest.read_text(encoding="utf-8").strip()
        if not tag or "/" in tag or "\\" in tag or tag in (".", ".."):
            raise ZeroCheckpointError(
                f"{latest} does not name a tag folder inside {folder} (it reads {tag!r})"
            )
        return folder / tag
    tags = sorted({p.parent for p in folder.glob("*/*_model_states.pt")})
    if len(tags) != 1:
        raise ZeroCheckpointError(
            f"{folder}: cannot tell which DeepSpeed tag to read "
            f"(found {len(tags)}, no 'latest' file)"
        )
    return tags[0]


def model_state_files(tag_dir: Path) -> list[Path]:
    files = sorted(tag_dir.glob("*_model_states.pt"), key=_natural_key)
    if not files:
        raise ZeroCheckpointError(f"{tag_dir} holds no *_model_states.pt file")
    return files


def read_client_state(folder: Path) -> dict[str, Any]:
    """The rank-0 model-states file: DeepSpeed's records plus the trainer's client state."""
    tag_dir = tag_folder(folder)
    state = load_checkpoint_file(model_state_files(tag_dir)[0])
    if not isinstance(state, Mapping):
        raise ZeroCheckpointError(
            f"{model_state_files(tag_dir)[0]} is not a DeepSpeed model-states file"
        )
    return dict(state)


def consolidate_zero_checkpoint(folder: str | Path) -> dict[str, Tensor]:
    """The fp32 ``state_dict`` a ZeRO-1/2/3 checkpoint folder holds.

    It has the buffers, the frozen and the trained parameters.

    Raises:
        UnsafeCheckpointError: a file needs more than tensors and plain values to load.
        ZeroCheckpointError: files missing or inconsistent (each named).
    """
    tag_dir = tag_folder(Path(folder))
    model_files = model_state_files(tag_dir)
    optim_files = sorted(tag_dir.glob("*_optim_states.pt"), key=_natural_key)
    if not optim_files:
        raise ZeroCheckpointError(
            f"{tag_dir} holds no *_optim_states.pt file "
            "(the fp32 weights of a ZeRO checkpoint)"
        )
    models = [load_checkpoint_file(f) for f in model_files]
    for path, state in zip(model_files, models, strict=True):
        for key in ("buffer_names", "param_shapes", "module"):
            if not isinstance(state, Mapping) or key not in state:
                raise ZeroCheckpointError(
                    f"{path} is not a DeepSpeed model-states file (no {key!r})"
                )
    optims = []
    for path in optim_files:
        state = load_checkpoint_file(path, mmap=True)
        inner = state.get("optimizer_state_dict") if isinstance(state, Mapping) else None
        if not isinstance(inner, Mapping) or "zero_stage" not in inner:
            raise ZeroCheckpointError(
                f"{path} is not a ZeRO optimizer-states file "
                "(no optimizer_state_dict.zero_stage)"
            )
        optims.append(inner)

    stage = int(optims[0]["zero_stage"])
    counts = optims[0]["partition_count"]
    world_size = max(counts) if isinstance(counts, (list, tuple)) else int(counts)
    if world_size != len(optims):
        raise ZeroCheckpointError(
            f"{tag_dir} was written by {world_size} ranks but holds {len(optims)} "
            "*_optim_states.pt files; "
            "the checkpoint is incomplete (a rank did not finish writing it?)"
        )
    first = models[0]
    state_dict: dict[str, Tensor] = {}
    module = first["module"] or {}
    for name in first["buffer_names"]:
        if name in module:
            value = module[name]
            state_dict[name] = value.float() if value.is_floating_point() else value
    if stage <= 2:
        _merge_zero2(
            state_dict,
            first,
            [o["single_partition_of_fp32_groups"] for o in optims],
            world_size,
            optims[0].get("param_alignment_paddings"),
            tag_dir,
        )
    elif stage == 3:
        if len(models) != world_size:
            raise ZeroCheckpointError(
                f"{tag_dir}: ZeRO-3 needs one model-states file per rank ({world_size}), "
                f"found {len(models)}"
            )
        flat_groups = [o["fp32_flat_groups"] for o in optims]
        _merge_zero3(state_dict, models, flat_groups, world_size, tag_dir)
    else:
        raise ZeroCheckpointError(
            f"{optim_files[0]} records ZeRO stage {stage}, which this reader does not know"
        )
    for alias, target in (first.get("shared_params") or {}).items():
        if target in state_dict:
            state_dict[alias] = state_dict[target]
    return state_dict


def _merge_zero2(
    state_dict: dict[str, Tensor],
    model: Mapping[str, Any],
    flat_groups: list[list[Tensor]],
    world_size: int,
    paddings: list[list[int]] | None,
    tag_dir: Path,
) -> None:
    """ZeRO-1/2: each group's flat fp32 vector is the ranks' parts in rank order.

    The group's parameters lie in that vector in order.
    """
    for name, tensor in (model.get("frozen_param_fragments") or {}).items():
        state_dict[name] = tensor.float() if tensor.is_floating_point() else tensor
    shapes = model["param_shapes"]
    if len(flat_groups[0]) != len(shapes):
        raise ZeroCheckpointError(
            f"{tag_dir}: {len(shapes)} parameter groups in the model states, "
            f"{len(flat_groups[0])} in the optimizer states"
        )
    for group, group_shapes in enumerate(shapes):
        flat = torch.cat([rank[group].reshape(-1) for rank in flat_groups])  # (N,)
        offset = 0
        group_paddings = paddings[group] if paddings is not None else None
        for index, (name, shape) in enumerate(group_shapes.items()):
            numel = math.prod(shape)
            if offset + numel > flat.numel():
                raise ZeroCheckpointError(
                    f"{tag_dir}: the fp32 weights of group {group} end before parameter {name}"
                )
            state_dict[name] = flat.narrow(0, offset, numel).view(tuple(shape)).clone()
            offset += numel + (group_paddings[index] if group_paddings is not None else 0)
        # DeepSpeed aligns each group to 2 × world size elements
        align = 2 * world_size
        if math.ceil(offset / align) * align != math.ceil(flat.numel() / align) * align:
            raise ZeroCheckpointError(
                f"{tag_dir}: group {group} holds {flat.numel()} fp32 values, "
                f"its parameters use {offset}"
            )


def _merge_zero3(
    state_dict: dict[str, Tensor],
    models: list[Mapping[str, Any]],
    flat_groups: list[list[Tensor]],
    world_size: int,
    tag_dir: Path,
) -> None:
    """ZeRO-3: each parameter is cut into ``ceil(numel / world)`` pieces, one per rank, in order."""
    frozen = models[0].get("frozen_param_shapes") or {}
    for name, shape in frozen.items():
        numel = math.prod(shape)
        pieces = [m["frozen_param_fragments"][name].reshape(-1) for m in models]
        state_dict[name] = torch.cat(pieces).narrow(0, 0, numel).view(tuple(shape)).float()
    flats = [torch.cat([g.reshape(-1) for g in rank]) for rank in flat_groups]  # per rank (N_r,)
    shapes = {name: shape for group in models[0]["param_shapes"] for name, shape in group.items()}
    offset = 0
    for name, shape in shapes.items():
        numel = math.prod(shape)
        part = math.ceil(numel / world_size)
        if offset + part > flats[0].numel():
            raise ZeroCheckpointError(f"{tag_dir}: the fp32 weights end before parameter {name}")
        pieces = [flat.narrow(0, offset, part) for flat in flats]
        state_dict[name] = torch.cat(pieces).narrow(0, 0, numel).view(tuple(shape)).clone()
        offset += part
