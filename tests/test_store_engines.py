"""Other engines read the store's Delta tables with our answers: DuckDB (enginescope's views),
Polars (``scan_delta``) and ClickHouse (chdb, ``deltaLakeLocal``) give the same row counts and
the same TTFT p99 per minute per replica (buckets summed by each engine, never percentiles
averaged; the interpolation is PromQL's, ``collectors.quantile.histogram_quantile``)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest

from enginescope.collectors.quantile import histogram_quantile
from enginescope.store import open_store
from tests.history import Fleet, Incident, generate

START = dt.datetime(2026, 3, 1, 23, 40, tzinfo=dt.UTC)  # crosses midnight: two date partitions
TABLES = ("signals", "histograms", "histograms_1m", "signals_1m", "requests", "events")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("engines")
    generate(path, Fleet(START, 1800, replicas=2, incidents=[Incident("spike", 600, 300)]))
    return path


def _duck(store: Path) -> tuple[dict[str, int], dict[tuple, float]]:
    con = open_store(store)
    counts = {t: con.execute(f"SELECT count(*) FROM {t}_partials" if t.endswith("_1m") else
                             f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}  # fmt: skip
    rows = con.execute("""
        SELECT epoch(ts)::BIGINT, replica, histogram_quantile(0.99, bounds, sum_buckets(counts))
        FROM histograms_1m WHERE signal = 'ttft_seconds' GROUP BY ts, replica, bounds""").fetchall()
    return counts, {(m, r): p for m, r, p in rows if p is not None}


def _polars(store: Path) -> tuple[dict[str, int], dict[tuple, float]]:
    import polars as pl

    counts = {t: pl.scan_delta(str(store / t)).select(pl.len()).collect().item() for t in TABLES}
    frame = (
        pl.scan_delta(str(store / "histograms_1m"))
        .filter(pl.col("signal") == "ttft_seconds")
        .with_columns(minute=pl.col("ts").dt.epoch("s"), i=pl.int_ranges(pl.col("counts").list.len()))
        .explode("counts", "i")
        .group_by("minute", "replica", "i")
        .agg(pl.col("counts").sum(), pl.col("bounds").first())
        .sort("i")
        .group_by("minute", "replica")
        .agg(pl.col("counts"), pl.col("bounds").first())
        .collect()
    )
    return counts, _quantiles(
        (m, r, b, c) for m, r, c, b in frame.select("minute", "replica", "counts", "bounds").rows()
    )


def _chdb(store: Path) -> tuple[dict[str, int], dict[tuple, float]]:
    import chdb

    def rows(sql: str) -> list[list[str]]:
        text = str(chdb.query(sql, "TabSeparated")).strip()
        return [line.split("\t") for line in text.splitlines()]

    counts = {t: int(rows(f"SELECT count() FROM deltaLakeLocal('{store / t}')")[0][0]) for t in TABLES}
    sums = rows(f"""
        SELECT toUnixTimestamp(ts), replica, any(bounds), sumForEach(counts)
        FROM deltaLakeLocal('{store / "histograms_1m"}') WHERE signal = 'ttft_seconds'
        GROUP BY ts, replica""")
    parsed = ((int(m), r, _floats(b), _floats(c)) for m, r, b, c in sums)
    return counts, _quantiles(parsed)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.strip("[]").split(",")]


def _quantiles(groups) -> dict[tuple, float]:
    out = {}
    for minute, replica, bounds, counts in groups:
        bounds = [math.inf if b in (math.inf, "inf") else float(b) for b in bounds]
        if counts and counts[-1] > 0:
            out[(int(minute), replica)] = histogram_quantile(0.99, bounds, counts)
    return out


def test_duckdb_polars_and_clickhouse_agree(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(store)  # chdb's file functions only read below the working directory
    duck_counts, duck_p99 = _duck(store)
    assert duck_counts["histograms"] > 0 and len(duck_p99) >= 2 * 29  # 30 minutes x 2 replicas
    for name, read in (("polars", _polars), ("chdb", _chdb)):
        counts, p99 = read(store)
        assert counts == duck_counts, name
        assert p99.keys() == duck_p99.keys(), name
        for key, value in duck_p99.items():
            assert p99[key] == pytest.approx(value, rel=1e-12), (name, key)
