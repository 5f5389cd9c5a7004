"""The ruler: physical law measured from the pixels of a lab scene.

Legend: F frames, H, W pixel height and width (the ruler works at the lab size, 64 × 64;
other sizes are resized), t the frame index (time in frames, as in
:data:`~pila.lab.scenes.LAWS`).

The package's public entry is :func:`measure` (a :class:`RulerResult`). For each of the
eight scenes of :mod:`pila.lab.scenes` a pure function measures the
scene's law with simple vision (background estimates, colour rules, connected
components, centroids, areas, intensity sums, least-squares fits of the law's closed
form with the world's constants read from :data:`~pila.lab.scenes.LAWS`):

==================  ==========================================================================
scene               sub-measures (raw; each ≥ 0, 0 when the law holds exactly)
==================  ==========================================================================
ball_bounce         ``parabola_residual`` (centroid height vs parabolas with the world's g,
                    px), ``gravity_error`` (|g_fit/g − 1|), ``restitution_error``
                    (|e_fit − e|), ``horizontal_residual`` (x(t) vs a line, px),
                    ``size_change`` (mean |area/median − 1|), ``missing`` (frames without
                    the ball)
ball_collision      ``piecewise_residual`` (centres vs two lines per ball meeting at the
                    impact, px), ``contact_gap`` (|centre distance at the impact −
                    r_a − r_b| / (r_a + r_b)), ``extra_matter`` (foreground beyond the balls),
                    ``momentum_error`` (|Δp| / Σ|p|, mass ∝ area), ``restitution_error``
                    (|e_fit − e|), ``speed_gain`` (relative speed after/before − 1, ≥ 0),
                    ``interpenetration`` (overlap / (r_a + r_b)), ``size_change``,
                    ``missing``
melting_block       (the ice's area is its blueness summed over the block's box, in
                    pixels) ``ice_growth`` (Σ increases of the 5-frame moving median of the
                    ice area / A0), ``conservation`` (range of ice + κ·water area / median,
                    κ the one factor that keeps it most constant: the water layer's depth
                    is unknown; areas on 5-frame moving medians), ``puddle_shrink`` (Σ
                    decreases of the puddle width's 5-frame moving median, px),
                    ``melt_residual`` (the smoothed ice area vs the world's melt law,
                    relative),
                    ``melt_step`` (largest one-frame deviation of the smoothed area from
                    it), ``melt_rate_error`` (|log r_fit / r|, the area curve's fitted
                    melt rate against the world's)
dye_advection       ``conservation`` (range of the total dye's 5-frame moving median /
                    median),
                    ``rotation_rate_error`` (| |s| − 1 |, s the fitted multiple of the
                    world's vortex ω(r)), ``rotation_step`` (largest departure from s
                    of one 4-frame window)
smoke_puff          (height, width and mass on 9-frame moving medians, the width's fit
                    excepted) ``sinking`` (Σ downward centroid steps, px),
                    ``rise_residual`` (centroid height vs the world's rise, px),
                    ``narrowing`` (Σ width decreases, px), ``growth_residual`` (width vs
                    the world's growth law, px), ``mass_gain`` (Σ mass increases / M0),
                    ``mass_step`` (largest one-step departure of the mass ratio from the
                    world's dissipation)
elastic_bar         ``law_residual`` (tip height vs the world's period and damping,
                    relative to the amplitude), ``period_error`` (|P_fit/P − 1|),
                    ``damping_error`` (|δ_fit − δ| · F, amplitude ratio units),
                    ``size_change``, ``missing``
cooling_plate       ``peak_rise`` (Σ increases of the peak's 3-frame moving median /
                    peak0), ``rate_agreement`` (|log γ_V/γ_A|: the tone exponent read
                    from the spread's growth, its upper-expectile line, at the world's
                    2D against the one read from the peak's decay at the world's
                    cooling; equal under any tone curve),
                    ``variance_residual`` (RMS of V(t) ahead of that line, in frames
                    of its growth), ``heat_step`` (largest one-step departure of the
                    peak's log-decay from the law), ``fit_residual`` (the median
                    frame's log residual of the Gaussian spot)
ripple_reflection   ``radius_residual`` (ring radius vs R0 + c·t with the world's c, px,
                    3-frame moving median of the departures, frames with the ring in
                    view),
                    ``speed_error`` (|c_fit/c − 1|), ``centre_wander`` (per-frame ring
                    centres' mean distance from their median, px), ``missing`` (frames
                    where the ring should show and does not), ``second_ring`` (a second
                    ring's energy along its track / the first's)
==================  ==========================================================================

**Normalisation** (:mod:`~pila.lab.ruler.normalise`). Each raw sub-measure m becomes
z = max(0, (m − median) / scale), where median and scale (the 95th percentile minus the
median, floored at :data:`MIN_SCALE` of that scene and sub-measure) are those of the
scene's own ground-truth clips, rendered at the lab size, half of them passed through an
mp4 round trip, by :func:`calibrate`; the numbers are data (``calibration.json`` in this
package, rewritten by ``pila lab calibrate``), not tuned literals. A sub-measure that
cannot be measured at all (no object found) scores
:data:`~pila.lab.ruler.normalise.UNMEASURABLE_Z`, and no z exceeds
:data:`~pila.lab.ruler.normalise.MAX_Z`. The **violation** is the root mean square of the
z's (:func:`violation_of`): about 0 on ground truth, and 1 means "off by one ground-truth
spread", in the RMS over the scene's sub-measures. The square (our choice, over a plain
mean) lets one clearly broken measure count for more than many slightly moved ones: a law
break moves one or two sub-measures far (a rate, a conservation), a change of look (a codec,
a tone curve) moves most of them a little (``benchmarks/results/lab_ruler_robustness.md``).

**Scene fidelity** (:mod:`~pila.lab.ruler.fidelity`): a Gaussian nearest-prototype classifier over
simple appearance and motion features (:func:`appearance_features`), prototypes fitted on
ground-truth clips of the eight scenes and on blurred, colour-shifted, grainy variants of
them (:func:`appearance_variant`; also in the calibration file), plus a
"none of them" class so a video far from every scene (noise, a blank frame) gets low
fidelity. The fidelity is the posterior probability of the prompted scene.

Files: ``vision.py`` (lab-size frames, backgrounds, components, small fits),
``mechanics.py`` (ball_bounce, ball_collision, elastic_bar), ``fluids.py``
(dye_advection, smoke_puff, ripple_reflection), ``heat.py`` (melting_block,
cooling_plate), ``measures.py`` (the scene → measure table and the normalisers' floors),
``normalise.py``, ``fidelity.py``, ``calibration.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pila.lab.ruler.calibration import calibrate, write_calibration
from pila.lab.ruler.fidelity import (
    appearance_features,
    appearance_variant,
    scene_fidelity,
    scene_probabilities,
)
from pila.lab.ruler.measures import MIN_SCALE, SCENE_MEASURES
from pila.lab.ruler.normalise import load_calibration, normalise, ruler_identity
from pila.lab.ruler.vision import (
    LAB_FRAMES,
    LAB_SIZE,
    MIN_FRAMES,
    Measurement,
    prepare,
    to_lab_frames,
)


@dataclass
class RulerResult:
    """The ruler's verdict on one video.

    Attributes:
        scene: the scene measured against.
        violation: root mean square of the normalised sub-measures (≥ 0; ≈ 0 on ground
            truth; :func:`violation_of`).
        fidelity: probability that the video shows ``scene``.
        raw: raw sub-measures (NaN: not measurable).
        normalised: sub-measure → z.
        trace: the measured quantity against the law (for figures).
    """

    scene: str
    violation: float
    fidelity: float
    raw: dict[str, float]
    normalised: dict[str, float]
    trace: dict[str, Any]

    def measures(self) -> dict[str, Any]:
        """JSON-ready sub-measures: raw (None when not measurable) and normalised."""
        return {
            name: {"raw": (float(v) if np.isfinite(v) else None), "z": self.normalised[name]}
            for name, v in self.raw.items()
        }


def violation_of(z: dict[str, float]) -> float:
    """A scene's violation from its sub-measures' z's: their root mean square."""
    return float(np.sqrt(np.mean(np.square(list(z.values())))))


def measure(
    frames: np.ndarray, scene: str, calibration: dict[str, Any] | None = None
) -> RulerResult:
    """Measure one video (F, H, W, 3; uint8 or float in [0, 1]) against ``scene``'s law.

    Raises:
        ValueError: an unknown scene, frames of the wrong shape, or fewer than
            :data:`MIN_FRAMES` frames.
    """
    if scene not in SCENE_MEASURES:
        raise ValueError(f"unknown scene {scene!r}; valid: {', '.join(SCENE_MEASURES)}")
    lab = prepare(frames)
    if lab.shape[0] < MIN_FRAMES:
        raise ValueError(
            f"a video of {lab.shape[0]} frames is too short to measure (at least {MIN_FRAMES})"
        )
    calibration = calibration or load_calibration()
    m = SCENE_MEASURES[scene](lab)
    z = normalise(scene, m.raw, calibration)
    fidelity = scene_fidelity(lab, scene, calibration)
    return RulerResult(scene, violation_of(z), fidelity, m.raw, z, m.trace)


__all__ = [
    "LAB_FRAMES",
    "LAB_SIZE",
    "MIN_FRAMES",
    "MIN_SCALE",
    "Measurement",
    "RulerResult",
    "SCENE_MEASURES",
    "appearance_features",
    "appearance_variant",
    "calibrate",
    "load_calibration",
    "measure",
    "ruler_identity",
    "normalise",
    "prepare",
    "scene_fidelity",
    "scene_probabilities",
    "to_lab_frames",
    "violation_of",
    "write_calibration",
]
