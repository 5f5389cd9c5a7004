"""The 32-channel operational physical attribute bank (pila-method.md §1, paper Eq. 12).

The bank is a fixed contract of ten field-proxy slots in one order. Each slot stores a
proxy with a few *components* (a scalar, a 2-vector, or a symmetric 2×2 tensor) spread
over the slot's channels:

    slot     width  components  channels
    u        4      2 (x, y)    x, y, x, y
    v        4      2 (x, y)    x, y, x, y
    p        2      1           p, p
    rho      2      1           ρ, ρ
    T        2      1           T, T
    phi      2      1           φ, φ
    strain   4      3           xx, yy, xy, trace (= xx + yy)
    stress   4      3           xx, yy, xy, trace (= xx + yy)
    J        4      2 (x, y)    x, y, x, y
    w        4      1           w, w, w, w

Packing writes each proxy through its slot's *packing matrix* (C_slot × K: a copy per
repeated channel, and ``xx + yy`` for the trace channel); reading applies the matrix's
pseudo-inverse. For repeated channels the pseudo-inverse is the average of the copies.
For strain and stress it is the least-squares fit of ``(xx, yy, xy)`` to the four
channels ``(a, b, c, s)``, reading ``s`` as a second observation of ``xx + yy``:

    xx = a + (s − a − b) / 3,   yy = b + (s − a − b) / 3,   xy = c

so a bank whose trace channel agrees with its diagonal reads back exactly, an update
that moves only the trace channel is shared equally by ``xx`` and ``yy``, and
``read_slot(pack_bank(f)) == f`` for every slot.

Shapes: B batch, C channels (32 for the bank), K components of one slot, T latent
frames, H, W latent height and width.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

BANK_SLOTS: tuple[tuple[str, int], ...] = (
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
"""Ordered ``(slot name, channel width)`` pairs: the 32-channel layout of the bank.
[paper, App. A.1 (Eq. 12): the ten slots in this order, 32 channels, u, v and w 4 channels
wide; ours: the widths of the other slots, which were lost]"""

BANK_CHANNELS = sum(width for _, width in BANK_SLOTS)
"""Total number of bank channels (32)."""

SLOT_NAMES: tuple[str, ...] = tuple(name for name, _ in BANK_SLOTS)
"""Slot names in bank order."""

SLOT_WIDTHS: dict[str, int] = dict(BANK_SLOTS)
"""Channel width of each slot."""

SLOT_COMPONENTS: dict[str, int] = {
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
"""Number of components of each proxy (strain and stress are ``(xx, yy, xy)``)."""

TENSOR_SLOTS: tuple[str, ...] = ("strain", "stress")
"""Slots holding a symmetric 2×2 tensor ``(xx, yy, xy)`` plus a trace channel."""


def _slot_offsets() -> dict[str, int]:
    offsets: dict[str, int] = {}
    start = 0
    for name, width in BANK_SLOTS:
        offsets[name] = start
        start += width
    return offsets


_OFFSETS = _slot_offsets()


def _check_slot(name: str) -> None:
    if name not in SLOT_WIDTHS:
        raise ValueError(f"unknown bank slot {name!r}; valid slots are: {', '.join(SLOT_NAMES)}")


def slot_slice(name: str) -> slice:
    """Channel range of slot ``name`` in the bank (e.g. ``slot_slice("p") == slice(8, 10)``)."""
    _check_slot(name)
    start = _OFFSETS[name]
    return slice(start, start + SLOT_WIDTHS[name])


def packing_matrix(name: str, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Packing matrix (C_slot, K) of slot ``name``: channels = matrix @ components."""
    _check_slot(name)
    width, comps = SLOT_WIDTHS[name], SLOT_COMPONENTS[name]
    matrix = torch.zeros(width, comps, dtype=dtype)
    if name in TENSOR_SLOTS:
        matrix[0, 0] = matrix[1, 1] = matrix[2, 2] = 1.0  # xx, yy, xy
        matrix[3, 0] = matrix[3, 1] = 1.0  # trace
    else:
        for channel in range(width):
            matrix[channel, channel % comps] = 1.0  # repeated copies
    return matrix


def _check_components(name: str, tensor: Tensor) -> None:
    comps = SLOT_COMPONENTS[name]
    if tensor.ndim != 5 or tensor.shape[1] != comps:
        raise ValueError(
            f"field {name!r} must have shape (B, {comps}, T, H, W) with its {comps} "
            f"component(s), got {tuple(tensor.shape)}"
        )


def _check_bank(bank: Tensor) -> None:
    if bank.ndim != 5 or bank.shape[1] != BANK_CHANNELS:
        raise ValueError(
            f"the bank must have shape (B, {BANK_CHANNELS}, T, H, W), got {tuple(bank.shape)}"
        )


def pack_slot(name: str, components: Tensor) -> Tensor:
    """Spread a proxy (B, K, T, H, W) over its slot's channels → (B, C_slot, T, H, W)."""
    _check_slot(name)
    _check_components(name, components)
    if name in TENSOR_SLOTS:
        trace = components[:, 0:1] + components[:, 1:2]  # (B, 1, T, H, W)
        return torch.cat([components, trace], dim=1)  # (B, 4, T, H, W)
    repeats = SLOT_WIDTHS[name] // SLOT_COMPONENTS[name]
    return components.repeat(1, repeats, 1, 1, 1)  # (B, C_slot, T, H, W)


def pack_bank(fields: Mapping[str, Tensor]) -> Tensor:
    """Pack named proxies in component form into the bank (B, 32, T, H, W).

    Args:
        fields: slot name → (B, K, T, H, W) tensor with K = ``SLOT_COMPONENTS[name]``.
            Slots absent from ``fields`` are written as exact zeros. At least one field
            is needed (it fixes B, T, H, W, dtype and device).

    Returns:
        The bank (B, 32, T, H, W) in ``BANK_SLOTS`` order.
    """
    for name in fields:
        _check_slot(name)
    if not fields:
        raise ValueError("pack_bank needs at least one field to know the bank's shape")
    reference = next(iter(fields.values()))
    _check_components(next(iter(fields)), reference)
    batch, _, frames, height, width = reference.shape
    parts = []
    for name, slot_width in BANK_SLOTS:
        tensor = fields.get(name)
        if tensor is None:
            parts.append(reference.new_zeros(batch, slot_width, frames, height, width))
            continue
        _check_components(name, tensor)
        if (tensor.shape[0], *tensor.shape[2:]) != (batch, frames, height, width):
            raise ValueError(
                f"field {name!r} has shape {tuple(tensor.shape)} but the other fields have "
                f"(B, T, H, W) = {(batch, frames, height, width)}"
            )
        parts.append(pack_slot(name, tensor))
    return torch.cat(parts, dim=1)  # (B, 32, T, H, W)


def read_slot(bank: Tensor, name: str) -> Tensor:
    """Read slot ``name`` of the bank back to its components (B, K, T, H, W).

    Repeated channels are averaged. Strain and stress are read by least squares with
    the trace channel as a second observation of ``xx + yy`` (see the module docstring),
    so ``read_slot(pack_bank({name: f}), name)`` returns ``f``.
    """
    _check_slot(name)
    _check_bank(bank)
    channels = bank[:, slot_slice(name)]  # (B, C_slot, T, H, W)
    if name in TENSOR_SLOTS:
        a, b, c, s = channels.unbind(dim=1)
        excess = (s - a - b) / 3.0  # (B, T, H, W)
        return torch.stack([a + excess, b + excess, c], dim=1)  # (B, 3, T, H, W)
    comps = SLOT_COMPONENTS[name]
    repeats = SLOT_WIDTHS[name] // comps
    if repeats == 1:
        return channels
    batch, _, frames, height, width = channels.shape
    copies = channels.reshape(batch, repeats, comps, frames, height, width)  # (B, R, K, T, H, W)
    return copies.mean(dim=1)  # (B, K, T, H, W)


def unpack_bank(bank: Tensor) -> dict[str, Tensor]:
    """Every slot of the bank in component form: slot name → (B, K, T, H, W)."""
    return {name: read_slot(bank, name) for name in SLOT_NAMES}


def slot_mask(
    names: Iterable[str],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Channel mask (32,): 1 on the channels of the named slots, 0 elsewhere."""
    if isinstance(names, str):
        raise ValueError(
            f"slot_mask takes a collection of slot names, got the string {names!r}; "
            f"write ({names!r},)"
        )
    mask = torch.zeros(BANK_CHANNELS, device=device, dtype=dtype)
    for name in names:
        _check_slot(name)
        mask[slot_slice(name)] = 1.0
    return mask
