"""The stages' optimiser: AdamW over named parameter groups (the encoder's at its own rate).

:func:`optimizer_param_groups` maps a stage's optimizer groups onto the adapter's parameter
groups (:data:`pila.adapter.PARAMETER_GROUPS`); :func:`adamw_class` picks PyTorch's AdamW
or, when DeepSpeed offloads the optimizer to the CPU, DeepSpeed's CPU AdamW.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn


def optimizer_param_groups(
    adapter_groups: Mapping[str, Sequence[nn.Parameter]],
    optimizer_groups: Mapping[str, Sequence[str]],
    *,
    lr: float,
    encoder_lr_factor: float,
    stage: str,
) -> list[dict[str, Any]]:
    """One optimizer group per entry of ``optimizer_groups`` with a trainable parameter.

    The group named ``encoder`` runs at ``lr × encoder_lr_factor``; every group records
    ``base_lr`` for the schedule callbacks. An unknown adapter group, or nothing to train,
    is a ``ValueError`` naming the stage.
    """
    param_groups = []
    for name, parts in optimizer_groups.items():
        unknown = set(parts) - set(adapter_groups)
        if unknown:
            raise ValueError(
                f"{stage}: unknown adapter parameter groups {sorted(unknown)}; "
                f"known: {sorted(adapter_groups)}"
            )
        params = [p for part in parts for p in adapter_groups[part] if p.requires_grad]
        if not params:
            continue
        factor = encoder_lr_factor if name == "encoder" else 1.0
        param_groups.append({"params": params, "name": name, "lr": lr * factor, "base_lr": lr})
    if not param_groups:
        raise ValueError(
            f"{stage}: nothing to train (adapter groups {sorted(optimizer_groups)} are empty; "
            "the plain adapter trains in stage C only)"
        )
    return param_groups


def adamw_class(strategy: Any) -> type[torch.optim.Optimizer]:
    """AdamW; DeepSpeed's CPU AdamW when ``strategy`` offloads the optimizer to the CPU.

    ZeRO-Offload refuses other optimizers (``zero_force_ds_cpu_optimizer``), and its
    vectorised CPU AdamW is what makes the offloaded step fast.
    """
    config = getattr(strategy, "config", None)
    if type(strategy).__name__ == "DeepSpeedStrategy" and isinstance(config, dict):
        offload = config.get("zero_optimization", {}).get("offload_optimizer") or {}
        if offload.get("device") == "cpu":
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return DeepSpeedCPUAdam
    return torch.optim.AdamW
