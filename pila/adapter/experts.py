"""Masked operator experts (paper Eq. 5 / 24).

    ΔP_k = M_k ⊙ O_k(P, c)

O_k is a small conv operator over ``[P, broadcast(c)]``: a pointwise lift to the expert
width (the broadcast condition enters as a per-sample bias, which is exactly a pointwise
convolution over the concatenation), ``depth`` spatiotemporal conv layers, and a
pointwise projection back to the bank's 32 channels. M_k (E, 32) is the recipe mask of
category k: the expert can only write the slots its residuals read.

The weights of all experts are stored stacked along a leading E axis so that two
dispatch strategies share them:

* ``"gather"``: for each expert, run it on the samples that selected it (B·K expert
  evaluations);
* ``"batched"``: run every expert on every sample at once with grouped convolutions over
  E·W channels (B·E evaluations, fewer kernel launches), then gather the selected ones.

Both return the same (B, K, 32, T, H, W) updates aligned with ``routing.indices``;
``benchmarks/adapter_cost.py`` times them at full size (hidden 128, 81 × 480 × 832).

The output projection starts at zero, so a fresh expert leaves the bank unchanged and
stage C starts from the stage-B bank.

Legend: B batch, E experts, K top-k, C bank channels (32), W expert width, Dc condition
width, T latent frames, H, W latent height and width, N rows (samples) routed to an expert.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ExpertDispatch = Literal["gather", "batched"]


def _uniform_(tensor: Tensor, fan_in: int) -> Tensor:
    """PyTorch's default conv/linear initialisation U(−1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.init.uniform_(tensor, -bound, bound)


class OperatorExperts(nn.Module):
    """The E operator experts O_k with their recipe masks M_k.

    Args:
        recipe_masks: (E, C) 0/1 recipe masks, row k for ``CATEGORIES[k]``.
        cond_dim: width Dc of c.
        width: hidden width W of each expert.
        depth: number of spatiotemporal conv layers of each expert (≥ 0).
        kernel_size: kernel of those layers (odd).
        dispatch: ``"gather"`` or ``"batched"`` (see the module docstring).
    """

    def __init__(
        self,
        recipe_masks: Tensor,
        cond_dim: int,
        width: int,
        depth: int,
        kernel_size: int = 3,
        dispatch: ExpertDispatch = "gather",
    ) -> None:
        super().__init__()
        if recipe_masks.ndim != 2:
            raise ValueError(
                f"recipe_masks must have shape (E, C), got {tuple(recipe_masks.shape)}"
            )
        if dispatch not in ("gather", "batched"):
            raise ValueError(f"expert dispatch must be 'gather' or 'batched', got {dispatch!r}")
        num_experts, channels = recipe_masks.shape
        self.num_experts, self.channels, self.width = num_experts, channels, width
        self.kernel_size, self.dispatch = kernel_size, dispatch
        self.register_buffer(
            "recipe", recipe_masks.detach().clone().float(), persistent=False
        )  # (E, C)
        k3 = kernel_size**3
        self.in_weight = nn.Parameter(
            _uniform_(torch.empty(num_experts, width, channels), channels + cond_dim)
        )
        self.in_cond = nn.Parameter(
            _uniform_(torch.empty(num_experts, width, cond_dim), channels + cond_dim)
        )
        self.in_bias = nn.Parameter(_uniform_(torch.empty(num_experts, width), channels + cond_dim))
        self.hidden_weight = nn.ParameterList(
            nn.Parameter(
                _uniform_(torch.empty(num_experts, width, width, *(kernel_size,) * 3), width * k3)
            )
            for _ in range(depth)
        )
        self.hidden_bias = nn.ParameterList(
            nn.Parameter(_uniform_(torch.empty(num_experts, width), width * k3))
            for _ in range(depth)
        )
        self.out_weight = nn.Parameter(torch.zeros(num_experts, channels, width))
        self.out_bias = nn.Parameter(torch.zeros(num_experts, channels))

    @property
    def depth(self) -> int:
        return len(self.hidden_weight)

    # ------------------------------------------------------------------ one expert
    def expert(self, k: int, bank: Tensor, cond: Tensor) -> Tensor:
        """ΔP_k = M_k ⊙ O_k(P, c) for one expert: (N, C, T, H, W), (N, Dc) → (N, C, T, H, W)."""
        pad = self.kernel_size // 2
        bias = (cond @ self.in_cond[k].T + self.in_bias[k])[
            :, :, None, None, None
        ]  # (N, W, 1, 1, 1)
        x = F.silu(
            F.conv3d(bank, self.in_weight[k][:, :, None, None, None]) + bias
        )  # (N, W, T, H, W)
        for weight, b in zip(self.hidden_weight, self.hidden_bias, strict=True):
            x = F.silu(F.conv3d(x, weight[k], b[k], padding=pad))  # (N, W, T, H, W)
        out = F.conv3d(
            x, self.out_weight[k][:, :, None, None, None], self.out_bias[k]
        )  # (N, C, T, H, W)
        return out * self.recipe[k].to(out.dtype)[None, :, None, None, None]

    # ------------------------------------------------------------------ all experts
    def all_experts(self, bank: Tensor, cond: Tensor) -> Tensor:
        """Every expert on every sample: (B, C, T, H, W), (B, Dc) → (B, E, C, T, H, W)."""
        E, W, C = self.num_experts, self.width, self.channels
        pad = self.kernel_size // 2
        batch, _, frames, height, width = bank.shape
        bias = cond @ self.in_cond.reshape(E * W, -1).T + self.in_bias.reshape(E * W)  # (B, E·W)
        x = F.conv3d(bank, self.in_weight.reshape(E * W, C, 1, 1, 1))  # (B, E·W, T, H, W)
        x = F.silu(x + bias[:, :, None, None, None])
        for weight, b in zip(self.hidden_weight, self.hidden_bias, strict=True):
            x = F.silu(
                F.conv3d(
                    x,
                    weight.reshape(E * W, W, *weight.shape[-3:]),
                    b.reshape(E * W),
                    padding=pad,
                    groups=E,
                )
            )  # (B, E·W, T, H, W)
        out = F.conv3d(
            x, self.out_weight.reshape(E * C, W, 1, 1, 1), self.out_bias.reshape(E * C), groups=E
        )  # (B, E·C, T, H, W)
        out = out.reshape(batch, E, C, frames, height, width)  # (B, E, C, T, H, W)
        return out * self.recipe.to(out.dtype)[None, :, :, None, None, None]

    # ------------------------------------------------------------------ routed
    def forward(self, bank: Tensor, cond: Tensor, indices: Tensor) -> Tensor:
        """Updates of the selected experts, aligned with ``indices``.

        Args:
            bank: (B, C, T, H, W) bank P.
            cond: (B, Dc) condition c.
            indices: (B, K) selected experts per sample.

        Returns:
            (B, K, C, T, H, W): entry [b, j] is ΔP_{indices[b, j]} for sample b.
        """
        batch, top_k = indices.shape
        if top_k == 0:
            return bank.new_zeros(batch, 0, *bank.shape[1:])
        if self.dispatch == "batched":
            every = self.all_experts(bank, cond)  # (B, E, C, T, H, W)
            rows = torch.arange(batch, device=bank.device)[:, None].expand(batch, top_k)  # (B, K)
            return every[rows, indices]  # (B, K, C, T, H, W)
        updates = bank.new_zeros(batch, top_k, *bank.shape[1:])  # (B, K, C, T, H, W)
        for k in range(self.num_experts):
            rows, slots = (indices == k).nonzero(as_tuple=True)  # (N,), (N,)
            if rows.numel() == 0:
                continue
            updates = updates.index_put((rows, slots), self.expert(k, bank[rows], cond[rows]))
        return updates
