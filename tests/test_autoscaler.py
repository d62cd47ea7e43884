"""Autoscaler policy: Modal-like scale-up, buffer containers, scaledown window, bounds."""

from __future__ import annotations

import pytest

from enginescope.simfleet.autoscaler import Autoscaler, AutoscalerConfig, instant_need


def config(**overrides: object) -> AutoscalerConfig:
    base = {"min_containers": 1, "max_containers": 6, "target_inputs": 10, "scaledown_window_s": 20.0}
    base.update(overrides)
    return AutoscalerConfig(**base)  # type: ignore[arg-type]


def test_scales_up_at_once_when_concurrency_exceeds_target() -> None:
    scaler = Autoscaler(config())
    assert scaler.decide(0.0, [10]).desired == 1  # exactly at target: no change
    decision = scaler.decide(1.0, [28])
    assert decision.desired == 3  # ceil(28 / 10)
    assert decision.delta == 2
    assert "concurrency 28 > target 10 x 1" in decision.reason


def test_backlog_counts_as_demand() -> None:
    scaler = Autoscaler(config())
    assert scaler.decide(0.0, [12, 12], backlog=7).desired == 4  # ceil(31 / 10)


def test_buffer_containers_added_under_load_only() -> None:
    scaler = Autoscaler(config(min_containers=0, buffer_containers=2, scaledown_window_s=0.0))
    assert scaler.decide(0.0, [5]).desired == 3  # 1 needed + 2 idle buffer
    assert scaler.decide(1.0, [0, 0, 0]).desired == 0  # no load: buffer released, scale to zero


def test_scales_down_only_after_full_scaledown_window() -> None:
    scaler = Autoscaler(config(scaledown_window_s=20.0))
    assert scaler.decide(0.0, [30]).desired == 3
    # Load falls to one replica's worth at t=1; the need of 3 stays in force until then.
    for t_s in range(1, 21):
        assert scaler.decide(float(t_s), [3, 3, 2]).desired == 3, t_s
    decision = scaler.decide(21.0, [3, 3, 2])
    assert decision.desired == 1
    assert "scaledown_window 20s" in decision.reason


def test_brief_dip_inside_window_does_not_scale_down() -> None:
    scaler = Autoscaler(config(scaledown_window_s=10.0))
    scaler.decide(0.0, [25])
    scaler.decide(5.0, [0, 0, 0])  # dip
    assert scaler.decide(9.0, [10, 10, 9]).desired == 3
    assert scaler.decide(30.0, [10, 10, 9]).desired == 3  # load back: need is 3 again


def test_scaleup_window_requires_sustained_demand() -> None:
    scaler = Autoscaler(config(scaleup_window_s=5.0))
    scaler.decide(0.0, [5])
    assert scaler.decide(1.0, [40]).desired == 1  # too brief
    assert scaler.decide(5.0, [40]).desired == 1
    assert scaler.decide(6.0, [40]).desired == 4  # above target for the whole window


def test_min_and_max_bounds() -> None:
    scaler = Autoscaler(config(min_containers=2, max_containers=3, scaledown_window_s=0.0))
    assert scaler.decide(0.0, []).desired == 2
    capped = scaler.decide(1.0, [100, 100])
    assert capped.desired == 3
    assert "max_containers 3" in capped.reason
    assert scaler.decide(2.0, [0, 0, 0]).desired == 2


def test_instant_need_rounds_up() -> None:
    cfg = config(buffer_containers=1)
    assert [instant_need(d, cfg) for d in (0, 1, 10, 11, 20, 21)] == [0, 2, 2, 3, 3, 4]


@pytest.mark.parametrize(
    "overrides",
    [
        {"min_containers": 3, "max_containers": 2},
        {"target_inputs": 0},
        {"target_inputs": 10, "max_inputs": 5},
        {"buffer_containers": -1},
        {"scaledown_window_s": -1.0},
    ],
)
def test_invalid_config_rejected(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        config(**overrides)


def test_time_must_not_go_backwards() -> None:
    scaler = Autoscaler(config())
    scaler.decide(5.0, [1])
    with pytest.raises(ValueError, match="backwards"):
        scaler.decide(4.0, [1])
