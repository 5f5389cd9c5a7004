"""Law-breaking versions of the lab's ground-truth clips: how the ruler is validated.

Legend: F frames, H, W pixel height and width; frames are (F, H, W, 3) float in [0, 1].

A ruler is trusted only when clips that break a scene's law score worse than the scene's
own ground truth. The corruptions, each a pure function of a clip (or of the scene and
the clip's seed, when the clip is rendered again):

=====================  ===================================================================
corruption             what it does
=====================  ===================================================================
``shuffled``           the frames in a random order
``time_jump``          rendered 8 frames longer, frames 12–19 dropped: time jumps 8 frames
``frozen_jump``        frame 10 held for 8 frames, then the clip resumes where it would be
``reversed``           time runs backwards (only for scenes whose law has an arrow of
                       time: all but ``dye_advection``, whose advection is reversible and
                       whose vortex turns either way)
``law:<name>``         rendered again with one law constant changed (:data:`LAW_CHANGES`)
``erased``             from frame 16 on the scene's matter (:data:`ERASE`) is painted over
                       with the backdrop: mass vanishes
``duplicated``         from frame 16 on a shifted copy of the scene's matter appears (for
                       the ripple: a second ring from the same centre, uncaused)
=====================  ===================================================================

All numbers (8 frames, frame 10, 12 and 16, the shifts, the changed constants) are our
choice: large enough that the law is visibly broken at 33 × 64 × 64, small enough that
the clip still looks like its scene.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from pila.lab.scenes import LAWS, SCENES, render_scene
from pila.lab.scenes.mechanics import ball_collision

JUMP_AT, JUMP_FRAMES = 12, 8
FREEZE_AT, FREEZE_FRAMES = 10, 8
SPLICE_AT = 16

ARROW_OF_TIME: tuple[str, ...] = tuple(s for s in SCENES if s != "dye_advection")
"""Scenes whose law is not time-symmetric (reversal breaks it)."""

LAW_CHANGES: dict[str, dict[str, dict[str, float]]] = {
    "ball_bounce": {
        "gravity_x2": {"gravity": 2 * LAWS["ball_bounce"]["gravity"]},
        "restitution_1.2": {"restitution": 1.2},
    },
    "ball_collision": {
        "restitution_1.3": {"restitution": 1.3},
        "restitution_0.5": {"restitution": 0.5},
    },
    "melting_block": {"melt_x2.5": {"melt_rate": 2.5 * LAWS["melting_block"]["melt_rate"]}},
    "dye_advection": {"omega_x2": {"omega": 2 * LAWS["dye_advection"]["omega"]}},
    "smoke_puff": {
        "sinks": {"rise": -LAWS["smoke_puff"]["rise"]},
        "mass_grows": {"dissipation": -0.02},
    },
    "elastic_bar": {
        "period_x1.5": {"period": 1.5 * LAWS["elastic_bar"]["period"]},
        "amplitude_grows": {"damping": -0.015},
    },
    "cooling_plate": {
        "diffusivity_x3": {"diffusivity": 3 * LAWS["cooling_plate"]["diffusivity"]},
        "heats_up": {"cooling": -0.03},
    },
    "ripple_reflection": {
        "wave_speed_x2": {"wave_speed": 2 * LAWS["ripple_reflection"]["wave_speed"]}
    },
}
"""Scene → corruption name → law constants to render with (each breaks the world's law)."""


# ------------------------------------------------------------------- time corruptions
def shuffled(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The frames in a random order (never the identity)."""
    order = rng.permutation(len(frames))
    while np.all(order == np.arange(len(frames))):
        order = rng.permutation(len(frames))
    return frames[order]


def frozen_jump(frames: np.ndarray, at: int = FREEZE_AT, length: int = FREEZE_FRAMES) -> np.ndarray:
    """Frame ``at`` held for ``length`` frames, then the clip resumes at its true time (a stall
    and a jump)."""
    out = frames.copy()
    out[at : at + length] = frames[at]
    return out


def reversed_time(frames: np.ndarray) -> np.ndarray:
    """Time running backwards."""
    return frames[::-1].copy()


def time_jump(
    scene: str,
    rng: np.random.Generator,
    num_frames: int,
    size: int,
    at: int = JUMP_AT,
    skip: int = JUMP_FRAMES,
) -> np.ndarray:
    """The clip rendered ``skip`` frames longer with frames ``at`` … ``at + skip − 1`` dropped."""
    longer = render_scene(scene, rng, num_frames + skip, size, size).frames
    return np.concatenate([longer[:at], longer[at + skip :]])


# ------------------------------------------------------------------ mass corruptions
def _row_fill(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Backdrop per row (H, 3): the median of each row's pixels outside ``mask`` over all frames."""
    h = frames.shape[1]
    fill = np.zeros((h, 3), np.float32)
    for y in range(h):
        keep = ~mask[:, y]  # (F, W)
        pix = frames[:, y][keep] if keep.any() else frames[:, y].reshape(-1, 3)
        fill[y] = np.median(pix, axis=0)
    return fill


def _row_distance(frames: np.ndarray) -> np.ndarray:
    """RGB distance of each pixel to its row's median colour (over frames and columns),
    (F, H, W)."""
    return np.linalg.norm(frames - np.median(frames, axis=(0, 2))[None, :, None], axis=-1)


def _dilate(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[..., 1:, :] |= out[..., :-1, :]
        grown[..., :-1, :] |= out[..., 1:, :]
        grown[..., :, 1:] |= out[..., :, :-1]
        grown[..., :, :-1] |= out[..., :, 1:]
        out = grown
    return out


def matter_mask(scene: str, frames: np.ndarray) -> np.ndarray:
    """Where the scene's matter is, (F, H, W) bool, by a simple rule per scene (for building
    corruptions)."""
    chroma = frames.max(-1) - frames.min(-1)
    if scene in ("ball_bounce", "ball_collision"):
        return _dilate(_row_distance(frames) > 0.1)
    if scene == "elastic_bar":
        return _dilate(chroma > 0.1)
    if scene == "melting_block":
        blueness = frames[..., 2] - frames[..., 0]
        return _dilate(blueness > 0.0)
    if scene == "smoke_puff":
        lum = frames.mean(-1)
        return _dilate(lum - np.median(lum, axis=(0, 2))[None, :, None] > 0.03)
    if scene == "cooling_plate":
        return (
            frames[..., 0] - frames[..., 2] > 0.02
        )  # glowing: red above blue; the cold plate is grey
    if scene == "dye_advection":
        still = np.median(frames, axis=0)
        water = np.median(still[still[..., 2] > still[..., 0] + 0.2], axis=0)
        return np.linalg.norm(frames - water, axis=-1) > 0.1
    raise ValueError(f"no matter mask for {scene!r}")


def erased(scene: str, frames: np.ndarray, start: int = SPLICE_AT) -> np.ndarray:
    """From ``start`` on the scene's matter is painted over: the backdrop (rows), the water (dye),
    the cold plate (cooling) or the still pond (ripple). For two balls only the right one goes."""
    out = frames.copy()
    if scene == "ripple_reflection":
        out[start:] = np.median(frames, axis=0)
        return out
    mask = matter_mask(scene, frames)
    if scene == "ball_collision":  # only the right-hand ball
        for k in range(len(frames)):
            count, labels, stats, centroids = cv2.connectedComponentsWithStats(
                mask[k].astype(np.uint8), connectivity=8
            )
            if count <= 1:
                continue
            big = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= 10]
            if len(big) >= 2:
                right = max(big, key=lambda i: centroids[i][0])
                mask[k] = labels == right
            else:
                mask[k] &= np.arange(frames.shape[2])[None, :] > (
                    centroids[big[0]][0] if big else 0
                )
    if scene == "dye_advection":
        still = np.median(frames, axis=0)
        fill = np.median(still[still[..., 2] > still[..., 0] + 0.2], axis=0)
        out[start:][mask[start:]] = fill
        return out
    if scene == "cooling_plate":
        out[start:][mask[start:]] = 0.3
        return out
    fill = _row_fill(frames, mask)
    for k in range(start, len(frames)):
        out[k][mask[k]] = fill[np.nonzero(mask[k])[0]]
    return out


DUPLICATE_SHIFT: dict[str, tuple[int, int]] = {
    "ball_bounce": (0, 22),
    "ball_collision": (-18, 0),
    "melting_block": (0, 22),
    "dye_advection": (6, 6),
    "smoke_puff": (0, 20),
    "elastic_bar": (16, 0),
    "cooling_plate": (0, 18),
    "ripple_reflection": (0, 0),  # the second ring starts at the first one's centre
}
"""Scene → (rows, columns) by which the copy of its matter is shifted (wrapping round)."""


def duplicated(scene: str, frames: np.ndarray, start: int = SPLICE_AT) -> np.ndarray:
    """From ``start`` on a shifted copy of the scene's matter appears (for the ripple, a second
    ring)."""
    out = frames.copy()
    dy, dx = DUPLICATE_SHIFT[scene]
    if (
        scene == "ripple_reflection"
    ):  # a second ring from the same centre, started at ``start`` without a cause
        change = frames - np.median(frames, axis=0)
        out[start:] = np.clip(frames[start:] + change[: len(frames) - start], 0, 1)
        return out
    mask = matter_mask(scene, frames)
    if scene == "dye_advection":  # copy only within the basin: the dye doubles
        still = np.median(frames, axis=0)
        basin = still[..., 2] > still[..., 0] + 0.05
        moved = np.roll(mask, (dy, dx), axis=(1, 2)) & basin[None]
    else:
        moved = np.roll(mask, (dy, dx), axis=(1, 2))
    rolled = np.roll(frames, (dy, dx), axis=(1, 2))
    if scene == "cooling_plate":  # glow adds up
        plate = np.linalg.norm(frames - 0.3, axis=-1) < 0.9
        heat = np.clip(rolled - 0.3, 0, None) * np.roll(mask, (dy, dx), axis=(1, 2))[..., None]
        out[start:] = np.where(
            plate[start:, ..., None], np.clip(frames[start:] + heat[start:], 0, 1), frames[start:]
        )
        return out
    out[start:] = np.where(moved[start:, ..., None], rolled[start:], frames[start:])
    return out


# ------------------------------------------------------------------- playback speed
TIME_DIMENSION: dict[str, dict[str, int]] = {
    "ball_bounce": {"gravity": -2},
    "elastic_bar": {"period": 1, "damping": -1},
    "dye_advection": {"omega": -1},
    "smoke_puff": {"growth_time": 1, "rise": -1, "dissipation": -1},
    "melting_block": {"melt_rate": -1},
    "cooling_plate": {"diffusivity": -1, "cooling": -1},
    "ripple_reflection": {"wave_speed": -1},
    "ball_collision": {},
}
"""Scene → law constant → its power of time (gravity is length per time²); constants not
named are dimensionless in time."""


def playback_law(scene: str, speed: float) -> dict[str, float]:
    """The law constants of ``scene`` played ``speed`` times as fast: a constant with time to
    the power p is multiplied by ``speed ** -p`` (dimensional scaling)."""
    return {
        name: LAWS[scene][name] * speed ** (-power)
        for name, power in TIME_DIMENSION[scene].items()
    }


def played_at(
    scene: str, speed: float, seed: int, index: int, num_frames: int = 33, size: int = 64
) -> np.ndarray:
    """Clip ``index`` of ``scene`` (the draw of :func:`ground_truth`) played ``speed`` times as
    fast: re-rendered with :func:`playback_law`; the collision, whose speeds are drawn,
    through its renderer's ``time_scale``."""
    rng = _rng(scene, seed, index)
    if scene == "ball_collision":
        return ball_collision(rng, num_frames, size, size, time_scale=speed).frames
    law = playback_law(scene, speed)
    return render_scene(scene, rng, num_frames, size, size, law=law).frames


# ------------------------------------------------------------------------ the table
def corruption_names(scene: str) -> list[str]:
    """The corruptions that break ``scene``'s law."""
    names = ["shuffled", "time_jump", "frozen_jump"]
    if scene in ARROW_OF_TIME:
        names.append("reversed")
    names += [f"law:{name}" for name in LAW_CHANGES[scene]]
    names += ["erased", "duplicated"]
    return names


def _rng(scene: str, seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, list(SCENES).index(scene), index])


def ground_truth(
    scene: str, seed: int, index: int, num_frames: int = 33, size: int = 64
) -> np.ndarray:
    """Clip ``index`` of ``scene`` for ``seed`` (``default_rng([seed, scene number, index])``)."""
    return render_scene(scene, _rng(scene, seed, index), num_frames, size, size).frames


def corrupt(
    scene: str, name: str, seed: int, index: int, num_frames: int = 33, size: int = 64
) -> np.ndarray:
    """Corruption ``name`` of clip ``index`` (the same draw as :func:`ground_truth`)."""
    if name == "time_jump":
        return time_jump(scene, _rng(scene, seed, index), num_frames, size)
    if name.startswith("law:"):
        law = LAW_CHANGES[scene][name[4:]]
        return render_scene(scene, _rng(scene, seed, index), num_frames, size, size, law=law).frames
    frames = ground_truth(scene, seed, index, num_frames, size)
    simple: dict[str, Callable[[], np.ndarray]] = {
        "shuffled": lambda: shuffled(frames, np.random.default_rng([seed, index, 7])),
        "frozen_jump": lambda: frozen_jump(frames),
        "reversed": lambda: reversed_time(frames),
        "erased": lambda: erased(scene, frames),
        "duplicated": lambda: duplicated(scene, frames),
    }
    if name not in simple:
        raise ValueError(
            f"unknown corruption {name!r}; valid for {scene}: {', '.join(corruption_names(scene))}"
        )
    return simple[name]()


__all__ = [
    "ARROW_OF_TIME",
    "LAW_CHANGES",
    "TIME_DIMENSION",
    "corrupt",
    "corruption_names",
    "duplicated",
    "erased",
    "frozen_jump",
    "ground_truth",
    "matter_mask",
    "played_at",
    "playback_law",
    "reversed_time",
    "shuffled",
    "time_jump",
]
