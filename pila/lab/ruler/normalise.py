"""Raw sub-measures → z-scores against the stored calibration (``calibration.json``).

Each raw sub-measure m of a scene becomes z = max(0, (m − median) / scale) with the median
and scale of that scene's own ground truth, as :func:`~pila.lab.ruler.calibration.calibrate`
stored them; a sub-measure that could not be measured scores :data:`UNMEASURABLE_Z`.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pila.io import read_json

UNMEASURABLE_Z = 10.0
"""Our choice: a sub-measure that cannot be measured (the object is not found) scores ten
ground-truth spreads, as badly as a clear violation."""
MAX_Z = 50.0
"""Our choice: one sub-measure contributes at most 50 spreads, so a single wild value does
not swamp the others in the mean."""
CALIBRATION_PATH = Path(__file__).with_name("calibration.json")
"""The shipped calibration, rewritten by ``pila lab calibrate``."""


@lru_cache(maxsize=4)
def load_calibration(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The stored calibration (:data:`CALIBRATION_PATH` unless ``path``)."""
    source = Path(path) if path else CALIBRATION_PATH
    if not source.is_file():
        raise FileNotFoundError(
            f"the ruler's calibration {source} is missing; write it with `pila lab calibrate`"
        )
    return read_json(source)


def normalise(
    scene: str, raw: dict[str, float], calibration: dict[str, Any] | None = None
) -> dict[str, float]:
    """Raw sub-measures → z = max(0, (m − median) / scale), capped at :data:`MAX_Z`."""
    stats = (calibration or load_calibration())["scenes"][scene]
    out = {}
    for name, value in raw.items():
        if not np.isfinite(value):
            out[name] = UNMEASURABLE_Z
        else:
            s = stats[name]
            out[name] = float(min(MAX_Z, max(0.0, (value - s["median"]) / s["scale"])))
    return out


def ruler_identity(calibration_path: str | os.PathLike | None = None) -> str:
    """What a score depends on, as a SHA-256: the ruler's and the scenes' sources (the
    measures, and the law constants and glow they read) and the calibration file.

    Two reports with the same identity were measured by the same ruler; ``pila lab
    ablate`` re-scores a finished run's videos when it changes.
    """
    digest = hashlib.sha256()
    lab = Path(__file__).resolve().parents[1]
    sources = sorted((lab / "ruler").glob("*.py")) + sorted((lab / "scenes").glob("*.py"))
    for path in [*sources, Path(calibration_path or CALIBRATION_PATH)]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
