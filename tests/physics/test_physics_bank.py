"""The 32-channel bank contract: layout, packing, reading back, channel masks."""

from __future__ import annotations

import pytest
import torch

from pila.physics import bank
from pila.physics.bank import (
    BANK_CHANNELS,
    BANK_SLOTS,
    SLOT_COMPONENTS,
    pack_bank,
    read_slot,
    slot_mask,
    slot_slice,
    unpack_bank,
)

SHAPE = (2, 3, 4, 5)  # B, T, H, W


def random_fields(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b, t, h, w = SHAPE
    return {name: torch.randn(b, k, t, h, w, generator=g) for name, k in SLOT_COMPONENTS.items()}


def test_layout_is_the_contract():
    assert BANK_SLOTS == (
        ("u", 4),
        ("v", 4),
        ("p", 2),
        ("rho", 2),
        ("T", 2),
        ("phi", 2),
        ("strain", 4),
        ("stress", 4),
        ("J", 4),
        ("w", 4),
    )
    assert BANK_CHANNELS == 32
    assert SLOT_COMPONENTS == {
        "u": 2,
        "v": 2,
        "p": 1,
        "rho": 1,
        "T": 1,
        "phi": 1,
        "strain": 3,
        "stress": 3,
        "J": 2,
        "w": 1,
    }
    assert slot_slice("u") == slice(0, 4)
    assert slot_slice("p") == slice(8, 10)
    assert slot_slice("strain") == slice(16, 20)
    assert slot_slice("w") == slice(28, 32)


def test_pack_writes_each_slot_in_order_with_repeats_and_trace():
    fields = random_fields()
    packed = pack_bank(fields)
    assert packed.shape == (2, 32, 3, 4, 5)
    u = fields["u"]
    torch.testing.assert_close(packed[:, 0:4], torch.cat([u, u], dim=1))  # x, y, x, y
    torch.testing.assert_close(packed[:, 8], fields["p"][:, 0])
    torch.testing.assert_close(packed[:, 9], fields["p"][:, 0])
    s = fields["strain"]
    torch.testing.assert_close(packed[:, 16:19], s)
    torch.testing.assert_close(packed[:, 19], s[:, 0] + s[:, 1])  # trace
    w = fields["w"]
    torch.testing.assert_close(packed[:, 28:32], w.expand(-1, 4, -1, -1, -1))


def test_read_inverts_pack_for_every_slot():
    fields = random_fields()
    packed = pack_bank(fields)
    unpacked = unpack_bank(packed)
    assert list(unpacked) == [name for name, _ in BANK_SLOTS]
    for name, tensor in fields.items():
        torch.testing.assert_close(read_slot(packed, name), tensor)
        torch.testing.assert_close(unpacked[name], tensor)


def test_absent_slots_are_zero():
    fields = random_fields()
    packed = pack_bank({"v": fields["v"], "T": fields["T"]})
    on = slot_mask(("v", "T"), dtype=torch.bool)
    assert torch.count_nonzero(packed[:, ~on]) == 0
    torch.testing.assert_close(read_slot(packed, "v"), fields["v"])


def test_repeated_channels_are_averaged():
    b, t, h, w = SHAPE
    full = torch.zeros(b, 32, t, h, w)
    full[:, 0], full[:, 1], full[:, 2], full[:, 3] = (
        1.0,
        2.0,
        3.0,
        6.0,
    )  # u: x copies 1, 3; y copies 2, 6
    full[:, 28:32] = torch.tensor([1.0, 2.0, 3.0, 6.0]).reshape(1, 4, 1, 1, 1)
    u = read_slot(full, "u")
    assert torch.all(u[:, 0] == 2.0) and torch.all(u[:, 1] == 4.0)
    assert torch.all(read_slot(full, "w") == 3.0)


def test_tensor_slots_read_by_least_squares_with_the_trace():
    """Reading strain/stress is the pseudo-inverse of its packing matrix (xx, yy, xy, xx+yy)."""
    g = torch.Generator().manual_seed(1)
    full = torch.randn(1, 32, 2, 2, 2, generator=g, dtype=torch.float64)
    matrix = bank.packing_matrix("stress")
    channels = full[:, slot_slice("stress")].movedim(1, -1)  # (..., 4)
    expected = (torch.linalg.pinv(matrix) @ channels.unsqueeze(-1)).squeeze(-1).movedim(-1, 1)
    torch.testing.assert_close(read_slot(full, "stress"), expected)
    # an update of the trace channel alone is shared equally by xx and yy
    bumped = full.clone()
    bumped[:, 23] += 3.0
    delta = read_slot(bumped, "stress") - read_slot(full, "stress")
    torch.testing.assert_close(delta[:, 0], torch.ones_like(delta[:, 0]))
    torch.testing.assert_close(delta[:, 1], torch.ones_like(delta[:, 1]))
    torch.testing.assert_close(delta[:, 2], torch.zeros_like(delta[:, 2]))


def test_slot_masks():
    mask = slot_mask(("p", "J"))
    assert mask.shape == (32,) and mask.dtype == torch.float32
    assert mask.sum() == 6
    assert torch.all(mask[8:10] == 1) and torch.all(mask[24:28] == 1)
    assert slot_mask((), dtype=torch.bool).any().item() is False
    assert slot_mask([name for name, _ in BANK_SLOTS]).sum() == 32


def test_bad_names_and_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="unknown bank slot 'pressure'.*valid slots are: u, v, p"):
        slot_slice("pressure")
    with pytest.raises(ValueError, match="unknown bank slot"):
        pack_bank({"velocity": torch.zeros(1, 2, 3, 3, 3)})
    with pytest.raises(ValueError, match="unknown bank slot"):
        slot_mask(("u", "x"))
    with pytest.raises(ValueError, match=r"write \('rho',\)"):
        slot_mask("rho")
    with pytest.raises(ValueError, match=r"field 'v' must have shape \(B, 2, T, H, W\)"):
        pack_bank({"v": torch.zeros(1, 4, 3, 3, 3)})
    with pytest.raises(ValueError, match="has shape"):
        pack_bank({"v": torch.zeros(1, 2, 3, 3, 3), "p": torch.zeros(1, 1, 3, 3, 4)})
    with pytest.raises(ValueError, match="at least one field"):
        pack_bank({})
    with pytest.raises(ValueError, match=r"\(B, 32, T, H, W\)"):
        read_slot(torch.zeros(1, 31, 3, 3, 3), "u")


def test_pack_and_read_are_differentiable():
    fields = {
        k: v.double().requires_grad_() for k, v in random_fields().items() if k in ("u", "strain")
    }
    assert torch.autograd.gradcheck(
        lambda u, s: read_slot(pack_bank({"u": u, "strain": s}) * 1.7, "strain"),
        (fields["u"], fields["strain"]),
    )
