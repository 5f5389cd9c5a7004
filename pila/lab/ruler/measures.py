"""The ruler's table: per scene its measure and the floors of its sub-measures' normalisers.

A normaliser belongs to one (scene, sub-measure) pair: ``restitution_error`` of the
bouncing ball and of the colliding balls, or ``conservation`` of the melting block and of
the dye, are calibrated and floored apart.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pila.lab.ruler.fluids import (
    measure_dye_advection,
    measure_ripple_reflection,
    measure_smoke_puff,
)
from pila.lab.ruler.heat import measure_cooling_plate, measure_melting_block
from pila.lab.ruler.mechanics import (
    measure_ball_bounce,
    measure_ball_collision,
    measure_elastic_bar,
)
from pila.lab.ruler.vision import Measurement

SCENE_MEASURES: dict[str, Callable[[np.ndarray], Measurement]] = {
    "ball_bounce": measure_ball_bounce,
    "elastic_bar": measure_elastic_bar,
    "dye_advection": measure_dye_advection,
    "smoke_puff": measure_smoke_puff,
    "melting_block": measure_melting_block,
    "ball_collision": measure_ball_collision,
    "cooling_plate": measure_cooling_plate,
    "ripple_reflection": measure_ripple_reflection,
}
"""Scene name → its measuring function ``frames (F, 64, 64, 3) float → Measurement``."""

MIN_SCALE: dict[str, dict[str, float]] = {
    "ball_bounce": {
        "parabola_residual": 0.05,
        "gravity_error": 0.02,
        "restitution_error": 0.02,
        "horizontal_residual": 0.05,
        "size_change": 0.02,
        "missing": 0.02,
    },
    "elastic_bar": {
        "law_residual": 0.01,
        "period_error": 0.01,
        "damping_error": 0.02,
        "size_change": 0.02,
        "missing": 0.02,
    },
    "dye_advection": {
        "conservation": 0.01,
        "rotation_rate_error": 0.05,
        "rotation_step": 0.1,
    },
    "smoke_puff": {
        "sinking": 0.05,
        "rise_residual": 0.05,
        "narrowing": 0.05,
        "growth_residual": 0.05,
        "mass_gain": 0.01,
        "mass_step": 0.005,
    },
    "melting_block": {
        "ice_growth": 0.01,
        "conservation": 0.01,
        "puddle_shrink": 0.5,
        "melt_residual": 0.01,
        "melt_step": 0.01,
        "melt_rate_error": 0.05,  # ours: a 5 % error of the melt rate
    },
    "ball_collision": {
        "piecewise_residual": 0.05,
        "momentum_error": 0.02,
        "restitution_error": 0.02,
        "speed_gain": 0.02,
        "contact_gap": 0.02,
        "interpenetration": 0.02,
        "size_change": 0.02,
        "extra_matter": 0.01,
        "missing": 0.02,
    },
    "cooling_plate": {
        "peak_rise": 0.01,
        "rate_agreement": 0.05,
        "variance_residual": 0.5,
        "heat_step": 0.005,
        "fit_residual": 0.01,
    },
    "ripple_reflection": {
        "radius_residual": 0.05,
        "speed_error": 0.02,
        "centre_wander": 0.1,
        "missing": 0.02,
        "second_ring": 0.2,
    },
}
"""Our choice, per scene and sub-measure: the smallest spread that counts as one unit of
violation (a twentieth of a pixel, 1–2 % of a ratio), so sub-measures that are exactly 0 on
ground truth do not turn float noise into violations. The scale :func:`calibrate
<pila.lab.ruler.calibration.calibrate>` stores is the ground truth's spread, floored here.
A few floors are set by what a look does rather than by float noise: the ripple's
``second_ring`` (0.2: a second ring a fifth as strong as the first; an mp4 at CRF 35 lines
up blocks reaching about half, an uncaused second ring about 1.1) and the cooling plate's
``rate_agreement`` (0.05 in |log|, 5 %)."""
