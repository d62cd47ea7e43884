"""The speculative-acceptance drift detector on synthetic chain-acceptance traffic.

Traffic goes through the real path: SGLang-shaped export records -> requestlog's record_to_row
-> StoreWriter (Parquet) -> open_store's ``requests`` view -> the detector.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from enginescope.collectors.identity import fleet_replica
from enginescope.collectors.model import Identity
from enginescope.spec_monitor import SpecDriftMonitor, sink_emitter
from enginescope.store import StoreWriter, open_store
from enginescope.views import spec_drift, spec_events
from enginescope.views.spec_drift import DriftConfig, scan, scan_frame
from enginescope.views.spec_stats import betainc, change_point, per_test_alpha, student_t_sf, welch_drop
from tests.spec_traffic import T0_S, generate, write_traffic

DROP_AT_S = 70 * 60.0  # after more than the baseline hour of stable traffic


def test_student_t_tail_matches_published_quantiles() -> None:
    assert student_t_sf(2.228139, 10) == pytest.approx(0.025, rel=1e-5)
    assert student_t_sf(2.749996, 30) == pytest.approx(0.005, rel=1e-5)
    assert student_t_sf(1.0, 1) == pytest.approx(0.25)  # Cauchy
    assert student_t_sf(-1.0, 5) == pytest.approx(1 - 0.181609, rel=1e-5)
    assert student_t_sf(4.5, 1e8) == pytest.approx(0.5 * math.erfc(4.5 / math.sqrt(2)), rel=1e-4)
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248)  # 1 - sum of a binomial tail


def test_alpha_is_the_false_alarm_rate_split_over_every_test_of_a_day() -> None:
    assert per_test_alpha(0.1, 60.0, 4) == pytest.approx(0.1 / (1440 * 4))
    assert DriftConfig().alpha(4) == pytest.approx(1.736e-5, rel=1e-3)
    with pytest.raises(ValueError, match="false_alarms_per_day"):
        per_test_alpha(0.0, 60.0, 1)


def test_welch_and_change_point() -> None:
    result = welch_drop(3.0, 0.25, 1000, 2.9, 0.25, 100)
    assert result.t == pytest.approx(0.1 / math.sqrt(0.25 / 1000 + 0.25 / 100))
    assert 100 < result.df < 130 and 0.02 < result.p_value < 0.04
    assert welch_drop(3.0, 0.25, 1000, 3.1, 0.25, 100).p_value > 0.9  # a rise is no drop
    values = pd.Series([3.0, 3.1, 2.95] * 30 + [2.5, 2.6, 2.4] * 10).to_numpy()
    assert change_point(values) == 90


@pytest.fixture(scope="module")
def drift_traffic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """70 min of stable traffic, then class ``code`` loses 15% of its acceptance for 15 min."""
    store = tmp_path_factory.mktemp("spec_drift") / "store"
    frame = generate(T0_S, DROP_AT_S + 900, seed=3, drop=("code", DROP_AT_S, 0.15))
    write_traffic(store, frame)
    return store, frame


def test_finds_an_injected_15_percent_drop_within_10_minutes(
    drift_traffic: tuple[Path, pd.DataFrame],
) -> None:
    store, frame = drift_traffic
    drifts = scan(open_store(store), T0_S, T0_S + DROP_AT_S + 900)
    assert [d.traffic_class for d in drifts] == ["code"]
    d = drifts[0]
    drop_s = T0_S + DROP_AT_S
    assert 0 < d.detected_s - drop_s <= 600, d.detected_s - drop_s
    assert abs(d.onset_s - drop_s) < 60  # requests finish up to a few s after they arrive
    code = frame.loc[frame["traffic_class"] == "code"]
    true_before = code.loc[code["received_s"] < drop_s, "accept_length"].mean()
    assert d.baseline_accept_length == pytest.approx(true_before, rel=0.01)
    assert 0.10 < d.drop_ratio < 0.20 and d.p_value < d.alpha == pytest.approx(DriftConfig().alpha(4))
    # Lost throughput: the class's tok/s x (a/b - 1), from token-weighted tokens/step.
    since = code.loc[(code["ts_s"] >= d.onset_s) & (code["ts_s"] < d.detected_s)]
    tps = since["tokens"].sum() / (d.detected_s - d.onset_s)
    a, b = d.baseline_tokens_per_step, d.current_tokens_per_step
    assert b == pytest.approx(since["tokens"].sum() / since["steps"].sum())
    assert d.lost_tokens_per_s == pytest.approx(tps * (a / b - 1)) and 30 < d.lost_tokens_per_s < 80
    assert d.fleet_gpus == 2  # two replicas, no GPU rows: one GPU each is assumed
    assert d.lost_gpu_hours > 0 and d.lost_gpu_hours_per_day == pytest.approx(
        d.lost_gpu_hours * 86400 / (d.detected_s - d.onset_s)
    )
    assert set(d.request_ids) == set(since["request_id"])


def test_two_hours_of_stable_traffic_raise_nothing(tmp_path: Path) -> None:
    frame = generate(T0_S, 7200, seed=0)
    write_traffic(tmp_path / "store", frame)
    assert scan(open_store(tmp_path / "store"), T0_S, T0_S + 7200) == []


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_no_false_alarm_on_other_seeds(seed: int) -> None:
    frame = generate(T0_S, 7200, seed=seed)
    assert scan_frame(frame, T0_S, T0_S + 7200) == []


def test_rejection_rate_matches_alpha_when_nothing_drifts() -> None:
    """The derivation's premise: under no drift, each test rejects with probability ~ alpha."""
    config = DriftConfig(false_alarms_per_day=0.02 * 1440 * 4)  # alpha = 0.02 per test
    tests = pd.concat(
        [spec_drift.p_values(generate(T0_S, 7200, seed=s), T0_S, T0_S + 7200, config) for s in range(3)]
    )
    assert len(tests) > 1300 and tests["alpha"].iloc[0] == pytest.approx(0.02)
    rate = float((tests["p_value"] < 0.02).mean())
    assert 0.005 < rate < 0.04, rate


def test_a_smaller_drop_than_min_drop_ratio_is_not_reported() -> None:
    frame = generate(T0_S, DROP_AT_S + 900, seed=3, drop=("code", DROP_AT_S, 0.035))
    assert scan_frame(frame, T0_S, T0_S + DROP_AT_S + 900) == []
    found = scan_frame(frame, T0_S, T0_S + DROP_AT_S + 900, DriftConfig(min_drop_ratio=0.02))
    assert [d.traffic_class for d in found] == ["code"]  # real and significant, just small


def test_event_detail_round_trips() -> None:
    frame = generate(T0_S, DROP_AT_S + 600, seed=3, drop=("code", DROP_AT_S, 0.15))
    (d,) = scan_frame(frame, T0_S, T0_S + DROP_AT_S + 600)
    parsed = spec_events.parse_detail(spec_events.event_detail(d))
    assert parsed is not None and parsed["class"] == "code"
    assert parsed["baseline_accept_length"] == pytest.approx(d.baseline_accept_length, abs=1e-3)
    assert parsed["lost_tokens_per_s"] == pytest.approx(d.lost_tokens_per_s, abs=0.05)
    assert parsed["onset"] == pd.Timestamp(d.onset_s, unit="s", tz="UTC").floor("s")
    assert spec_events.parse_detail("engine restarted") is None


def test_monitor_records_one_event_per_drift_and_none_after_a_restart(
    drift_traffic: tuple[Path, pd.DataFrame],
) -> None:
    store, _ = drift_traffic
    fleet = Identity(replica=fleet_replica())
    writer = StoreWriter(store, fleet, background=False)
    monitor = SpecDriftMonitor(store, sink_emitter(writer, fleet))
    found = []
    for minute in range(60, 86):  # checks once a minute, as the demo's fleet loop would
        found += monitor.check(T0_S + minute * 60 + 5)
        writer.flush()
    assert [d.traffic_class for d in found] == ["code"]
    restarted = SpecDriftMonitor(store, sink_emitter(writer, fleet))
    assert restarted.check(T0_S + 86 * 60 + 5) == []  # the stored event suppresses a repeat
    writer.close()
    events = open_store(store).execute("SELECT epoch(ts), replica, kind, detail FROM events").fetchall()
    assert len(events) == 1
    ts_s, replica, kind, detail = events[0]
    assert (replica, kind) == ("fleet", "spec_acceptance_drift") and ts_s == found[0].detected_s
    assert spec_events.parse_detail(detail)["class"] == "code"


def test_monitor_never_raises(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("not a folder")
    emitted: list = []
    assert SpecDriftMonitor(tmp_path / "store", emitted.append).check(T0_S) == [] and emitted == []
