"""Arrow schemas of the store's tables, and Batch rows -> Arrow conversion.

Explicit schemas keep types stable when a batch is empty or a column is all NULL.
``ts`` is microsecond TIMESTAMPTZ (UTC); ``labels`` is JSON text with sorted keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import pyarrow as pa

from enginescope.collectors.model import (
    EventRow,
    GpuRow,
    HistogramRow,
    Identity,
    Labels,
    RequestRow,
    SampleRow,
    SignalRow,
)

TS_TYPE = pa.timestamp("us", tz="UTC")
FLOATS = pa.list_(pa.float64())

IDENTITY_COLUMNS = ("replica", "engine", "model", "region", "gpu_type")
COMMON_FIELDS = [pa.field("ts", TS_TYPE)] + [pa.field(name, pa.string()) for name in IDENTITY_COLUMNS]

SAMPLES = pa.schema(
    COMMON_FIELDS
    + [
        pa.field("metric", pa.string()),
        pa.field("type", pa.string()),
        pa.field("labels", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("delta", pa.float64()),
        pa.field("interval_s", pa.float64()),
    ]
)
HISTOGRAMS = pa.schema(
    COMMON_FIELDS
    + [
        pa.field("metric", pa.string()),
        pa.field("signal", pa.string()),
        pa.field("labels", pa.string()),
        pa.field("bounds", FLOATS),
        pa.field("counts", FLOATS),
        pa.field("sum", pa.float64()),
        pa.field("count", pa.float64()),
        pa.field("interval_s", pa.float64()),
    ]
)
SIGNALS = pa.schema(
    COMMON_FIELDS
    + [
        pa.field("signal", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("interval_s", pa.float64()),
        pa.field("labels", pa.string()),
    ]
)
# Minute rollup of ``signals`` (see ``rollups``): partial aggregates that re-sum exactly.
SIGNALS_1M = pa.schema(
    COMMON_FIELDS
    + [
        pa.field("signal", pa.string()),
        pa.field("labels", pa.string()),
        pa.field("n", pa.int64()),
        pa.field("value_sum", pa.float64()),
        pa.field("value_min", pa.float64()),
        pa.field("value_max", pa.float64()),
        pa.field("value_last", pa.float64()),
        pa.field("first_ts", TS_TYPE),
        pa.field("last_ts", TS_TYPE),
        pa.field("interval_s", pa.float64()),
    ]
)
EVENTS = pa.schema(
    COMMON_FIELDS
    + [
        pa.field("kind", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("replica_count", pa.int32()),
        pa.field("attributes", pa.string()),  # JSON object of the event's structured facts
    ]
)
GPU_BASE = pa.schema(COMMON_FIELDS + [pa.field("gpu_uuid", pa.string()), pa.field("gpu_index", pa.int32())])

# Columns of the ``requests`` table; RequestRow.fields uses these names. ``*_ts`` are epoch
# seconds in the row and TIMESTAMPTZ in the store. Unknown keys are ignored.
REQUEST_COLUMNS: dict[str, pa.DataType] = {
    "request_id": pa.string(),
    "finish_reason": pa.string(),
    "status_code": pa.int32(),
    "prompt_tokens": pa.int64(),
    "completion_tokens": pa.int64(),
    "reasoning_tokens": pa.int64(),
    "cached_tokens": pa.int64(),
    "cached_device_tokens": pa.int64(),
    "cached_host_tokens": pa.int64(),
    "cached_storage_tokens": pa.int64(),
    "queue_time_s": pa.float64(),
    "ttft_s": pa.float64(),
    "e2e_s": pa.float64(),
    "decode_throughput_tps": pa.float64(),
    "tpot_s": pa.float64(),
    "request_received_ts": TS_TYPE,
    "forward_entry_ts": TS_TYPE,
    "prefill_finished_ts": TS_TYPE,
    "response_sent_ts": TS_TYPE,
    "request_finished_ts": TS_TYPE,
    "num_retractions": pa.int32(),
    "spec_accept_length": pa.float64(),
    "spec_accept_rate": pa.float64(),
    "spec_verify_ct": pa.int64(),
    "spec_num_correct_drafts": pa.int64(),
    "spec_num_proposed_drafts": pa.int64(),
    "dp_rank": pa.int32(),
    "is_streaming": pa.bool_(),
    "weight_version": pa.string(),
    "params": pa.string(),  # JSON, only with the tailer's opt-in store_params
    "spec_correct_drafts_histogram": pa.list_(pa.int64()),  # index = drafts accepted in a verify step
    "custom_labels": pa.string(),  # JSON of the request's SGLang custom_labels (never content)
    "traffic_class": pa.string(),  # one custom label's value (requestlog class_label, default "task")
}
REQUESTS = pa.schema(COMMON_FIELDS + [pa.field(name, dtype) for name, dtype in REQUEST_COLUMNS.items()])

# ``series_log``: sightings of every series the engine exposes (store/inventory.py).
SERIES_LOG = pa.schema(
    COMMON_FIELDS
    + [
        pa.field("metric", pa.string()),
        pa.field("type", pa.string()),
        pa.field("labels", pa.string()),
        pa.field("bounds", pa.list_(pa.float64())),
        pa.field("first_seen", TS_TYPE),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "samples": SAMPLES,
    "histograms": HISTOGRAMS,
    "histograms_1m": HISTOGRAMS,  # per-minute partial sums written next to ``histograms``
    "signals": SIGNALS,
    "signals_1m": SIGNALS_1M,  # per-minute partial aggregates written next to ``signals``
    "events": EVENTS,
    "gpu": GPU_BASE,
    "requests": REQUESTS,
    "series_log": SERIES_LOG,
}
TABLES = tuple(SCHEMAS)
JSON_COLUMNS = ("labels", "params")


@lru_cache(maxsize=65536)
def labels_json(labels: Labels) -> str:
    """Labels as compact JSON with sorted keys (cached: the same label sets recur every scrape)."""
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"))


def ts_us(ts_s: float) -> int:
    return round(ts_s * 1_000_000)


def _common(rows: Sequence[tuple[Identity, Any]]) -> dict[str, list[Any]]:
    return {
        "ts": [ts_us(row.ts_s) for _, row in rows],
        "replica": [ident.replica for ident, _ in rows],
        "engine": [ident.engine for ident, _ in rows],
        "model": [ident.model for ident, _ in rows],
        "region": [ident.region for ident, _ in rows],
        "gpu_type": [ident.gpu_type for ident, _ in rows],
    }


def _samples(rows: Sequence[tuple[Identity, SampleRow]]) -> dict[str, list[Any]]:
    cols = _common(rows)
    cols["metric"] = [r.metric for _, r in rows]
    cols["type"] = [str(r.type) for _, r in rows]
    cols["labels"] = [labels_json(r.labels) for _, r in rows]
    cols["value"] = [r.value for _, r in rows]
    cols["delta"] = [r.delta for _, r in rows]
    cols["interval_s"] = [r.interval_s for _, r in rows]
    return cols


def _histograms(rows: Sequence[tuple[Identity, HistogramRow]]) -> dict[str, list[Any]]:
    cols = _common(rows)
    cols["metric"] = [r.metric for _, r in rows]
    cols["signal"] = [r.signal for _, r in rows]
    cols["labels"] = [labels_json(r.labels) for _, r in rows]
    cols["bounds"] = [list(r.bounds) for _, r in rows]
    cols["counts"] = [list(r.counts) for _, r in rows]
    cols["sum"] = [r.sum for _, r in rows]
    cols["count"] = [r.count for _, r in rows]
    cols["interval_s"] = [r.interval_s for _, r in rows]
    return cols


def _signals(rows: Sequence[tuple[Identity, SignalRow]]) -> dict[str, list[Any]]:
    cols = _common(rows)
    cols["signal"] = [r.signal for _, r in rows]
    cols["value"] = [r.value for _, r in rows]
    cols["interval_s"] = [r.interval_s for _, r in rows]
    cols["labels"] = [labels_json(r.labels) for _, r in rows]
    return cols


def _events(rows: Sequence[tuple[Identity, EventRow]]) -> dict[str, list[Any]]:
    cols = _common(rows)
    cols["kind"] = [str(r.kind) for _, r in rows]
    cols["detail"] = [r.detail for _, r in rows]
    cols["replica_count"] = [r.replica_count for _, r in rows]
    cols["attributes"] = [json.dumps(r.attributes, sort_keys=True) if r.attributes else None for _, r in rows]
    return cols


def _requests(rows: Sequence[tuple[Identity, RequestRow]]) -> dict[str, list[Any]]:
    cols = _common(rows)
    for name, dtype in REQUEST_COLUMNS.items():
        values = [r.fields.get(name) for _, r in rows]
        if dtype == TS_TYPE:
            values = [None if v is None else ts_us(float(v)) for v in values]
        cols[name] = values
    return cols


def gpu_table(rows: Sequence[tuple[Identity, GpuRow]]) -> pa.Table:
    """GPU fields are open-ended: numbers become DOUBLE, text VARCHAR; all-NULL fields are omitted
    (the reader unions columns by name, so a field absent from a file reads as NULL)."""
    cols = _common(rows)
    cols["gpu_uuid"] = [r.gpu_uuid for _, r in rows]
    cols["gpu_index"] = [r.fields.get("gpu_index") for _, r in rows]
    arrays = [pa.array(cols[f.name], f.type) for f in GPU_BASE]
    fields = list(GPU_BASE)
    names = sorted({k for _, r in rows for k in r.fields} - {"gpu_index", "gpu_uuid", *cols})
    for name in names:
        values = [r.fields.get(name) for _, r in rows]
        present = [v for v in values if v is not None]
        if not present:
            continue
        if all(isinstance(v, int | float) for v in present):
            dtype, values = pa.float64(), [None if v is None else float(v) for v in values]
        else:
            dtype, values = pa.string(), [None if v is None else str(v) for v in values]
        fields.append(pa.field(name, dtype))
        arrays.append(pa.array(values, dtype))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _series_log(rows: Sequence[tuple[Identity, Any]]) -> dict[str, list[Any]]:
    cols = _common(rows)
    cols["metric"] = [r.metric for _, r in rows]
    cols["type"] = [r.type for _, r in rows]
    cols["labels"] = [labels_json(r.labels) for _, r in rows]
    cols["bounds"] = [list(r.bounds) if r.bounds else None for _, r in rows]
    cols["first_seen"] = [ts_us(r.first_seen_s) for _, r in rows]
    return cols


_BUILDERS: dict[str, Callable[[Sequence[tuple[Identity, Any]]], dict[str, list[Any]]]] = {
    "samples": _samples,
    "histograms": _histograms,
    "histograms_1m": _histograms,
    "signals": _signals,
    "events": _events,
    "requests": _requests,
    "series_log": _series_log,
}


def to_arrow(table: str, rows: Sequence[tuple[Identity, Any]]) -> pa.Table:
    """Build the Arrow table for ``rows`` (``(identity, row)`` pairs) of store table ``table``."""
    if table == "gpu":
        return gpu_table(rows)
    schema = SCHEMAS[table]
    cols = _BUILDERS[table](rows)
    return pa.Table.from_arrays([pa.array(cols[f.name], f.type) for f in schema], schema=schema)


def empty_table(table: str) -> pa.Table:
    return SCHEMAS[table].empty_table()
