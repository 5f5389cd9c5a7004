"""Operator experts: both dispatch strategies against a naive per-sample loop; recipe masks hold."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pila.adapter.experts import OperatorExperts


def random_masks(num_experts: int, channels: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    masks = (torch.rand(num_experts, channels, generator=gen) < 0.4).float()
    masks[:, 0] = 1.0  # no expert is empty
    return masks


def randomize(experts: OperatorExperts, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in experts.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def naive_expert(
    experts: OperatorExperts, k: int, bank: torch.Tensor, cond: torch.Tensor
) -> torch.Tensor:
    """O_k on one sample (1, C, T, H, W) written layer by layer over the concatenation [P, c]."""
    pad = experts.kernel_size // 2
    c_map = cond[:, :, None, None, None].expand(-1, -1, *bank.shape[2:])  # broadcast c
    x = torch.cat([bank, c_map], dim=1)
    w_in = torch.cat([experts.in_weight[k], experts.in_cond[k]], dim=1)[:, :, None, None, None]
    x = F.silu(F.conv3d(x, w_in, experts.in_bias[k]))
    for weight, bias in zip(experts.hidden_weight, experts.hidden_bias, strict=True):
        x = F.silu(F.conv3d(x, weight[k], bias[k], padding=pad))
    out = F.conv3d(x, experts.out_weight[k][:, :, None, None, None], experts.out_bias[k])
    return out * experts.recipe[k][None, :, None, None, None]


def naive_routed(experts, bank, cond, indices):
    rows = []
    for b in range(bank.shape[0]):
        rows.append(
            torch.stack(
                [
                    naive_expert(experts, int(k), bank[b : b + 1], cond[b : b + 1])[0]
                    for k in indices[b]
                ]
            )
        )
    return torch.stack(rows)


@pytest.mark.parametrize("dispatch", ["gather", "batched"])
@pytest.mark.parametrize("depth", [0, 2])
def test_dispatch_matches_naive_loop(dispatch: str, depth: int) -> None:
    torch.manual_seed(0)
    experts = OperatorExperts(
        random_masks(8, 12), cond_dim=5, width=6, depth=depth, dispatch=dispatch
    ).double()
    randomize(experts)
    bank = torch.randn(3, 12, 3, 5, 4, dtype=torch.float64)
    cond = torch.randn(3, 5, dtype=torch.float64)
    indices = torch.tensor([[2, 7, 0], [7, 1, 2], [5, 4, 3]])
    out = experts(bank, cond, indices)
    assert out.shape == (3, 3, 12, 3, 5, 4)
    torch.testing.assert_close(out, naive_routed(experts, bank, cond, indices))


def test_gather_and_batched_gradients_agree() -> None:
    experts = OperatorExperts(random_masks(8, 10), cond_dim=4, width=5, depth=1).double()
    randomize(experts, seed=3)
    bank = torch.randn(2, 10, 3, 4, 4, dtype=torch.float64)
    cond = torch.randn(2, 4, dtype=torch.float64)
    indices = torch.tensor([[1, 6], [6, 0]])
    grads = {}
    for dispatch in ("gather", "batched"):
        experts.dispatch = dispatch
        experts.zero_grad()
        (experts(bank, cond, indices) ** 2).sum().backward()
        grads[dispatch] = [p.grad.clone() for p in experts.parameters()]
    for g_gather, g_batched in zip(grads["gather"], grads["batched"], strict=True):
        torch.testing.assert_close(g_gather, g_batched)
    # experts nobody selected get no gradient
    assert (
        experts.out_weight.grad[3].abs().sum() == 0 and experts.out_weight.grad[6].abs().sum() > 0
    )


def test_expert_never_changes_slots_outside_its_recipe() -> None:
    masks = random_masks(8, 16, seed=4)
    experts = OperatorExperts(masks, cond_dim=3, width=4, depth=1)
    randomize(experts, seed=5)
    bank = torch.randn(2, 16, 3, 4, 4)
    updates = experts.all_experts(bank, torch.randn(2, 3))  # (B, E, C, T, H, W)
    moved = updates.abs().amax(dim=(0, 3, 4, 5)) > 0  # (E, C)
    assert torch.equal(moved, masks.bool())


def test_fresh_experts_leave_the_bank_unchanged() -> None:
    experts = OperatorExperts(random_masks(8, 8), cond_dim=3, width=4, depth=1)
    out = experts(torch.randn(2, 8, 3, 3, 3), torch.randn(2, 3), torch.tensor([[0, 1], [2, 3]]))
    assert torch.equal(out, torch.zeros_like(out))


def test_top_k_zero_returns_no_updates() -> None:
    experts = OperatorExperts(random_masks(8, 8), cond_dim=3, width=4, depth=1)
    out = experts(
        torch.randn(2, 8, 3, 3, 3), torch.randn(2, 3), torch.zeros(2, 0, dtype=torch.long)
    )
    assert out.shape == (2, 0, 8, 3, 3, 3)


def test_bad_dispatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="dispatch"):
        OperatorExperts(random_masks(8, 8), cond_dim=3, width=4, depth=1, dispatch="loop")  # type: ignore[arg-type]
