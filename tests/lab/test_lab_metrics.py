"""The lab's ruler: ground truth sits near 0, every law-breaking corruption scores above it,
scene fidelity tells the scenes apart, and odd inputs never crash or give NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pila.io import read_video, write_video
from pila.lab import corruptions as C
from pila.lab import ruler as M
from pila.lab.ruler import fluids, heat, mechanics
from pila.lab.scenes import SCENES

SEED = 101  # disjoint from the calibration's seed (1234) and the benchmark's (2024)
GT_CLIPS = 3
CORRUPTED_CLIPS = 2
NEAR_ZERO = 1.0
"""Our bound for "near 0": on average less than one ground-truth spread per sub-measure."""


@pytest.fixture(scope="module")
def ground_truth() -> dict[str, list[M.RulerResult]]:
    return {s: [M.measure(C.ground_truth(s, SEED, i), s) for i in range(GT_CLIPS)] for s in SCENES}


@pytest.mark.parametrize("scene", list(SCENES))
def test_ground_truth_sits_near_zero(ground_truth, scene):
    for result in ground_truth[scene]:
        assert 0 <= result.violation < NEAR_ZERO, (scene, result.normalised)
        assert result.fidelity > 0.9
        assert all(math.isfinite(v) for v in result.raw.values()), result.raw


@pytest.mark.parametrize("scene", list(SCENES))
def test_every_corruption_scores_above_every_ground_truth_clip(ground_truth, scene):
    worst_truth = max(r.violation for r in ground_truth[scene])
    for name in C.corruption_names(scene):
        for i in range(CORRUPTED_CLIPS):
            result = M.measure(C.corrupt(scene, name, SEED, i), scene)
            assert result.violation > worst_truth, (
                scene,
                name,
                i,
                result.violation,
                worst_truth,
                result.normalised,
            )


def test_reversal_is_only_a_corruption_where_time_has_an_arrow():
    assert "reversed" not in C.corruption_names("dye_advection")
    assert all("reversed" in C.corruption_names(s) for s in SCENES if s != "dye_advection")
    assert all(any(n.startswith("law:") for n in C.corruption_names(s)) for s in SCENES)


def _raw(scene: str, corruption: str | None = None) -> dict[str, float]:
    """The scene's own measure on clip 0 of ``SEED`` (or on a corruption of it): raw values."""
    if corruption is None:
        frames = C.ground_truth(scene, SEED, 0)
    else:
        frames = C.corrupt(scene, corruption, SEED, 0)
    return M.SCENE_MEASURES[scene](M.prepare(frames)).raw


def test_law_constants_measured_on_ground_truth():
    """The fitted constants match the world's: g, restitution, period, ω, wave speed,
    diffusivity."""
    assert M.SCENE_MEASURES["ball_bounce"] is mechanics.measure_ball_bounce
    assert M.SCENE_MEASURES["dye_advection"] is fluids.measure_dye_advection
    assert M.SCENE_MEASURES["cooling_plate"] is heat.measure_cooling_plate
    bounce = _raw("ball_bounce")
    assert bounce["gravity_error"] < 0.03 and bounce["restitution_error"] < 0.03
    assert _raw("elastic_bar")["period_error"] < 0.02
    assert _raw("dye_advection")["rotation_rate_error"] < 0.06
    assert _raw("ripple_reflection")["speed_error"] < 0.1
    # the tone exponent read from the spread at the world's 2D and from the decay agree
    assert _raw("cooling_plate")["rate_agreement"] < 0.2
    collision = _raw("ball_collision")
    assert collision["restitution_error"] < 0.05 and collision["momentum_error"] < 0.2
    # a changed constant is measured as changed
    assert _raw("ball_bounce", "law:gravity_x2")["gravity_error"] > 0.5
    assert _raw("ripple_reflection", "law:wave_speed_x2")["speed_error"] > 0.5
    assert _raw("cooling_plate", "law:diffusivity_x3")["rate_agreement"] > 0.6  # log 3 ≈ 1.1


def test_fidelity_tells_the_scenes_apart():
    correct = total = 0
    for scene in SCENES:
        for i in range(4):
            probs = M.scene_probabilities(M.prepare(C.ground_truth(scene, SEED + 1, i)))
            assert math.isclose(sum(probs.values()), 1.0, rel_tol=1e-6)
            correct += max(probs, key=probs.get) == scene
            total += 1
    assert correct / total >= 0.95


def test_fidelity_reads_blurred_off_colour_clips_as_their_scene():
    """A video that shows a scene badly (blur, colour shift, grain) is still that scene; a scene is
    never another."""
    rng = np.random.default_rng(5)
    hits = []
    for scene in SCENES:
        for i in range(3):
            variant = M.appearance_variant(C.ground_truth(scene, SEED + 2, i), rng)
            probs = M.scene_probabilities(M.prepare(variant))
            hits.append(max(probs, key=probs.get) == scene)
            assert probs["none"] < 0.5, (scene, i, probs["none"])
    assert np.mean(hits) >= 0.95


def test_appearance_variant_changes_the_look_within_its_ranges():
    clip = C.ground_truth("cooling_plate", SEED, 0)
    variant = M.appearance_variant(clip, np.random.default_rng(0))
    assert variant.shape == clip.shape and variant.dtype == np.float32
    assert 0.0 <= variant.min() and variant.max() <= 1.0
    diff = np.abs(variant - clip).mean()
    assert 0.005 < diff < 0.15, diff


@pytest.mark.parametrize(
    "scene", ["ball_bounce", "dye_advection", "cooling_plate", "ripple_reflection"]
)
def test_mp4_round_trip_keeps_ground_truth_near_zero(tmp_path, scene):
    frames = C.ground_truth(scene, SEED, 0)
    path = write_video(tmp_path / f"{scene}.mp4", frames, fps=16)
    decoded, _ = read_video(path)
    result = M.measure(decoded, scene)
    assert result.violation < NEAR_ZERO, result.normalised
    assert result.fidelity > 0.9


def _odd_videos() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    real = C.ground_truth("ball_bounce", SEED, 0)
    return {
        "noise": rng.random((33, 64, 64, 3), dtype=np.float32),
        "blank": np.zeros((33, 64, 64, 3), np.float32),
        "grey": np.full((33, 64, 64, 3), 128, np.uint8),
        "nan": np.where(rng.random((33, 64, 64, 1)) < 0.1, np.nan, real).astype(np.float32),
        "blurred": np.stack([np.repeat(np.repeat(f[::8, ::8], 8, 0), 8, 1) for f in real]),
        "other_size": np.stack([np.kron(f, np.ones((1, 2, 1))) for f in real[:, :48]]),  # 48 × 128
        "few_frames": real[:14],
    }


@pytest.mark.parametrize("scene", list(SCENES))
def test_odd_inputs_never_crash_or_give_nan(scene):
    for name, frames in _odd_videos().items():
        result = M.measure(frames, scene)
        assert math.isfinite(result.violation) and result.violation >= 0, (name, result.normalised)
        assert 0.0 <= result.fidelity <= 1.0, name
        if name in ("noise", "blank", "grey"):
            assert result.fidelity < 0.5, (name, result.fidelity)
            assert result.violation > NEAR_ZERO, (name, result.normalised)


def test_too_short_or_malformed_is_an_error():
    with pytest.raises(ValueError, match="too short"):
        M.measure(np.zeros((5, 64, 64, 3), np.float32), "ball_bounce")
    with pytest.raises(ValueError, match="shape"):
        M.measure(np.zeros((33, 64, 64), np.float32), "ball_bounce")
    with pytest.raises(ValueError, match="unknown scene"):
        M.measure(np.zeros((33, 64, 64, 3), np.float32), "volcano")


@pytest.mark.parametrize("scene", ["smoke_puff", "cooling_plate", "ripple_reflection"])
def test_stored_calibration_is_what_calibrate_computes(scene):
    """The shipped normalisers are what the measures give now (the cooling plate and the
    ripple were last measured again when their readings changed)."""
    stored = M.load_calibration()
    settings = stored["settings"]
    assert set(stored["scenes"]) == set(SCENES) and set(stored["fidelity"]) == set(SCENES)
    again = M.calibrate(
        count=settings["count"], seed=settings["seed"], crf=settings["crf"], scenes=(scene,)
    )
    for name, stats in again["scenes"][scene].items():
        assert stats["median"] == pytest.approx(
            stored["scenes"][scene][name]["median"], rel=1e-6, abs=1e-9
        )
        assert stats["scale"] == pytest.approx(
            stored["scenes"][scene][name]["scale"], rel=1e-6, abs=1e-9
        )
