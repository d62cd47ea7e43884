"""SQL ``histogram_quantile`` / ``sum_buckets`` against the Python reference on random cases."""

from __future__ import annotations

import math
import random

import duckdb
import pytest

from enginescope.collectors.quantile import histogram_quantile
from enginescope.store import open_store


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    return open_store(tmp_path_factory.mktemp("empty-store"))


def _random_case(rng: random.Random) -> tuple[float, list[float], list[float]]:
    n = rng.randint(1, 8)
    start = rng.choice([-1.0, 0.0, 0.001, 0.05])
    bounds = sorted({round(start + rng.random() * 10, rng.randint(0, 4)) for _ in range(n)})
    if rng.random() < 0.8:
        bounds.append(math.inf)
    cumulative, total = [], 0.0
    for _ in bounds:
        total += rng.choice([0.0, 0.0, 1.0, 3.0, rng.random() * 100])
        cumulative.append(total)
    q = rng.choice([0.0, 0.5, 0.9, 0.99, 1.0, rng.random(), -0.1, 1.5, math.nan])
    return q, bounds, cumulative


def _same(sql_value: float | None, py_value: float) -> bool:
    if math.isnan(py_value):
        return sql_value is None  # SQL gives NULL where Python gives NaN
    return sql_value == py_value  # same operations in the same order: exact


def test_macro_matches_python_on_random_cases(con: duckdb.DuckDBPyConnection) -> None:
    rng = random.Random(20261128)
    cases = [_random_case(rng) for _ in range(3000)]
    rows = con.execute(
        "SELECT histogram_quantile(c.q, c.b, c.k) FROM unnest($cases) AS t(c)",
        {"cases": [{"q": q, "b": b, "k": k} for q, b, k in cases]},
    ).fetchall()
    mismatches = [
        (case, got[0], histogram_quantile(*case))
        for case, got in zip(cases, rows, strict=True)
        if not _same(got[0], histogram_quantile(*case))
    ]
    assert not mismatches, mismatches[:5]
    assert sum(1 for q, _, k in cases if 0 <= q <= 1 and k[-1] > 0) > 1000  # the interesting path ran


@pytest.mark.parametrize(
    ("q", "bounds", "counts", "expected"),
    [
        (0.5, [1.0, 2.0, math.inf], [2.0, 4.0, 4.0], 1.0),
        (0.75, [1.0, 2.0, math.inf], [2.0, 4.0, 4.0], 1.5),
        (0.99, [1.0, 2.0, math.inf], [0.0, 1.0, 10.0], 2.0),  # +Inf bucket -> largest finite bound
        (0.5, [1.0, math.inf], [0.0, 0.0], None),  # no observations
    ],
)
def test_macro_known_values(con, q, bounds, counts, expected) -> None:
    got = con.execute("SELECT histogram_quantile($q, $b, $c)", {"q": q, "b": bounds, "c": counts}).fetchone()[
        0
    ]
    assert got == expected


def test_mismatched_lengths_raise(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(duckdb.Error, match="equal length"):
        con.execute("SELECT histogram_quantile(0.5, [1.0, 2.0], [1.0])").fetchall()


def test_sum_buckets_sums_elementwise_per_group(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute(
        """SELECT g, sum_buckets(c) FROM (VALUES ('a', [1.0, 2.0, 3.0]), ('a', [10.0, 20.0, 30.0]),
           ('b', [5.0, 5.0, 6.0])) t(g, c) GROUP BY g ORDER BY g"""
    ).fetchall()
    assert rows == [("a", [11.0, 22.0, 33.0]), ("b", [5.0, 5.0, 6.0])]
