"""The train/val split of a WISA-format dataset: a hash of each video name, never the order."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def split_score(video_name: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by the video name and the seed (sha256-based)."""
    digest = hashlib.sha256(f"{seed}:{video_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_names(
    names: Sequence[str], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Deterministic train/val split by a hash of each video name.

    A name goes to validation when its :func:`split_score` is below ``val_fraction``, so
    a clip's side never depends on which other clips exist. One exception keeps small
    sets usable: if that leaves validation empty while ``val_fraction > 0`` and there are
    at least two names, the name with the lowest score goes to validation.

    Returns:
        (train names, val names), each in the input order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    scores = {name: split_score(name, seed) for name in names}
    val = {name for name, s in scores.items() if s < val_fraction}
    if not val and val_fraction > 0 and len(scores) >= 2:
        val = {min(scores, key=scores.__getitem__)}
    return [n for n in names if n not in val], [n for n in names if n in val]
