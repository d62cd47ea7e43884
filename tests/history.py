"""Synthetic store history: a fleet with incidents, written through the public ``StoreWriter``.

Tables signals, histograms, events, requests (the writer derives signals_1m and histograms_1m),
one file per (table, hour, replica) as after the store's compaction, which then merges the
minute rollups of each closed UTC day into one file per replica; replaced files are vacuumed.
Histograms are binned from the generated requests, so the ``requests`` table and the buckets
agree exactly.

    .venv/bin/python benchmarks/gen_history.py --store /tmp/hist --replicas 20 --duration-s 86400

Incidents (``--incident KIND@START_S[+DURATION_S][:REPLICA]``), KIND one of:
spike (load x3 on every replica; autoscaler adds replicas), throttle (one replica's GPU
throttles), spec_collapse (acceptance length falls), restart (engine restarts), kv (KV full).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from enginescope.collectors.model import Identity
from enginescope.simfleet.sgl_families import E2E_BUCKETS_S, ITL_BUCKETS_S, QUEUE_BUCKETS_S, TTFT_BUCKETS_S
from enginescope.store import CompactionPolicy, StoreWriter

# SGLang 0.5.23 default buckets (the simulator's declarations), so list sizes match a real store.
BOUNDS_S = (*TTFT_BUCKETS_S, math.inf)
E2E_BOUNDS_S = (*E2E_BUCKETS_S, math.inf)
ITL_BOUNDS_S = (*ITL_BUCKETS_S, math.inf)
QUEUE_BOUNDS_S = (*QUEUE_BUCKETS_S, math.inf)
ENGINE, MODEL, REGION, GPU = "sglang", "llama-3.1-8b", "us-east", "H100"


@dataclass(frozen=True)
class Incident:
    kind: str
    start_s: int
    duration_s: int = 900
    replica: int = 0  # index of the affected replica (single-replica kinds)

    @classmethod
    def parse(cls, text: str) -> Incident:
        """``spike@3600+900:2`` -> Incident('spike', 3600, 900, 2)."""
        kind, _, rest = text.partition("@")
        rest, _, replica = rest.partition(":")
        start, _, duration = rest.partition("+")
        if kind not in ("spike", "throttle", "spec_collapse", "restart", "kv") or not start:
            raise ValueError(f"bad --incident {text!r}: want KIND@START_S[+DURATION_S][:REPLICA]")
        return cls(kind, int(start), int(duration or 900), int(replica or 0))


@dataclass
class Fleet:
    start: dt.datetime
    duration_s: int
    replicas: int
    incidents: list[Incident] = field(default_factory=list)
    interval_s: int = 1
    request_rate: float = 2.0  # requests/s per replica at base load
    seed: int = 7

    def lifetimes(self) -> list[tuple[int, int]]:
        """[start_s, stop_s) per replica; a spike adds replicas that start after it."""
        lives = [(0, self.duration_s)] * self.replicas
        for inc in self.incidents:
            if inc.kind == "spike":
                extra = max(1, self.replicas // 4)
                start_s = min(inc.start_s + 120, self.duration_s - 1)
                stop_s = min(inc.start_s + inc.duration_s + 1800, self.duration_s)
                lives += [(start_s, stop_s)] * extra
        return lives


def _name(i: int) -> str:
    return f"replica-{i:02d}"


def _active(inc: Incident, t_s: np.ndarray, replica: int, per_replica: bool = True) -> np.ndarray:
    hit = (t_s >= inc.start_s) & (t_s < inc.start_s + inc.duration_s)
    return hit if (not per_replica or replica == inc.replica) else np.zeros_like(hit)


def _replica_frame(fleet: Fleet, idx: int, start_s: int, stop_s: int, rng: np.random.Generator) -> dict:
    """Per-second series for one replica: load, latency medians and gauges."""
    t = np.arange(start_s, stop_s, fleet.interval_s, dtype=np.int64)
    load = 1.0 + 0.15 * np.sin(2 * np.pi * t / 86400) + rng.normal(0, 0.03, t.size)
    ttft_med, itl_med = np.full(t.size, 0.15), np.full(t.size, 0.02)
    spec, clock, temp, kv = np.full(t.size, 3.0), np.full(t.size, 1980.0), np.full(t.size, 62.0), None
    up = np.ones(t.size)
    kv = np.clip(0.35 * load + rng.normal(0, 0.02, t.size), 0, 1)
    cold = t < start_s + 180 if start_s > 0 else np.zeros(t.size, bool)
    up[cold] = 0  # a scaled-up replica loads weights before engine_ready
    for inc in fleet.incidents:
        if inc.kind == "spike":
            # Load rises everywhere; the new replicas share it once ready.
            hit = _active(inc, t, idx, per_replica=False)
            relief = np.clip((t - (inc.start_s + 300)) / 300, 0, 1)
            load = np.where(hit, load * (3.0 - 1.5 * relief), load)
            ttft_med = np.where(hit, ttft_med * (1 + 20 * (1 - relief)), ttft_med)
        elif inc.kind == "throttle":
            hit = _active(inc, t, idx)
            clock, temp = np.where(hit, 1100.0, clock), np.where(hit, 91.0, temp)
            itl_med = np.where(hit, itl_med * 2.5, itl_med)
        elif inc.kind == "spec_collapse":
            hit = _active(inc, t, idx, per_replica=False)
            spec, itl_med = np.where(hit, 1.1, spec), np.where(hit, itl_med * 2.2, itl_med)
        elif inc.kind == "restart":
            down = _active(inc, t, idx, per_replica=False) & (t < inc.start_s + 90)
            if idx == inc.replica:
                up[down] = 0
            else:  # the survivors absorb the restarted replica's traffic and queue
                load = np.where(down, load * fleet.replicas / max(1, fleet.replicas - 1), load)
                ttft_med = np.where(down, ttft_med * 8, ttft_med)
        elif inc.kind == "kv":
            hit = _active(inc, t, idx, per_replica=False)
            kv = np.where(hit, 0.99, kv)
            ttft_med, itl_med = np.where(hit, ttft_med * 6, ttft_med), np.where(hit, itl_med * 3, itl_med)
    load = np.where(up > 0, load, 0.0)
    return {"t": t, "load": load, "ttft": ttft_med, "itl": itl_med, "spec": spec, "clock": clock,
            "temp": temp, "kv": kv, "up": up}  # fmt: skip


def _requests(fleet: Fleet, f: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Poisson arrivals per second; TTFT/e2e lognormal around the frame's medians."""
    n = rng.poisson(fleet.request_rate * fleet.interval_s * f["load"])
    row = np.repeat(np.arange(n.size), n)
    ttft = f["ttft"][row] * rng.lognormal(0, 0.5, row.size)
    tokens = rng.integers(16, 512, row.size)
    e2e = ttft + tokens * f["itl"][row] / np.maximum(f["spec"][row] / 3.0, 0.3)
    return {"row": row, "ttft": ttft, "e2e": e2e, "tokens": tokens, "queue": ttft * 0.6,
            "prompt": rng.integers(64, 2048, row.size), "cached": rng.integers(0, 64, row.size)}  # fmt: skip


def _binned(rows: np.ndarray, values: np.ndarray, n_rows: int, bounds: tuple[float, ...]) -> np.ndarray:
    """Cumulative ``le`` counts per row (n_rows x len(bounds))."""
    bucket = np.searchsorted(np.asarray(bounds), values, side="left")
    flat = np.bincount(rows * len(bounds) + bucket, minlength=n_rows * len(bounds))
    return np.cumsum(flat.reshape(n_rows, len(bounds)), axis=1).astype(np.float64)


def _ts(fleet: Fleet, t_s: np.ndarray) -> pa.Array:
    base_us = int(fleet.start.timestamp() * 1_000_000)
    return pa.array(base_us + t_s * 1_000_000, pa.timestamp("us", tz="UTC"))


def _repeat(value: str | float, n: int) -> pa.Array:
    """A constant column; strings are dictionary-encoded (cheap to build and to store)."""
    if isinstance(value, str):
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([value]))
    return pa.array(np.full(n, value, dtype=np.float64))


def _common(name: str, n: int) -> dict[str, pa.Array]:
    pairs = (("replica", name), ("engine", ENGINE), ("model", MODEL), ("region", REGION), ("gpu_type", GPU))
    return {k: _repeat(v, n) for k, v in pairs}


def _table(fleet: Fleet, name: str, t_s: np.ndarray, cols: dict[str, pa.Array]) -> pa.Table:
    return pa.table({"ts": _ts(fleet, t_s), **_common(name, t_s.size), **cols})


def _signal_table(fleet: Fleet, name: str, f: dict, reqs: dict, rng: np.random.Generator) -> pa.Table:
    t, load, n_rows = f["t"], f["load"], f["t"].size
    finished = np.bincount(reqs["row"], minlength=n_rows).astype(float)
    gen = np.bincount(reqs["row"], weights=reqs["tokens"], minlength=n_rows)
    series = {
        "queue_depth": np.round(np.maximum(0, (load - 1.4) * 30 + rng.normal(0, 0.5, n_rows))),
        "running_requests": np.round(np.minimum(load * 24, 64)),
        "kv_usage_ratio": f["kv"], "spec_accept_length": f["spec"] * f["up"],
        "generation_tokens": gen, "prompt_tokens": np.bincount(reqs["row"], reqs["prompt"], n_rows),
        "requests_finished": finished, "retractions": np.where(f["kv"] > 0.97, 2.0, 0.0),
        "engine_up": f["up"], "gpu_power_w": 250 + 400 * np.minimum(load, 1.5) / 1.5 * (f["clock"] / 1980),
        "gpu_temperature_c": f["temp"] + 5 * load, "gpu_utilization_pct": np.minimum(100, 60 * load) * f["up"],
        "gpu_sm_clock_mhz": f["clock"], "gpu_throttled": (f["clock"] < 1500).astype(float),
    }  # fmt: skip
    names = list(series)
    return _table(
        fleet, name, np.tile(t, len(names)),
        {"signal": pa.array(np.repeat(names, n_rows)), "value": pa.array(np.concatenate(list(series.values()))),
         "interval_s": _repeat(float(fleet.interval_s), n_rows * len(names)),
         "labels": _repeat("{}", n_rows * len(names))},
    )  # fmt: skip


def _list_column(matrix: np.ndarray) -> pa.Array:
    offsets = np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(matrix.ravel()))


def _histogram_table(fleet: Fleet, name: str, f: dict, reqs: dict, rng: np.random.Generator) -> pa.Table:
    n_rows, parts = f["t"].size, []
    itl_n = rng.poisson(10 * fleet.request_rate * f["load"])
    itl_rows = np.repeat(np.arange(n_rows), itl_n)
    itl = f["itl"][itl_rows] * rng.lognormal(0, 0.4, itl_rows.size)
    observed = {
        "ttft_seconds": (reqs["row"], reqs["ttft"], BOUNDS_S),
        "e2e_seconds": (reqs["row"], reqs["e2e"], E2E_BOUNDS_S),
        "queue_time_seconds": (reqs["row"], reqs["queue"], QUEUE_BOUNDS_S),
        "itl_seconds": (itl_rows, itl, ITL_BOUNDS_S),
    }
    for signal, (rows, values, bounds) in observed.items():
        counts = _binned(rows, values, n_rows, bounds)
        sums = np.bincount(rows, weights=values, minlength=n_rows)
        parts.append(
            _table(fleet, name, f["t"], {
                "metric": _repeat(f"sglang:{signal}", n_rows), "signal": _repeat(signal, n_rows),
                "labels": _repeat("{}", n_rows), "bounds": _list_column(np.tile(bounds, (n_rows, 1))),
                "counts": _list_column(counts), "sum": pa.array(sums), "count": pa.array(counts[:, -1]),
                "interval_s": _repeat(float(fleet.interval_s), n_rows)})
        )  # fmt: skip
    return pa.concat_tables(parts)


def _request_table(fleet: Fleet, name: str, f: dict, reqs: dict) -> pa.Table:
    t = f["t"][reqs["row"]]
    ids = [f"{name}-{i}" for i in range(t.size)]
    return _table(fleet, name, t, {
        "request_id": pa.array(ids, pa.string()), "ttft_s": pa.array(reqs["ttft"]),
        "e2e_s": pa.array(reqs["e2e"]), "queue_time_s": pa.array(reqs["queue"]),
        "prompt_tokens": pa.array(reqs["prompt"]), "completion_tokens": pa.array(reqs["tokens"]),
        "cached_tokens": pa.array(reqs["cached"])})  # fmt: skip


def _events(fleet: Fleet, lives: list[tuple[int, int]]) -> list[tuple[int, int, str, str, int | None]]:
    """(t_s, replica index, kind, detail, replica_count) rows."""
    rows: list[tuple[int, int, str, str, int | None]] = []
    for i, (start, stop) in enumerate(lives):
        rows += [
            (start, i, "container_started", "", None),
            (start + (180 if start else 0), i, "engine_ready", "", None),
        ]
        if stop < fleet.duration_s:
            rows.append((stop - 1, i, "container_stopped", "", None))
    for stop in sorted({stop for _, stop in lives if stop < fleet.duration_s}):
        rows.append((stop - 30, 0, "scale_down", "queue drained", fleet.replicas))
    for inc in fleet.incidents:
        if inc.kind == "spike":
            rows.append((inc.start_s, 0, "scenario", "spike starts", None))
            rows.append((inc.start_s + 90, 0, "scale_up", "queue depth above target", len(lives)))
        elif inc.kind == "throttle":
            rows.append((inc.start_s, inc.replica, "gpu_throttle", "thermal slowdown", None))
        elif inc.kind == "restart":
            rows.append((inc.start_s, inc.replica, "engine_restart", "engine process exited", None))
            rows.append((inc.start_s + 90, inc.replica, "engine_ready", "", None))
        elif inc.kind in ("spec_collapse", "kv"):
            rows.append((inc.start_s, 0, "scenario", f"{inc.kind} starts", None))
    return sorted(rows)


def generate(store: Path | str, fleet: Fleet) -> StoreWriter:
    """Write ``fleet``'s history into ``store``; returns the (closed) writer for its counters."""
    rng = np.random.default_rng(fleet.seed)
    lives = fleet.lifetimes()
    ident = Identity("history", engine=ENGINE, model=MODEL, region=REGION, gpu_type=GPU)
    policy = CompactionPolicy(delete_grace_s=0.0)  # no readers while generating
    writer = StoreWriter(store, ident, background=False, policy=policy)
    for i, (start, stop) in enumerate(lives):
        name = _name(i)
        f = _replica_frame(fleet, i, start, stop, rng)
        reqs = _requests(fleet, f, rng)
        writer.write_table("signals", _signal_table(fleet, name, f, reqs, rng))
        writer.write_table("histograms", _histogram_table(fleet, name, f, reqs, rng))
        writer.write_table("requests", _request_table(fleet, name, f, reqs))
        writer.flush()  # one commit per table per replica, as sidecars appending side by side
    rows = _events(fleet, lives)
    for i in sorted({r[1] for r in rows}):
        mine = [r for r in rows if r[1] == i]
        t_s = np.array([r[0] for r in mine], dtype=np.int64)
        cols = {"kind": pa.array([r[2] for r in mine]), "detail": pa.array([r[3] for r in mine]),
                "replica_count": pa.array([r[4] for r in mine], pa.int32())}  # fmt: skip
        writer.write_table("events", _table(fleet, _name(i), t_s, cols))
    writer.flush()
    writer.compact()  # closed days' rollups: one file per replica per day
    writer.vacuum()
    writer.close()
    return writer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="folder or s3:// URL")
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--duration-s", type=int, default=86_400)
    parser.add_argument("--start", default="", help="ISO UTC start (default: now - duration)")
    parser.add_argument("--incident", action="append", default=[], type=Incident.parse)
    args = parser.parse_args(argv)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = (
        dt.datetime.fromisoformat(args.start) if args.start else now - dt.timedelta(seconds=args.duration_s)
    )
    incidents = args.incident or default_incidents(args.duration_s)
    generate(args.store, Fleet(start.astimezone(dt.UTC), args.duration_s, args.replicas, incidents))
    return 0


def default_incidents(duration_s: int) -> list[Incident]:
    """One of each kind, spread over the history."""
    at = [int(duration_s * x) for x in (0.3, 0.5, 0.65, 0.8, 0.9)]
    return [Incident("spike", at[0], 1200), Incident("throttle", at[1], 600, 3),
            Incident("spec_collapse", at[2], 600), Incident("restart", at[3], 300, 5),
            Incident("kv", at[4], 300)]  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
