"""Rows and Arrow tables shaped for the store: one file per replica and UTC hour, the table's
columns and types, and the minute-rollup partials that travel with each flush."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from enginescope.collectors.model import Identity
from enginescope.store import rollups, schema

log = logging.getLogger(__name__)

Rows = list[tuple[Identity, Any]]


def partition_rows(rows: Rows) -> dict[tuple[str, str, int], Rows]:
    """Group rows by (replica, UTC date, UTC hour): each file holds one hour of one replica."""
    groups: dict[tuple[str, str, int], Rows] = {}
    day_cache: dict[int, str] = {}
    for ident, row in rows:
        hour_index = int(row.ts_s // 3600)
        date_key = day_cache.get(hour_index)
        if date_key is None:
            date_key = datetime.fromtimestamp(hour_index * 3600, UTC).strftime("%Y-%m-%d")
            day_cache[hour_index] = date_key
        groups.setdefault((ident.replica, date_key, hour_index % 24), []).append((ident, row))
    return groups


def rows_to_arrow(table: str, group: Rows) -> tuple[Any, Rows]:
    """Arrow table of ``group``; rows whose values do not fit the schema are dropped, not the group."""
    try:
        return schema.to_arrow(table, group), group
    except (pa.ArrowException, TypeError, ValueError):
        pass
    kept = []
    for item in group:
        try:
            schema.to_arrow(table, [item])
        except (pa.ArrowException, TypeError, ValueError) as exc:
            log.error("store writer: dropping a %s row that does not fit the schema: %s", table, exc)
        else:
            kept.append(item)
    return (schema.to_arrow(table, kept) if kept else None), kept


def conform(table: str, arrow: pa.Table) -> pa.Table:
    """``arrow`` with the table's columns, in order and types (dictionary strings decoded)."""
    if table == "gpu":
        fields = [
            pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
            for f in arrow.schema
        ]
        return arrow.cast(pa.schema(fields))
    want = schema.SCHEMAS[table]
    cols = [
        arrow.column(f.name).cast(f.type)
        if f.name in arrow.column_names
        else pa.nulls(arrow.num_rows, f.type)
        for f in want
    ]
    return pa.Table.from_arrays(cols, schema=want)


def split_replica_hours(arrow: pa.Table) -> list[tuple[tuple[str, int, str], pa.Table]]:
    """((date, hour, replica), rows) per replica and UTC hour, oldest hour first; rows keep
    their order within a group (one sort, then slices)."""
    if arrow.num_rows == 0:
        return []
    hours = pc.divide(pc.cast(arrow.column("ts"), pa.int64()), 3_600_000_000)
    codes = pc.dictionary_encode(pc.fill_null(arrow.column("replica"), "")).combine_chunks().indices
    keys = pa.table({"hour": hours, "code": codes})
    order = pc.sort_indices(keys, [("hour", "ascending"), ("code", "ascending")])  # a stable sort
    keys, sorted_rows = keys.take(order), arrow.take(order)
    hours, codes, n = keys.column("hour"), keys.column("code"), keys.num_rows
    changed = pc.or_(
        pc.not_equal(hours.slice(1), hours.slice(0, n - 1)),
        pc.not_equal(codes.slice(1), codes.slice(0, n - 1)),
    )
    cuts = [0, *(i + 1 for i in pc.indices_nonzero(changed).to_pylist()), n]
    out = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        part = sorted_rows.slice(lo, hi - lo)
        hour = hours[lo].as_py()
        date_key = datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%d")
        out.append(((date_key, hour, part.column("replica")[0].as_py() or ""), part))
    return out


def arrow_partials(table: str, part: pa.Table) -> pa.Table:
    """Minute-rollup rows of one replica-hour of raw Arrow rows (re-summed per minute)."""
    if table == "histograms":
        return rollups.resum(rollups.HISTOGRAMS_1M, part)
    return rollups.resum(rollups.SIGNALS_1M, rollups.signals_as_partials(part))


def minute_partials(table: str, rows: Rows) -> Any:
    """Flush-time partials of the minute rollup of ``table`` (same hour as ``rows``)."""
    if table == "histograms":
        return schema.to_arrow(rollups.HISTOGRAMS_1M, rollups.histogram_partials(rows))
    return rollups.signal_partials(rows)
