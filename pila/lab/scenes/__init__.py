"""The physics lab's scenes: eight procedural clips whose physics is known in closed form.

Legend: F pixel frames, H_px, W_px pixel height and width; x is the column (right),
y the row (down); vector channel 0 is x.

One scene per category, each with known motion:

==================  ============================================  ==============================
scene               what happens                                  labels
==================  ============================================  ==============================
ball_bounce         a ball falls under gravity and bounces        rigid_body, collision
elastic_bar         a clamped bar oscillates (cantilever mode)    elastic
dye_advection       dye carried by a swirling vortex flow         fluid
smoke_puff          a smoke puff expands and rises                compressible_flow
melting_block       an ice block melts into a spreading puddle    fluid, phase_change, thermal
ball_collision      two balls collide head-on and rebound         rigid_body, collision
cooling_plate       a hot spot on a plate spreads and cools       thermal
ripple_reflection   ripples distort a lamp's reflection           fluid, optical
==================  ============================================  ==============================

Every scene is a pure function of a ``numpy`` generator (so of the seed) and of the
world's **law constants** (:data:`LAWS`): gravity, restitution, oscillation period and
damping, vortex angular speed, expansion, rise and dissipation, melt rate, diffusivity and
cooling, wave speed. The constants are the same for every clip of a world, so a model
trained on the scenes can learn them and the ruler (:mod:`pila.lab.ruler`) reads the
law it checks from this same table. What varies per clip (colours, sizes, start
positions and velocities, phases) is drawn from the ranges written in each scene. A
scene renders with other constants when given ``law={...}`` (e.g. gravity × 2), which is
how the ruler's tests build law-breaking clips.

Units of :data:`LAWS`: lengths in units of the frame's shorter side (``size``), time in
frames (16 fps in the lab), angles in radians. All values are our choice, picked so each
phenomenon plays out within 33 frames at 64 × 64 pixels.

Ground-truth motion (``displacement``, (F − 1, 2, H_px, W_px) float32) follows the
flow-target convention of :mod:`pila.datamodules.flow_targets`: entry k − 1 is the
displacement in pixels of the material at each pixel of frame k − 1 between frames
k − 1 and k (zero where nothing moves). It is exact for the moving bodies (the
trajectories are closed-form; collisions are solved event by event). For the ripple it
is the outward motion of the wave pattern (its phase speed), and the cooling plate does
not move at all.

Files: ``laws.py`` (:data:`LAWS`, :class:`SceneClip`), ``drawing.py`` (grids, coverage,
backdrops, striped balls), ``kinematics.py`` (bouncing, collision, rigid displacement),
one file per scene family: ``mechanics.py`` (ball_bounce, elastic_bar, ball_collision),
``fluids.py`` (dye_advection, smoke_puff, ripple_reflection), ``heat.py`` (melting_block,
cooling_plate); :data:`SCENES` and the renderers' entry points here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pila.lab.scenes.fluids import dye_advection, ripple_reflection, smoke_puff
from pila.lab.scenes.heat import cooling_plate, incandescence, melting_block
from pila.lab.scenes.kinematics import bounce_heights, collide_1d
from pila.lab.scenes.laws import LAWS, Law, SceneClip
from pila.lab.scenes.mechanics import ball_bounce, ball_collision, elastic_bar

SCENES: dict[str, Callable[..., SceneClip]] = {
    "ball_bounce": ball_bounce,
    "elastic_bar": elastic_bar,
    "dye_advection": dye_advection,
    "smoke_puff": smoke_puff,
    "melting_block": melting_block,
    "ball_collision": ball_collision,
    "cooling_plate": cooling_plate,
    "ripple_reflection": ripple_reflection,
}
"""Scene name → generator ``(rng, num_frames, height, width, law=None) → SceneClip``."""


def render_indexed(
    scene: str,
    index: int,
    seed: int,
    num_frames: int,
    height: int,
    width: int,
    law: Law | None = None,
) -> SceneClip:
    """Clip ``index`` of ``scene`` in the world of ``seed``: its rng is
    ``default_rng([seed, s, index])`` with s the scene's position in :data:`SCENES` (the rule
    every dataset of the lab renders by)."""
    rng = np.random.default_rng([seed, list(SCENES).index(scene), index])
    return render_scene(scene, rng, num_frames, height, width, law=law)


def render_scene(
    scene: str,
    rng: np.random.Generator,
    num_frames: int,
    height: int,
    width: int,
    law: Law | None = None,
) -> SceneClip:
    """Render one clip of ``scene`` (a name of :data:`SCENES`), optionally with other law
    constants."""
    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}; valid: {', '.join(SCENES)}")
    return SCENES[scene](rng, num_frames, height, width, law=law)


__all__ = [
    "LAWS",
    "SCENES",
    "Law",
    "SceneClip",
    "bounce_heights",
    "collide_1d",
    "incandescence",
    "render_indexed",
    "render_scene",
]
