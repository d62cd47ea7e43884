"""histogram_quantile: PromQL semantics and accuracy on the real SGLang TTFT fixture."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from enginescope.collectors.exposition import parse_exposition
from enginescope.collectors.quantile import bucket_width_bound, histogram_quantile

SGLANG = Path(__file__).parent / "fixtures/sglang/0.5.23-single-gpu"


def test_promql_edge_cases():
    bounds, counts = (1.0, 2.0, math.inf), (10.0, 20.0, 20.0)
    assert histogram_quantile(0.5, bounds, counts) == 1.0
    assert histogram_quantile(0.75, bounds, counts) == 1.5
    assert histogram_quantile(0.25, bounds, counts) == 0.5  # lowest bucket interpolates from 0
    assert histogram_quantile(1.0, (1.0, math.inf), (1.0, 3.0)) == 1.0  # +Inf bucket -> largest finite
    assert math.isnan(histogram_quantile(0.5, bounds, (0.0, 0.0, 0.0)))
    assert histogram_quantile(-0.1, bounds, counts) == -math.inf
    assert histogram_quantile(1.1, bounds, counts) == math.inf
    with pytest.raises(ValueError):
        histogram_quantile(0.5, bounds, (1.0,))


def ttft_fixture():
    """Summed TTFT buckets (both is_streaming series) and the exact observed values."""
    result = parse_exposition((SGLANG / "metrics.txt").read_text(), strict=True)
    family = next(f for f in result.families if f.name == "sglang:time_to_first_token_seconds")
    summed: dict[float, float] = {}
    for sample in family.samples:
        if sample.ref.role == "bucket":
            summed[sample.ref.bound] = summed.get(sample.ref.bound, 0.0) + sample.value
    bounds = tuple(sorted(summed))
    observations = json.loads((SGLANG / "observations.json").read_text())
    exact = sorted(
        row[0] for row in observations["observations"]["tokenizer"]["time_to_first_token_seconds"]["rows"]
    )
    return bounds, tuple(summed[b] for b in bounds), exact


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_ttft_quantile_within_bucket_width_of_exact(q):
    bounds, counts, exact = ttft_fixture()
    assert counts[-1] == len(exact)  # the fixture's buckets hold every observation
    exact_q = exact[min(len(exact) - 1, math.ceil(q * len(exact)) - 1)]
    estimate = histogram_quantile(q, bounds, counts)
    assert abs(estimate - exact_q) <= bucket_width_bound(exact_q, bounds)
