"""The lab's one confidence interval (``pila.lab.stats``) against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pila.lab.stats import (
    interval,
    mean_interval,
    t_quantile,
    t_two_sided_cdf,
    two_level_bootstrap,
)

# Student's t two-sided 95 % quantiles (the 0.975 quantile), to 13 digits.
T975 = {
    1: 12.70620473617,
    2: 4.302652729749,
    3: 3.182446305284,
    4: 2.776445105198,
    7: 2.364624251593,
    10: 2.228138851986,
    11: 2.200985160092,
    30: 2.042272456301,
    63: 1.998340542521,
    1000: 1.962339080826,
}


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_the_tables(df):
    assert t_quantile(df) == pytest.approx(T975[df], rel=1e-11)


def test_t_quantile_at_other_levels_and_its_limits():
    assert t_quantile(5, 0.90) == pytest.approx(2.015048373333, rel=1e-11)
    assert t_quantile(1, 0.5) == pytest.approx(1.0, rel=1e-12)  # Cauchy: P(|T| ≤ 1) = 1/2
    assert t_quantile(20000) == pytest.approx(1.959963984540, rel=1e-4)  # → the normal's
    with pytest.raises(ValueError, match="level"):
        t_quantile(3, 1.0)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0)


def test_the_cdf_in_closed_form_for_small_df():
    t = 1.7
    assert t_two_sided_cdf(t, 1) == pytest.approx(2 / math.pi * math.atan(t))
    assert t_two_sided_cdf(t, 2) == pytest.approx(t / math.sqrt(2 + t * t))
    theta = math.atan(t / math.sqrt(3))
    three = 2 / math.pi * (theta + math.sin(theta) * math.cos(theta))
    assert t_two_sided_cdf(t, 3) == pytest.approx(three)


def test_mean_interval_is_the_student_t_interval():
    low, high = mean_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, n 3
    half = T975[2] / math.sqrt(3)
    assert (low, high) == pytest.approx((2.0 - half, 2.0 + half), rel=1e-11)
    values = np.random.default_rng(0).normal(5.0, 2.0, size=12)
    low, high = mean_interval(values)
    half = T975[11] * values.std(ddof=1) / math.sqrt(12)
    assert (low, high) == pytest.approx((values.mean() - half, values.mean() + half), rel=1e-11)
    assert mean_interval([4.0]) is None and mean_interval([]) is None


def test_interval_leaves_out_missing_values():
    s = interval([1.0, None, 2.0, float("nan"), 3.0])
    half = T975[2] / math.sqrt(3)
    assert s["n"] == 3 and s["mean"] == pytest.approx(2.0)
    assert s["ci95"] == pytest.approx([2.0 - half, 2.0 + half], rel=1e-11)
    assert interval([5.0]) == {"mean": 5.0, "ci95": None, "n": 1}
    assert interval([]) == {"mean": None, "ci95": None, "n": 0}


# ------------------------------------------------------------ two-level bootstrap
def test_zero_video_noise_reduces_to_the_seed_level_bootstrap():
    """Identical videos within each seed: exactly the bootstrap of the seed means."""
    seed_means = [1.0, 2.5, 4.0, 3.0]
    flat = two_level_bootstrap([[[m] * 6 for m in seed_means]])
    seed_level = two_level_bootstrap([[[m] for m in seed_means]])
    assert flat["ci95"] == seed_level["ci95"] and flat["mean"] == pytest.approx(np.mean(seed_means))
    assert flat["seeds"] == 4 and flat["videos"] == 6 and flat["n"] == 24
    # the seed-level percentile bootstrap of a mean: inside the range, near the normal interval
    low, high = seed_level["ci95"]
    half = 1.96 * np.std(seed_means) / 2.0
    assert 1.0 <= low < np.mean(seed_means) < high <= 4.0
    assert high - low == pytest.approx(2 * half, rel=0.25)


def test_a_single_training_seed_gets_its_interval_from_the_videos():
    """One seed, 400 videos of sd 1: the interval is the mean's, ±1.96/√400 (no seed term)."""
    videos = np.random.default_rng(7).normal(3.0, 1.0, size=400)
    result = two_level_bootstrap([[videos.tolist()]])
    low, high = result["ci95"]
    expected = 1.96 * videos.std() / np.sqrt(len(videos))
    assert high - low == pytest.approx(2 * expected, rel=0.1)
    assert low < videos.mean() < high and result["seeds"] == 1


def test_the_bootstrap_adds_the_video_variance_to_the_seed_variance():
    """Seeds spread by sd 1 and videos by sd 3 (8 per seed): wider than either level alone."""
    rng = np.random.default_rng(3)
    seed_effects = rng.normal(0.0, 1.0, size=5)
    values = seed_effects[:, None] + rng.normal(0.0, 3.0, size=(5, 8))  # (S, V)
    both = two_level_bootstrap([values.tolist()])
    seeds_only = two_level_bootstrap([[[m] for m in values.mean(axis=1)]])
    width = both["ci95"][1] - both["ci95"][0]
    # the video noise is already in the seed means, and the inner resampling adds it again:
    # the nested bootstrap is the conservative one
    assert width > seeds_only["ci95"][1] - seeds_only["ci95"][0]


def test_strata_weigh_alike_and_the_bootstrap_is_deterministic():
    """The mean is over scenes, each scene weighing the same whatever its video count; one
    seed and one video per scene leaves nothing to resample."""
    strata = [[[1.0, 1.0, 1.0, 1.0]], [[5.0, 7.0, 6.5, 5.5, 8.0, 4.5, 6.3]]]
    result = two_level_bootstrap(strata)
    assert result["mean"] == pytest.approx((1.0 + np.mean(strata[1][0])) / 2)
    assert result == two_level_bootstrap(strata)  # seeded
    assert result["ci95"] != two_level_bootstrap(strata, seed=1)["ci95"]
    assert 2.75 <= result["ci95"][0] < result["ci95"][1] <= 4.5  # only scene 2's videos vary
    assert two_level_bootstrap([[[2.0]], [[3.0]]])["ci95"] is None
    assert two_level_bootstrap([])["mean"] is None
    with pytest.raises(ValueError, match="same seeds"):
        two_level_bootstrap([[[1.0], [2.0]], [[1.0]]])
