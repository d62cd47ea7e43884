"""Speculative-acceptance drift per traffic class, from the store's ``requests`` view.

Each finished request with speculative decoding has an acceptance length (tokens emitted per
verify step, SGLang's ``spec_accept_length``). Per traffic class (the ``traffic_class`` column:
a custom label of the request) the detector compares, every ``step_s``, the requests that
finished in the last ``window_s`` with that class's own baseline, the ``baseline_s`` before them,
using a one-sided Welch t-test on the per-request acceptance lengths. A drop is reported when
  * p < alpha, where alpha = false_alarms_per_day / (tests per day x classes) (Bonferroni over
    every window and class a day holds: at most ``false_alarms_per_day`` false alarms a day), and
  * the drop is at least ``min_drop_ratio`` of the baseline (smaller ones are not worth a
    retraining job even when they are real).
For a drop it estimates the onset (change point), the class's acceptance since then, and what the
drop costs: the tokens/s the same verify steps would have produced at the baseline acceptance,
and the GPU-hours spent on the extra verify steps. See docs/spec-drift.md.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from enginescope.views.spec_events import UNLABELLED, recorded_drifts
from enginescope.views.spec_stats import change_point, per_test_alpha, welch_drop

REQUESTS_SQL = """
SELECT epoch(ts) AS ts_s, replica, request_id, coalesce(traffic_class, $unlabelled) AS traffic_class,
       spec_accept_length AS accept_length, completion_tokens AS tokens,
       coalesce(spec_verify_ct, completion_tokens) AS steps, spec_verify_ct > 0 AS is_spec
FROM requests_in($t0, $t1)
WHERE ts >= $t0 AND ts < $t1 AND completion_tokens > 1 AND coalesce(finish_reason, '') <> 'abort'
ORDER BY ts"""
GPUS_SQL = """
SELECT replica, count(DISTINCT gpu_uuid) AS gpus FROM gpu_in($t0, $t1)
WHERE ts >= $t0 AND ts < $t1 GROUP BY replica"""


@dataclass(frozen=True, slots=True)
class DriftConfig:
    window_s: float = 300.0  # the current window each test looks at
    baseline_s: float = 3600.0  # the class's reference: the hour before the current window
    step_s: float = 60.0  # how often a test runs; it sets the multiple-testing count
    false_alarms_per_day: float = 0.1  # expected false alarms per day over all classes
    min_drop_ratio: float = 0.05  # practical significance: relative drop of the mean
    min_requests: int = 30  # per class in the current window
    min_baseline_requests: int = 200  # per class in the baseline window

    def alpha(self, n_classes: int) -> float:
        return per_test_alpha(self.false_alarms_per_day, self.step_s, n_classes)

    @property
    def span_s(self) -> float:
        return self.window_s + self.baseline_s


@dataclass(slots=True)
class Drift:
    """One detected drop: the evidence row of ``enginescope spec-report``."""

    traffic_class: str
    detected_s: float  # end of the tested window (epoch s)
    onset_s: float  # change-point estimate: first request at the new level
    baseline_start_s: float
    window_start_s: float
    baseline_requests: int
    window_requests: int
    baseline_accept_length: float  # tokens/verify step, mean per request
    window_accept_length: float  # the tested window's mean
    current_accept_length: float  # mean of the requests since the onset
    drop_ratio: float  # 1 - current / baseline
    t_stat: float
    df: float
    p_value: float
    alpha: float  # the per-test threshold p was compared with
    baseline_tokens_per_step: float  # sum(tokens) / sum(verify steps): what throughput sees
    current_tokens_per_step: float
    class_output_tps: float  # the class's output tokens/s since the onset
    lost_tokens_per_s: float
    fleet_gpus: int
    lost_gpu_hours: float  # since the onset
    lost_gpu_hours_per_day: float
    request_ids: list[str] = field(default_factory=list)  # the class's requests since the onset

    def record(self) -> dict[str, Any]:
        """Columns for Parquet (times as UTC datetimes), without the request list."""
        row = asdict(self)
        row.pop("request_ids")
        for key in ("detected_s", "onset_s", "baseline_start_s", "window_start_s"):
            row[key.removesuffix("_s") + "_ts"] = _utc(row.pop(key))
        return row


@dataclass(slots=True)
class _Series:
    """One class's spec requests in time order, with prefix sums for O(1) window moments."""

    ts_s: np.ndarray
    accept: np.ndarray
    sums: np.ndarray  # [n+1] prefix sums of accept
    squares: np.ndarray  # [n+1] prefix sums of (accept - centre)^2 terms, centred for precision
    centre: float

    @classmethod
    def of(cls, ts_s: np.ndarray, accept: np.ndarray) -> _Series:
        centre = float(accept.mean()) if len(accept) else 0.0
        shifted = accept - centre
        zero = np.zeros(1)
        return cls(ts_s, accept, np.concatenate([zero, np.cumsum(shifted)]),
                   np.concatenate([zero, np.cumsum(shifted * shifted)]), centre)  # fmt: skip

    def index(self, t_s: float) -> int:
        return int(np.searchsorted(self.ts_s, t_s, side="left"))

    def moments(self, i: int, j: int) -> tuple[int, float, float]:
        """(n, mean, sample variance) of rows [i, j)."""
        n = j - i
        if n < 2:
            return n, math.nan, math.nan
        s, q = self.sums[j] - self.sums[i], self.squares[j] - self.squares[i]
        return n, self.centre + s / n, max(0.0, (q - s * s / n) / (n - 1))


def load_requests(con: duckdb.DuckDBPyConnection, t0_s: float, t1_s: float) -> pd.DataFrame:
    """Finished requests in [t0, t1) with their class, acceptance and verify steps."""
    params = {"t0": _utc(t0_s), "t1": _utc(t1_s), "unlabelled": UNLABELLED}
    return con.cursor().execute(REQUESTS_SQL, params).df()


def load_gpus(con: duckdb.DuckDBPyConnection, t0_s: float, t1_s: float) -> dict[str, int]:
    """GPUs per replica (distinct NVML uuids the GPU source saw in the window)."""
    rows = con.cursor().execute(GPUS_SQL, {"t0": _utc(t0_s), "t1": _utc(t1_s)}).fetchall()
    return {replica: int(gpus) for replica, gpus in rows}


def scan_frame(
    frame: pd.DataFrame,
    t0_s: float,
    t1_s: float,
    config: DriftConfig = DriftConfig(),
    gpus: Mapping[str, int] | None = None,
    known: Iterable[tuple[str, float]] = (),
) -> list[Drift]:
    """Test every class at every ``step_s`` boundary in (t0, t1]; one Drift per episode.

    An episode is suppressed while an earlier drift of the class (``known``: (class, detected_s)
    pairs, or one found in this scan) lies within ``window_s + baseline_s``: by then the drop
    is the class's new baseline.
    """
    series = _class_series(frame)
    alpha = config.alpha(len(series))
    last: dict[str, float] = {}
    for name, ts in known:
        last[name] = max(last.get(name, -math.inf), ts)
    drifts: list[Drift] = []
    for t_s in _evaluation_times(t0_s, t1_s, config.step_s):
        for name, s in series.items():
            if t_s - last.get(name, -math.inf) < config.span_s:
                continue
            test = _test(s, t_s, config, alpha)
            if test is None:
                continue
            drift = _drift(name, s, t_s, test, frame, config, alpha, gpus or {})
            if drift.drop_ratio < config.min_drop_ratio:
                continue  # the window dropped enough but the level since the onset did not
            drifts.append(drift)
            last[name] = t_s
    return drifts


def _evaluation_times(t0_s: float, t1_s: float, step_s: float) -> list[float]:
    first = math.floor(t0_s / step_s) + 1
    return [k * step_s for k in range(first, math.floor(t1_s / step_s) + 1)]


@dataclass(frozen=True, slots=True)
class _Test:
    baseline: tuple[int, float, float]  # n, mean, variance
    window: tuple[int, float, float]
    t: float
    df: float
    p_value: float


def _welch_at(s: _Series, t_s: float, config: DriftConfig) -> _Test | None:
    """The Welch test of one class at ``t_s``; None without enough requests in a window."""
    i_base, i_cur, i_end = (s.index(t_s - config.span_s), s.index(t_s - config.window_s), s.index(t_s))
    base, cur = s.moments(i_base, i_cur), s.moments(i_cur, i_end)
    if base[0] < config.min_baseline_requests or cur[0] < config.min_requests:
        return None
    result = welch_drop(base[1], base[2], base[0], cur[1], cur[2], cur[0])
    return _Test(base, cur, result.t, result.df, result.p_value)


def _test(s: _Series, t_s: float, config: DriftConfig, alpha: float) -> _Test | None:
    """The test at ``t_s`` if it rejects at ``alpha`` with a drop of at least ``min_drop_ratio``."""
    test = _welch_at(s, t_s, config)
    if test is None or test.baseline[1] - test.window[1] < config.min_drop_ratio * test.baseline[1]:
        return None
    return test if test.p_value < alpha else None


def p_values(
    frame: pd.DataFrame, t0_s: float, t1_s: float, config: DriftConfig = DriftConfig()
) -> pd.DataFrame:
    """Every test of (t0, t1]: (t_s, traffic_class, baseline, window means, p_value, alpha)."""
    series = _class_series(frame)
    alpha = config.alpha(len(series))
    rows = [
        (t_s, name, test.baseline[1], test.window[1], test.p_value, alpha)
        for t_s in _evaluation_times(t0_s, t1_s, config.step_s)
        for name, s in series.items()
        if (test := _welch_at(s, t_s, config)) is not None
    ]
    columns = ["t_s", "traffic_class", "baseline_accept_length", "window_accept_length", "p_value", "alpha"]
    return pd.DataFrame(rows, columns=columns)


def _class_series(frame: pd.DataFrame) -> dict[str, _Series]:
    spec = frame.loc[frame["is_spec"].fillna(False).astype(bool) & frame["accept_length"].notna()]
    return {
        name: _Series.of(g["ts_s"].to_numpy(float), g["accept_length"].to_numpy(float))
        for name, g in spec.groupby("traffic_class", sort=True)
    }


def _drift(
    name: str,
    s: _Series,
    t_s: float,
    test: _Test,
    frame: pd.DataFrame,
    config: DriftConfig,
    alpha: float,
    gpus: Mapping[str, int],
) -> Drift:
    baseline_start = t_s - config.span_s
    i_base, i_end = s.index(baseline_start), s.index(t_s)
    onset_index = i_base + change_point(s.accept[i_base:i_end])
    onset_s = float(s.ts_s[onset_index])
    # The class's own baseline ends at the onset when the drop began before the tested window.
    baseline_end = min(t_s - config.window_s, onset_s)
    base_mean = s.moments(i_base, max(i_base, s.index(baseline_end)))[1]
    base_mean = test.baseline[1] if math.isnan(base_mean) else base_mean
    current = float(s.accept[onset_index:i_end].mean())
    cost = _cost(frame, name, baseline_start, baseline_end, onset_s, t_s, gpus)
    in_class = frame.loc[
        (frame["traffic_class"] == name) & (frame["ts_s"] >= onset_s) & (frame["ts_s"] < t_s), "request_id"
    ]
    return Drift(
        traffic_class=name,
        detected_s=t_s,
        onset_s=onset_s,
        baseline_start_s=baseline_start,
        window_start_s=t_s - config.window_s,
        baseline_requests=test.baseline[0],
        window_requests=test.window[0],
        baseline_accept_length=base_mean,
        window_accept_length=test.window[1],
        current_accept_length=current,
        drop_ratio=1.0 - current / base_mean if base_mean > 0 else 0.0,
        t_stat=test.t,
        df=test.df,
        p_value=test.p_value,
        alpha=alpha,
        request_ids=[str(r) for r in in_class.dropna()],
        **cost,
    )


def _cost(
    frame: pd.DataFrame,
    name: str,
    baseline_start: float,
    baseline_end: float,
    onset_s: float,
    t_s: float,
    gpus: Mapping[str, int],
) -> dict[str, Any]:
    """Lost tokens/s and GPU-hours of the class since the onset.

    lost tok/s = class output tok/s x (a / b - 1): what the same verify steps would have emitted
    at the baseline tokens/step a instead of b. GPU-hours: the fleet's GPU-hours since the
    onset x the class's share of all requests' decode steps x the extra share 1 - b / a.
    """
    since = frame.loc[(frame["ts_s"] >= onset_s) & (frame["ts_s"] < t_s)]
    mine = since.loc[since["traffic_class"] == name]
    spec_mine = mine.loc[mine["is_spec"].fillna(False).astype(bool)]
    before = frame.loc[
        (frame["traffic_class"] == name)
        & frame["is_spec"].fillna(False).astype(bool)
        & (frame["ts_s"] >= baseline_start)
        & (frame["ts_s"] < baseline_end)
    ]
    a = _ratio(before["tokens"].sum(), before["steps"].sum())
    b = _ratio(spec_mine["tokens"].sum(), spec_mine["steps"].sum())
    duration_s = max(t_s - onset_s, 1e-9)
    class_tps = float(mine["tokens"].sum()) / duration_s
    lost_tps = class_tps * (a / b - 1.0) if a > b > 0 else 0.0
    fleet_gpus = sum(max(1, int(gpus.get(r, 1))) for r in since["replica"].dropna().unique())
    share = _ratio(mine["steps"].sum(), since["steps"].sum())
    extra = 1.0 - b / a if a > b > 0 else 0.0
    lost_gpu_h = fleet_gpus * duration_s / 3600.0 * share * extra
    return {
        "baseline_tokens_per_step": a,
        "current_tokens_per_step": b,
        "class_output_tps": class_tps,
        "lost_tokens_per_s": lost_tps,
        "fleet_gpus": fleet_gpus,
        "lost_gpu_hours": lost_gpu_h,
        "lost_gpu_hours_per_day": lost_gpu_h * 86_400.0 / duration_s,
    }


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den and den > 0 else 0.0


def scan(
    con: duckdb.DuckDBPyConnection,
    t0_s: float,
    t1_s: float,
    config: DriftConfig = DriftConfig(),
    known: Iterable[tuple[str, float]] = (),
) -> list[Drift]:
    """Every drift whose test window ends in (t0, t1]; reads [t0 - span, t1) once."""
    start = t0_s - config.span_s
    frame = load_requests(con, start, t1_s)
    if frame.empty:
        return []
    return scan_frame(frame, t0_s, t1_s, config, load_gpus(con, start, t1_s), known)


def detect(
    con: duckdb.DuckDBPyConnection,
    now_s: float,
    config: DriftConfig = DriftConfig(),
    since_s: float | None = None,
    known: Iterable[tuple[str, float]] = (),
) -> list[Drift]:
    """New drifts at the step boundaries in (since, now] (default: the latest one), skipping
    classes with a drift event in the store (or in ``known``) within the last span."""
    t_s = math.floor(now_s / config.step_s) * config.step_s
    t0_s = t_s - config.step_s if since_s is None else min(since_s, t_s - config.step_s)
    recorded = recorded_drifts(con, t0_s - config.span_s, t_s)
    return scan(con, t0_s, t_s, config, [*recorded, *known])


def _utc(ts_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts_s, dt.UTC)
