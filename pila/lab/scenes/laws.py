"""The lab world's law constants and the clip a scene renders.

Legend: F pixel frames, H_px, W_px pixel height and width. Units of :data:`LAWS` in
:mod:`pila.lab.scenes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

Law = Mapping[str, float]

LAWS: dict[str, dict[str, float]] = {
    # g in sizes per frame² (0.51 px/frame² at 64 px); restitution = rebound / impact speed
    "ball_bounce": {"gravity": 0.008, "restitution": 0.75},
    # relative speed after / before the impact (momentum is conserved; mass ∝ area)
    "ball_collision": {"restitution": 0.9},
    # period of the first bending mode (frames); amplitude decays as exp(−damping·t)
    "elastic_bar": {"period": 16.0, "damping": 0.015},
    # vortex angular speed at the centre (rad/frame), ω(r) = ω / (1 + (r / core)²), core in
    # basin radii
    "dye_advection": {"omega": 0.08, "core": 0.45},
    # radius r(t) = r0 + (r1 − r0)(1 − exp(−t / growth_time)); rise in sizes per frame;
    # mass ∝ exp(−dissipation·t)
    "smoke_puff": {"growth_time": 11.0, "rise": 0.0055, "dissipation": 0.01},
    # fraction of the initial ice height lost per frame; the width shrinks melt_aspect times as fast
    "melting_block": {"melt_rate": 0.018, "melt_aspect": 0.3},
    # heat-kernel variance grows by 2·diffusivity per frame (sizes²); peak × exp(−cooling·t)
    "cooling_plate": {"diffusivity": 0.0002, "cooling": 0.03},
    # ring radius grows at wave_speed (sizes per frame); wavelength in sizes
    "ripple_reflection": {"wave_speed": 0.025, "wavelength": 0.15},
}
"""The lab world's law constants, scene → name → value (units in the module docstring)."""


def scene_law(scene: str, override: Law | None) -> dict[str, float]:
    """The scene's constants with ``override`` applied; unknown names are a ``ValueError``."""
    law = dict(LAWS[scene])
    unknown = set(override or {}) - set(law)
    if unknown:
        raise ValueError(
            f"unknown law constants {sorted(unknown)} for {scene}; valid: {', '.join(law)}"
        )
    law.update({k: float(v) for k, v in (override or {}).items()})
    return law


@dataclass
class SceneClip:
    """One rendered scene.

    Attributes:
        frames: (F, H_px, W_px, 3) float32 in [0, 1].
        displacement: (F − 1, 2, H_px, W_px) float32, pixels per frame (module docstring).
        prompt: the caption.
        labels: PILA categories.
        wisa_label: the WISA phenomenon the clip would carry.
        answers: WISA-style ``q0`` (dynamics), ``q1`` (thermodynamics), ``q2`` (optics).
        phys_law: one sentence on the physics.
        params: the scene's drawn parameters (vary per clip).
        law: the law constants the clip was rendered with (:data:`LAWS`, possibly overridden).
    """

    frames: np.ndarray
    displacement: np.ndarray
    prompt: str
    labels: list[str]
    wisa_label: str
    answers: dict[str, str]
    phys_law: str
    params: dict[str, float] = field(default_factory=dict)
    law: dict[str, float] = field(default_factory=dict)


NO_DYNAMICS = "No obvious dynamic phenomenon"
NO_THERMO = "No obvious thermodynamic phenomenon"
NO_OPTICS = "No obvious optical phenomenon"
