"""Detection delay and false alarms of the speculative-acceptance drift detector.

Synthetic chain-acceptance traffic (tests/spec_traffic.py: 4 classes, 1-2 req/s each): for each
seed, 70 min of stable traffic then one class loses ``drop`` of its acceptance; the delay is
detection time minus the drop. False alarms: drifts found on ``--stable-hours`` of stable traffic
(2 h per seed). Run: ``.venv/bin/python benchmarks/spec_drift_power.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from enginescope.views.spec_drift import DriftConfig, scan_frame  # noqa: E402
from tests.spec_traffic import CLASSES, T0_S, generate  # noqa: E402

DROP_AT_S = 70 * 60.0


def delays(drop: float, seeds: int) -> tuple[list[float], int]:
    found, missed = [], 0
    for seed in range(seeds):
        cls = CLASSES[seed % len(CLASSES)].name
        frame = generate(T0_S, DROP_AT_S + 900, seed=100 + seed, drop=(cls, DROP_AT_S, drop))
        hits = [d for d in scan_frame(frame, T0_S, T0_S + DROP_AT_S + 900) if d.traffic_class == cls]
        if hits:
            found.append(hits[0].detected_s - (T0_S + DROP_AT_S))
        else:
            missed += 1
    return found, missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--stable-hours", type=float, default=48.0)
    args = parser.parse_args()
    print(f"alpha per test (4 classes): {DriftConfig().alpha(4):.3g}")
    for drop in (0.15, 0.10, 0.05):
        started = time.perf_counter()
        found, missed = delays(drop, args.seeds)
        summary = f"median {statistics.median(found):.0f} s, max {max(found):.0f} s" if found else "-"
        print(f"drop {drop:.0%}: detected {len(found)}/{args.seeds} within 15 min ({summary}); "
              f"missed {missed}; {time.perf_counter() - started:.1f} s")  # fmt: skip
    runs, alarms = int(args.stable_hours // 2), 0
    for seed in range(runs):
        alarms += len(scan_frame(generate(T0_S, 7200, seed=1000 + seed), T0_S, T0_S + 7200))
    print(f"stable traffic: {alarms} false alarm(s) in {2 * runs} h x 4 classes")


if __name__ == "__main__":
    main()
