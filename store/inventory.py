"""The series inventory: which series each replica's engine exposes, idle ones included.

``histograms`` keeps only intervals with new observations (an idle TTFT series adds no row), so
on its own it cannot tell "idle" from "not scraped". The inventory can: each writer records a
series when it first sees it and again every ``heartbeat_s`` while the engine keeps exposing it,
into the ``series_log`` table. The ``series`` view folds the log into one row per (replica,
metric, labels) with ``first_seen`` and ``last_seen``, so a series idle for an hour still shows
``last_seen`` within ``heartbeat_s`` of now, while one the engine stopped exposing does not.
Name drift between engine versions is a query over it.
"""

from __future__ import annotations

from dataclasses import dataclass

from enginescope.collectors.model import Batch, Identity, Labels

DEFAULT_HEARTBEAT_S = 600.0


@dataclass(frozen=True, slots=True)
class InventoryRow:
    """One sighting of a series (``series_log`` table): ``ts_s`` is when it was last seen."""

    ts_s: float
    metric: str
    type: str
    labels: Labels
    bounds: tuple[float, ...]
    first_seen_s: float


@dataclass(slots=True)
class _Seen:
    first_s: float
    logged_s: float


class SeriesInventory:
    """Turns scrapes into inventory rows: a series' first sighting, then one per heartbeat."""

    def __init__(self, heartbeat_s: float = DEFAULT_HEARTBEAT_S) -> None:
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s must be > 0 (got {heartbeat_s})")
        self.heartbeat_s = heartbeat_s
        self._seen: dict[tuple[str, str, Labels], _Seen] = {}

    def observe(self, batch: Batch) -> list[tuple[Identity, InventoryRow]]:
        ident = batch.identity
        rows: list[tuple[Identity, InventoryRow]] = []
        for hist in batch.series:
            self._sight(ident, hist.ts_s, hist.metric, hist.type, hist.labels, hist.bounds, rows)
        for sample in batch.samples:
            self._sight(ident, sample.ts_s, sample.metric, sample.type, sample.labels, (), rows)
        return rows

    def _sight(
        self,
        ident: Identity,
        ts_s: float,
        metric: str,
        kind: str,
        labels: Labels,
        bounds: tuple[float, ...],
        out: list[tuple[Identity, InventoryRow]],
    ) -> None:
        key = (ident.replica, metric, labels)
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = _Seen(ts_s, ts_s)
        elif ts_s - seen.logged_s < self.heartbeat_s:
            return
        seen.logged_s = ts_s
        out.append((ident, InventoryRow(ts_s, metric, kind, labels, tuple(bounds), seen.first_s)))


# The ``series`` view: one row per series, over every writer's log (JSON labels compare as text).
SERIES_VIEW_SQL = """
SELECT replica, metric, labels::VARCHAR::JSON AS labels, any_value(type) AS type,
       arg_max(bounds, ts) AS bounds, min(first_seen) AS first_seen, max(ts) AS last_seen,
       arg_max(engine, ts) AS engine, arg_max(model, ts) AS model
FROM series_log GROUP BY replica, metric, labels::VARCHAR
"""
