"""The lab's one confidence interval (``pila.lab.stats``) against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pila.lab.stats import interval, mean_interval, t_quantile, t_two_sided_cdf

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
