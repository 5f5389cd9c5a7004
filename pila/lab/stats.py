"""The lab's confidence intervals: the Student-t interval of a mean, and the two-level
bootstrap of a mean over training seeds and evaluation videos.

``pila lab evaluate`` (over a scene's videos) reports the Student-t interval: mean ±
t·sd/√n, with ``t`` the two-sided quantile of Student's t with n − 1 degrees of freedom
and ``sd`` the sample standard deviation (ddof 1).

``pila lab ablate`` reports :func:`two_level_bootstrap`: a variant's value varies with the
training seed and, for each seed, with the evaluation videos (their prompts and noise
draws); resampling both levels puts both variances in the interval. A value over several
scenes resamples each scene's videos apart (strata), so each scene keeps its weight.

No declared dependency offers Student's t quantile (``torch.distributions.StudentT`` has
no ``icdf``), so :func:`t_quantile` inverts the distribution's closed-form CDF for integer
degrees of freedom (Abramowitz & Stegun 26.7.3–26.7.4) by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

LEVEL = 0.95
"""Coverage of every interval the lab reports (our choice; the ``ci95`` fields)."""


def t_two_sided_cdf(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's t with ``df`` degrees of freedom (A&S 26.7.3–26.7.4).

    With θ = atan(t/√df): for odd df, (2/π)(θ + sin θ Σ_k a_k cos^(2k+1) θ); for even df,
    sin θ Σ_k b_k cos^(2k) θ, each sum running to the power df − 2.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be ≥ 1, got {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:  # 1 + (1/2)cos² + (1·3)/(2·4)cos⁴ + …
        term = total = 1.0
        for k in range(2, df - 1, 2):
            term *= cos2 * (k - 1) / k
            total += term
        return sin * total
    if df == 1:
        return 2.0 * theta / math.pi
    term = total = math.cos(theta)  # cos + (2/3)cos³ + (2·4)/(3·5)cos⁵ + …
    for k in range(3, df - 1, 2):
        term *= cos2 * (k - 1) / k
        total += term
    return 2.0 / math.pi * (theta + sin * total)


@cache
def t_quantile(df: int, level: float = LEVEL) -> float:
    """The t with P(|T| ≤ t) = ``level`` for ``df`` degrees of freedom: Student's
    (1 + level)/2 quantile, e.g. 4.3027 for df 2 and 1.9600 as df grows at level 0.95."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    low, high = 0.0, 1.0
    while t_two_sided_cdf(high, df) < level:
        low, high = high, 2.0 * high
    for _ in range(200):  # bisection down to float resolution
        mid = 0.5 * (low + high)
        if mid in (low, high):
            break
        if t_two_sided_cdf(mid, df) < level:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def mean_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """The Student-t interval (low, high) of the mean of ``values``; None for fewer than two."""
    v = np.asarray(values, float)
    if len(v) < 2:
        return None
    half = t_quantile(len(v) - 1, level) * v.std(ddof=1) / math.sqrt(len(v))
    mean = float(v.mean())
    return mean - half, mean + half


def interval(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"mean", "ci95", "n"}`` over the finite values (None and NaN left out); ``ci95`` is
    :func:`mean_interval`'s ``[low, high]``, None for fewer than two values."""
    v = [float(x) for x in values if x is not None and math.isfinite(x)]
    if not v:
        return {"mean": None, "ci95": None, "n": 0}
    bounds = mean_interval(v)
    return {
        "mean": float(np.mean(v)),
        "ci95": None if bounds is None else [float(b) for b in bounds],
        "n": len(v),
    }


# ---------------------------------------------------------------- bootstrap
BOOTSTRAP_RESAMPLES = 4000
"""Resamples of :func:`two_level_bootstrap` (ours: the percentile bounds move by well under
a tenth of the interval's width between generator seeds)."""
BOOTSTRAP_SEED = 0
"""Seed of the bootstrap's generator (ours: any fixed one; the intervals are reproducible)."""


def two_level_bootstrap(
    strata: Sequence[Sequence[Sequence[float]]],
    level: float = LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """A mean and its percentile interval from a two-level (nested) bootstrap.

    ``strata[k][s][v]``: the value of video ``v`` of stratum ``k`` (a scene) under training
    seed ``s``; every stratum has the same seeds, each seed of a stratum the same videos
    (a difference between two rows is taken per seed and video before, so it stays
    paired). The statistic is the mean over seeds of the mean over strata of the mean over
    videos. Each resample draws the seeds with replacement, then, within every drawn seed
    and stratum, the videos with replacement. The seeds are drawn first from the generator,
    so with identical videos within each seed the interval is exactly the seed-level
    bootstrap of the seed means (``strata[k][s] = [mean]``).

    Returns ``{"mean", "ci95", "n", "seeds", "videos"}``: ``n`` values in all, ``videos``
    per seed; ``ci95`` is None when neither level has two units to resample.
    """
    arrays = [np.asarray(stratum, float) for stratum in strata]  # each (S, V_k)
    if not arrays or any(a.ndim != 2 or a.size == 0 for a in arrays):
        return {"mean": None, "ci95": None, "n": 0, "seeds": 0, "videos": 0}
    num_seeds = arrays[0].shape[0]
    if any(a.shape[0] != num_seeds for a in arrays):
        raise ValueError(f"every stratum needs the same seeds, got {[a.shape for a in arrays]}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    mean = float(np.mean([a.mean(axis=1) for a in arrays]))  # strata and seeds weigh alike
    videos = sum(a.shape[1] for a in arrays)
    summary = {"mean": mean, "n": num_seeds * videos, "seeds": num_seeds, "videos": videos}
    if num_seeds < 2 and all(a.shape[1] < 2 for a in arrays):
        return {**summary, "ci95": None}
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(num_seeds, size=(resamples, num_seeds))  # (R, S)
    per_seed = np.zeros((resamples, num_seeds))
    for values in arrays:  # (S, V)
        count = values.shape[1]
        video_draws = rng.integers(count, size=(resamples, num_seeds, count))  # (R, S, V)
        per_seed += values[seed_draws[..., None], video_draws].mean(axis=-1)  # (R, S)
    statistic = per_seed.mean(axis=1) / len(arrays)  # (R,)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(statistic, [tail, 100.0 - tail])
    return {**summary, "ci95": [float(low), float(high)]}
