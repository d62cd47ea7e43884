"""The one quantile function every consumer uses (PromQL ``histogram_quantile`` semantics).

Quantiles are computed from bucket counts summed across intervals/replicas first;
percentiles are never averaged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def histogram_quantile(q: float, bounds: Sequence[float], cumulative_counts: Sequence[float]) -> float:
    """Estimate the q-quantile from cumulative ``le`` buckets, as PromQL does.

    Linear interpolation inside the bucket that holds the rank; the lowest bucket
    interpolates from 0 (or returns its bound if that bound is <= 0); a rank in the
    +Inf bucket returns the largest finite bound. Returns NaN with no observations.
    """
    if len(bounds) != len(cumulative_counts) or not bounds:
        raise ValueError(f"bounds ({len(bounds)}) and counts ({len(cumulative_counts)}) differ or are empty")
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    total = cumulative_counts[-1]
    if not total or total <= 0 or math.isnan(total):
        return math.nan
    rank = q * total
    idx = _first_bucket_reaching(rank, cumulative_counts)
    if math.isinf(bounds[idx]):
        return _largest_finite(bounds)
    upper = bounds[idx]
    if idx == 0:
        if upper <= 0:
            return upper
        lower, below = 0.0, 0.0
    else:
        lower, below = bounds[idx - 1], cumulative_counts[idx - 1]
    in_bucket = cumulative_counts[idx] - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


def _first_bucket_reaching(rank: float, cumulative_counts: Sequence[float]) -> int:
    for idx, count in enumerate(cumulative_counts):
        if count >= rank:
            return idx
    return len(cumulative_counts) - 1


def _largest_finite(bounds: Sequence[float]) -> float:
    finite = [b for b in bounds if not math.isinf(b)]
    return finite[-1] if finite else math.nan


def bucket_width_bound(value: float, bounds: Sequence[float]) -> float:
    """Width of the bucket holding ``value``: the worst-case interpolation error."""
    previous = 0.0
    for bound in bounds:
        if value <= bound:
            return (bound - previous) if not math.isinf(bound) else math.inf
        previous = bound
    return math.inf
