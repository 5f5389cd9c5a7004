"""The lab's confidence intervals: the mean and its Student-t interval.

``pila lab evaluate`` (over a scene's videos) and ``pila lab ablate`` (over training seeds,
or over evaluation videos) report the same interval: mean ± t·sd/√n, with ``t`` the
two-sided quantile of Student's t with n − 1 degrees of freedom and ``sd`` the sample
standard deviation (ddof 1).

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
