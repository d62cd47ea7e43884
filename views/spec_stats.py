"""Statistics of the speculative-acceptance drift detector: a one-sided Welch t-test, the
per-test significance level derived from a false-alarm rate, and a change-point estimate.

Pure functions on numbers and numpy arrays; no I/O. The Student t tail comes from the
regularized incomplete beta function (continued fraction, modified Lentz), so the detector
needs no SciPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SECONDS_PER_DAY = 86_400.0
_CF_MAX_ITERATIONS = 1000
_CF_EPS = 1e-15
_TINY = 1e-300


def per_test_alpha(false_alarms_per_day: float, step_s: float, n_classes: int) -> float:
    """Bonferroni over every test a day holds: ``86400 / step_s`` evaluations x ``n_classes``.

    By the union bound the expected number of false alarms per day (and so the probability of
    any) is at most ``false_alarms_per_day``, however correlated the overlapping windows are.
    """
    if false_alarms_per_day <= 0 or step_s <= 0:
        raise ValueError(f"false_alarms_per_day ({false_alarms_per_day}) and step_s ({step_s}) must be > 0")
    tests_per_day = SECONDS_PER_DAY / step_s * max(1, n_classes)
    return min(1.0, false_alarms_per_day / tests_per_day)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (converges for x < (a + 1) / (a + b + 2))."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _CF_MAX_ITERATIONS + 1):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _CF_EPS:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc: x={x} outside [0, 1]")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0 or math.isnan(t):
        return math.nan
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


@dataclass(frozen=True, slots=True)
class WelchResult:
    t: float  # (baseline mean - current mean) / standard error: positive for a drop
    df: float  # Welch-Satterthwaite degrees of freedom
    p_value: float  # one-sided: P(a drop this large | no drop)


def welch_drop(mean_b: float, var_b: float, n_b: int, mean_c: float, var_c: float, n_c: int) -> WelchResult:
    """One-sided Welch t-test of H0 "current mean >= baseline mean" (sample variances, ddof=1).

    Welch, not Student: a drift usually changes the spread as well as the mean.
    """
    if n_b < 2 or n_c < 2:
        return WelchResult(math.nan, math.nan, math.nan)
    se_b, se_c = var_b / n_b, var_c / n_c
    se2 = se_b + se_c
    if se2 <= 0:  # constant samples: any drop is certain, none is impossible
        drop = mean_b - mean_c
        return WelchResult(math.inf if drop > 0 else 0.0, math.inf, 0.0 if drop > 0 else 1.0)
    t = (mean_b - mean_c) / math.sqrt(se2)
    df = se2 * se2 / (se_b * se_b / (n_b - 1) + se_c * se_c / (n_c - 1))
    return WelchResult(t, df, student_t_sf(t, df))


def change_point(values: np.ndarray) -> int:
    """Index of the first value after a downward mean shift in ``values`` (time order).

    The least-squares single change point: the maximum of the partial sums of deviations from
    the overall mean (a later drop makes the sum climb until the change, then fall).
    """
    if len(values) < 2:
        return 0
    partial = np.cumsum(values - values.mean())
    return int(np.argmax(partial[:-1])) + 1
