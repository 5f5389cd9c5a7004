"""No code runs from a checkpoint: every entry point that reads one refuses a file whose
pickle would call anything but tensor and container builders, and names the file.

DeepSpeed ZeRO folders are written here with DeepSpeed's own record classes (loss scaler,
ZeRO stage, fragment addresses), the structure its engine saves, and consolidated by the
project's reader exactly as DeepSpeed's ``zero_to_fp32`` does.
"""

from __future__ import annotations

import math
import pathlib
from collections import OrderedDict

import pytest
import torch

from pila.adapter import PILAAdapter
from pila.stages import StageC
from pila.stages.checkpoints import CHECKPOINT_KEY, check_resume_checkpoint, read_adapter_checkpoint
from pila.stages.export import main as export_main
from pila.stages.safe_load import UnsafeCheckpointError, load_checkpoint_file
from pila.stages.zero import consolidate_zero_checkpoint

from .helpers import tiny_adapter_config


class Payload:
    """Unpickled with ``weights_only=False``, this writes ``marker``: proof that code ran."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.write_text, (pathlib.Path(self.marker), "code from a checkpoint ran")


def _adapter_state() -> tuple[dict, dict]:
    torch.manual_seed(0)
    adapter = PILAAdapter(tiny_adapter_config())
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_()
    return {
        f"adapter.{k}": v.detach().clone() for k, v in adapter.state_dict().items()
    }, adapter.config.to_dict()


def write_zero2_folder(
    folder: pathlib.Path,
    state: dict,
    world_size: int,
    client_state: dict,
    extra: dict | None = None,
) -> None:
    """A DeepSpeed ZeRO-2 checkpoint folder as the engine writes it (two parameter groups)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    tag = folder / "checkpoint"
    tag.mkdir(parents=True)
    (folder / "latest").write_text("checkpoint")
    names = list(state)
    groups = [names[: len(names) // 2], names[len(names) // 2 :]]
    align = 2 * world_size
    parts: list[list[torch.Tensor]] = [[] for _ in range(world_size)]
    for group in groups:
        flat = torch.cat([state[n].float().reshape(-1) for n in group])
        flat = torch.cat(
            [flat, torch.zeros(math.ceil(flat.numel() / align) * align - flat.numel())]
        )
        for rank, piece in enumerate(flat.chunk(world_size)):
            parts[rank].append(piece.clone())
    model_states = {
        "module": OrderedDict(),
        "buffer_names": [],
        "optimizer": None,
        "param_shapes": [OrderedDict((n, state[n].shape) for n in group) for group in groups],
        "frozen_param_shapes": OrderedDict(),
        "frozen_param_fragments": OrderedDict(),
        "shared_params": {},
        "global_steps": 3,
        "ds_config": {"zero_optimization": {"stage": 2}},
        "ds_version": "0.19.8",
        **client_state,
    }
    torch.save(model_states, tag / "mp_rank_00_model_states.pt")
    for rank in range(world_size):
        optim = {
            "optimizer_state_dict": {
                "loss_scaler": LossScaler(1.0),
                "dynamic_loss_scale": False,
                "overflow": False,
                "clip_grad": 0.0,
                "base_optimizer_state": {
                    "state": {},
                    "param_groups": [{"lr": 1e-3, "params": [0]}],
                },
                "single_partition_of_fp32_groups": parts[rank],
                "zero_stage": ZeroStageEnum.gradients,
                "group_paddings": [0, 0],
                "param_alignment_paddings": [[0] * len(g) for g in groups],
                "partition_count": [world_size, world_size],
                "ds_version": "0.19.8",
                "param_slice_mappings": [
                    OrderedDict((n, fragment_address(numel=state[n].numel(), start=0)) for n in g)
                    for g in groups
                ],
                **(extra or {}),
            },
            "ds_config": {"zero_optimization": {"stage": 2}},
            "ds_version": "0.19.8",
        }
        torch.save(optim, tag / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_zero2_folders_consolidate_as_deepspeed_does(tmp_path, world_size):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state, config = _adapter_state()
    write_zero2_folder(
        tmp_path / "ds",
        state,
        world_size,
        {CHECKPOINT_KEY: {"adapter_config": config, "stage": "C"}},
    )
    ours = consolidate_zero_checkpoint(tmp_path / "ds")
    theirs = get_fp32_state_dict_from_zero_checkpoint(
        str(tmp_path / "ds")
    )  # trusted: written above
    assert ours.keys() == theirs.keys() == state.keys()
    for name in state:
        assert torch.equal(ours[name], theirs[name]) and torch.equal(ours[name], state[name]), name
    ckpt = read_adapter_checkpoint(tmp_path / "ds")
    assert ckpt.kind == "deepspeed" and ckpt.config == config and ckpt.stage == "C"


def test_the_payload_runs_when_unpickled_without_weights_only(tmp_path):
    """The detector works: a full unpickle of the payload writes the marker."""
    marker = tmp_path / "marker"
    torch.save({"x": Payload(marker)}, tmp_path / "f.pt")
    torch.load(tmp_path / "f.pt", weights_only=False)
    assert marker.exists()


def _payload_folders(tmp_path: pathlib.Path, marker: pathlib.Path) -> dict[str, pathlib.Path]:
    state, config = _adapter_state()
    client = {CHECKPOINT_KEY: {"adapter_config": config, "stage": "C"}}
    folders = {}
    folders["model_states"] = tmp_path / "in_model_states"
    write_zero2_folder(
        folders["model_states"], state, 2, {**client, "callbacks": {"x": Payload(marker)}}
    )
    folders["optim_states"] = tmp_path / "in_optim_states"
    write_zero2_folder(
        folders["optim_states"], state, 2, client, extra={"loss_scaler": Payload(marker)}
    )
    folders["lightning_ckpt"] = tmp_path / "payload.ckpt"
    torch.save(
        {
            "state_dict": state,
            "global_step": 1,
            CHECKPOINT_KEY: {**client[CHECKPOINT_KEY], "x": Payload(marker)},
        },
        folders["lightning_ckpt"],
    )
    return folders


@pytest.mark.parametrize("where", ["model_states", "optim_states", "lightning_ckpt"])
def test_no_entry_point_runs_a_checkpoint_payload(tmp_path, where, caplog):
    marker = tmp_path / "marker"
    path = _payload_folders(tmp_path, marker)[where]
    named = "payload.ckpt" if where == "lightning_ckpt" else f"{where}.pt"

    # pila export --ckpt
    assert export_main(["--ckpt", str(path), "--out", str(tmp_path / "out")]) == 2
    assert named in caplog.text and "refused" in caplog.text
    assert not (tmp_path / "out").exists()
    # init_from
    with pytest.raises(UnsafeCheckpointError, match=named):
        StageC(adapter=tiny_adapter_config(), init_from=str(path))
    # --ckpt_path (what Lightning loads, checked first)
    with pytest.raises(UnsafeCheckpointError, match=named):
        check_resume_checkpoint(path)
    assert not marker.exists()


def test_a_file_needing_another_global_is_refused_by_name(tmp_path):
    torch.save(
        {
            "scheduler": torch.optim.lr_scheduler.StepLR(
                torch.optim.SGD([torch.zeros(1, requires_grad=True)]), 1
            )
        },
        tmp_path / "x.pt",
    )
    with pytest.raises(
        UnsafeCheckpointError, match=r"x\.pt needs torch\.optim\.lr_scheduler\.StepLR"
    ):
        load_checkpoint_file(tmp_path / "x.pt")


def test_a_truncated_adapter_export_names_the_file(tmp_path, caplog):
    folder = PILAAdapter(tiny_adapter_config()).save_pretrained(tmp_path / "adapter")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert export_main(["--ckpt", str(folder), "--out", str(tmp_path / "out")]) == 2
    assert f"{weights} is not a readable safetensors file" in caplog.text
    assert "Traceback" not in caplog.text


def test_a_non_checkpoint_resume_path_is_named_without_unsafe_advice(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    with pytest.raises(ValueError) as info:
        check_resume_checkpoint(text)
    message = str(info.value)
    assert (
        str(text) in message and "Lightning .ckpt file or a DeepSpeed checkpoint folder" in message
    )
    assert "weights_only" not in message
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a Lightning training checkpoint"):
        check_resume_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        check_resume_checkpoint(tmp_path / "missing.ckpt")


@pytest.mark.slow
def test_resuming_from_last_checks_the_file_lightning_picks(tmp_path, tiny_data_root, capfd):
    from pila.cli import main

    from .helpers import tiny_fit_config

    marker = tmp_path / "marker"
    out = tmp_path / "out"
    config = tiny_fit_config(out, tiny_data_root, steps=2)
    last = out / "stageC" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    state, config_dict = _adapter_state()
    torch.save(
        {"state_dict": state, "global_step": 1, "epoch": 0, CHECKPOINT_KEY: {"x": Payload(marker)}},
        last,
    )
    assert main(["fit", "--config", str(config), "--ckpt_path", "last"]) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and f"{last} needs" in err and "refused" in err
    assert not marker.exists()
