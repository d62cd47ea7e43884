"""View state <-> URL query string, so an incident link reopens the same view.

Pure (a mapping in, a mapping out); the app reads ``st.query_params`` and writes back.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from enginescope.collectors.signals import SLOS
from enginescope.recipes.schema import Recipe, RecipeError, load_recipe

RANGES_S: dict[str, float | None] = {
    "15m": 900,
    "1h": 3600,
    "6h": 21600,
    "24h": 86400,
    "all": None,
    "custom": None,
}
VIEWS = ("incident", "replica", "requests", "bench", "sql")
BENCH_THROUGHPUTS = {"tps": ("output_tps", "output throughput (tokens/s)"),
                     "rps": ("throughput_rps", "throughput (requests/s)")}  # fmt: skip
SLO_PARAMS = {f"slo_{s.label.lower()}": s.key for s in SLOS}  # URL parameter -> SLO key
SLO_ENV = {key: f"ENGINESCOPE_SLO_{key.upper()}" for key in SLO_PARAMS.values()}
STORE_RECIPE = "recipe.toml"  # ``enginescope demo --recipe`` copies its recipe here
SLO_FROM_STORE = f"SLOs from {STORE_RECIPE} in the store"


@dataclass
class ViewState:
    view: str = "incident"
    range: str = "1h"
    t0: dt.datetime | None = None  # custom range only
    t1: dt.datetime | None = None
    replicas: tuple[str, ...] = ()
    model: str = ""
    replica: str = ""  # replica view
    per_replica: bool = False
    live: bool = False
    slo: dict[str, float] = field(default_factory=dict)
    bench_run: str = ""  # bench view; "" = the latest run
    bench_throughput: str = "tps"

    @classmethod
    def from_params(
        cls, params: Mapping[str, str], default_slo: Mapping[str, float] | None = None
    ) -> ViewState:
        """Unknown or malformed values fall back to defaults: a bad link still opens."""
        state = cls(slo=dict(default_slo or {}))
        state.view = params.get("view", "incident") if params.get("view") in VIEWS else "incident"
        state.range = params.get("range", "1h") if params.get("range") in RANGES_S else "1h"
        state.t0, state.t1 = _iso(params.get("t0")), _iso(params.get("t1"))
        if state.range == "custom" and not (state.t0 and state.t1 and state.t0 < state.t1):
            state.range = "1h"
        state.replicas = tuple(r for r in params.get("replicas", "").split(",") if r)
        state.model, state.replica = params.get("model", ""), params.get("replica", "")
        state.per_replica, state.live = params.get("per_replica") == "1", params.get("live") == "1"
        state.bench_run = params.get("run", "")
        tput = params.get("tput", "tps")
        state.bench_throughput = tput if tput in BENCH_THROUGHPUTS else "tps"
        for param, key in SLO_PARAMS.items():
            value = _float(params.get(param))
            if value is not None:
                state.slo[key] = value
        return state

    def to_params(self) -> dict[str, str]:
        out = {"view": self.view, "range": self.range}
        if self.range == "custom" and self.t0 and self.t1:
            out |= {"t0": self.t0.isoformat(), "t1": self.t1.isoformat()}
        optional = {"replicas": ",".join(self.replicas), "model": self.model, "replica": self.replica,
                    "per_replica": "1" if self.per_replica else "", "live": "1" if self.live else "",
                    "run": self.bench_run,
                    "tput": "" if self.bench_throughput == "tps" else self.bench_throughput}  # fmt: skip
        out |= {k: v for k, v in optional.items() if v}
        out |= {param: f"{self.slo[key]:g}" for param, key in SLO_PARAMS.items() if key in self.slo}
        return out

    def window_bounds(self, first: dt.datetime, last: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """[t0, t1) for the range: relative ranges end at the store's newest row."""
        if self.range == "custom" and self.t0 and self.t1:
            return self.t0, self.t1
        end = last + dt.timedelta(seconds=1)
        span_s = RANGES_S.get(self.range)
        return (first if span_s is None else max(first, end - dt.timedelta(seconds=span_s))), end


def read_recipe(path: Path) -> Recipe:
    """The recipe at ``path`` (validated by ``enginescope.recipes``); errors name the file."""
    try:
        return load_recipe(path)
    except RecipeError as exc:
        raise ValueError(str(exc)) from exc


def slo_from_recipe(path: Path) -> dict[str, float]:
    """The recipe's SLOs, SLO key -> seconds."""
    slo = read_recipe(path).slo
    return {s.key: float(getattr(slo, s.key)) for s in SLOS}


def slo_from_env(env: Mapping[str, str] = os.environ) -> dict[str, float]:
    """SLOs handed over by ``enginescope dashboard``: a recipe file, then explicit flags."""
    slo = slo_from_recipe(Path(env["ENGINESCOPE_RECIPE"])) if env.get("ENGINESCOPE_RECIPE") else {}
    for key, var in SLO_ENV.items():
        value = _float(env.get(var))
        if value is not None:
            slo[key] = value
    return slo


def default_slo(store: str | Path, env: Mapping[str, str] = os.environ) -> tuple[dict[str, float], str]:
    """The page's default SLOs and where they came from: ``enginescope dashboard``'s recipe or
    flags; without either, a local store's own ``recipe.toml`` (URL values win over both)."""
    if env.get("ENGINESCOPE_RECIPE") or any(env.get(var) for var in SLO_ENV.values()):
        return slo_from_env(env), ""
    if "://" in str(store):
        return {}, ""  # object storage: the demo's recipe.toml exists only in local stores
    path = Path(store) / STORE_RECIPE
    if not path.is_file():
        return {}, ""
    return slo_from_recipe(path), SLO_FROM_STORE


def _iso(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and value > 0 else None
