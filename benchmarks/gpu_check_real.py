"""Real-GPU check for the NVML source: do power, utilisation, temperature and clocks respond to load?

Run from the repo root on a GPU machine (needs only nvidia-ml-py; torch or cupy for the load):

    python benchmarks/gpu_check_real.py [--idle-s 8] [--load-s 22] [--out result.json]

Phases: idle polling, then a matrix-multiply load in a child process (torch, else cupy)
while polling continues, then a burst of back-to-back polls to measure the per-poll cost
(thread CPU time, so the load process does not count). The loaded GPU is the one with
the highest utilisation under load. Writes JSON to --out (default $OUT/gpu_check.json
when $OUT is set). Exit status: 0 all checks pass, 1 a check failed, 2 could not run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enginescope.collectors.gpu import GpuSource  # noqa: E402
from enginescope.collectors.model import Identity  # noqa: E402

# Child process: load GPU 0 with bf16/fp32 GEMMs until the deadline.
LOAD_SCRIPT = r"""
import sys, time
seconds = float(sys.argv[1])
try:
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError("torch has no CUDA device")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn_like(a)
    sync, backend = torch.cuda.synchronize, "torch " + torch.__version__
except Exception as torch_exc:
    try:
        import cupy
        a = cupy.random.random((8192, 8192), dtype=cupy.float32)
        b = cupy.random.random((8192, 8192), dtype=cupy.float32)
        sync, backend = cupy.cuda.Device().synchronize, "cupy " + cupy.__version__
    except Exception as cupy_exc:
        print("NO_LOAD torch:", repr(torch_exc), "cupy:", repr(cupy_exc), flush=True)
        sys.exit(3)
print("LOAD_READY", backend, flush=True)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    for _ in range(16):
        c = a @ b
    sync()
"""

SLOWDOWN_FLAGS = (
    "throttle_sw_power_cap",
    "throttle_thermal",
    "throttle_hw_slowdown",
    "throttle_hw_power_brake",
)
Sample = tuple[str, float, dict[str, Any]]  # (phase, t_s, GpuRow.fields) for one GPU


def load_backend_available() -> str | None:
    """Which GEMM library the load child can use, without importing it here."""
    for name in ("torch", "cupy"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def poll_phase(
    source: GpuSource,
    phase: str,
    duration_s: float,
    interval_s: float,
    out: dict[str, list[Sample]],
    events: list[str],
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll for ``duration_s``, appending each GPU's row under its UUID."""
    end = clock() + duration_s
    while clock() < end:
        now = clock()
        batch = source.collect(now)
        for row in batch.gpu:
            out.setdefault(row.gpu_uuid, []).append((phase, now, row.fields))
        events.extend(f"{e.kind}: {e.detail}" for e in batch.events)
        sleep(interval_s)


def measure_poll_cost(
    source: GpuSource, polls: int, clock: Callable[[], float] = time.time
) -> dict[str, float]:
    """Back-to-back polls: thread CPU ms and wall ms per poll (p50, p95, max)."""
    cpu_ms: list[float] = []
    wall_ms: list[float] = []
    for _ in range(polls):
        c0, w0 = time.thread_time(), time.perf_counter()
        source.collect(clock())
        cpu_ms.append((time.thread_time() - c0) * 1e3)
        wall_ms.append((time.perf_counter() - w0) * 1e3)
    return {
        "polls": polls,
        "gpus": len(source.gpu_uuids),
        "cpu_ms_p50": statistics.median(cpu_ms),
        "cpu_ms_p95": _pct(cpu_ms, 0.95),
        "cpu_ms_max": max(cpu_ms),
        "wall_ms_p50": statistics.median(wall_ms),
        "wall_ms_p95": _pct(wall_ms, 0.95),
        "wall_ms_max": max(wall_ms),
    }


def _pct(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _column(samples: list[Sample], phase: str, column: str) -> list[tuple[float, float]]:
    return [
        (t, float(f[column])) for p, t, f in samples if p == phase and isinstance(f.get(column), int | float)
    ]


def _median(points: list[tuple[float, float]]) -> float | None:
    return statistics.median(v for _, v in points) if points else None


def pick_loaded_gpu(by_uuid: dict[str, list[Sample]]) -> str | None:
    """The GPU with the highest median utilisation during the load phase."""
    scored = [
        (_median(_column(s, "load", "gpu_utilization_pct")) or 0.0, uuid) for uuid, s in by_uuid.items()
    ]
    return max(scored)[1] if scored else None


def analyze(samples: list[Sample]) -> dict[str, Any]:
    """Checks that the loaded GPU's readings moved the right way (idle -> load)."""
    checks: dict[str, dict[str, Any]] = {}

    def check(name: str, ok: bool | None, detail: str) -> None:
        checks[name] = {"ok": ok, "detail": detail}  # ok None: column missing on this GPU

    p_idle, p_load = (
        _median(_column(samples, "idle", "power_w")),
        _median(_column(samples, "load", "power_w")),
    )
    if p_idle is None or p_load is None:
        check("power", None, "power_w missing")
    else:
        check(
            "power",
            p_load - p_idle >= 25.0,
            f"median power idle {p_idle:.1f} W -> load {p_load:.1f} W (need +25 W)",
        )

    u_load = _median(_column(samples, "load", "gpu_utilization_pct"))
    if u_load is None:
        check("utilization", None, "gpu_utilization_pct missing")
    else:
        check("utilization", u_load >= 50.0, f"median utilisation under load {u_load:.0f}% (need >= 50%)")

    temps_idle, temps_load = (
        _column(samples, "idle", "temperature_c"),
        _column(samples, "load", "temperature_c"),
    )
    if not temps_idle or not temps_load:
        check("temperature", None, "temperature_c missing")
    else:
        t0, t1 = statistics.median(v for _, v in temps_idle), max(v for _, v in temps_load)
        check(
            "temperature",
            t1 - t0 >= 2.0,
            f"temperature idle {t0:.0f} C -> peak under load {t1:.0f} C (need +2 C)",
        )

    c_idle, c_load = (
        _median(_column(samples, "idle", "sm_clock_mhz")),
        _median(_column(samples, "load", "sm_clock_mhz")),
    )
    c_max = _median(_column(samples, "load", "sm_clock_max_mhz"))
    if c_idle is None or c_load is None or c_max is None:
        check("sm_clock", None, "sm_clock_mhz or sm_clock_max_mhz missing")
    else:
        # A GEMM can power-cap an H100 below a still-boosted idle clock: fine if a reason says so.
        capped = any(f.get(c) for p, _, f in samples if p == "load" for c in SLOWDOWN_FLAGS)
        ok = c_load >= 0.5 * c_max and (c_load >= c_idle or capped)
        detail = f"median SM clock idle {c_idle:.0f} -> load {c_load:.0f} MHz (max {c_max:.0f})"
        check("sm_clock", ok, detail + (", slowdown reason seen under load" if capped else ""))

    energy, power = _column(samples, "load", "energy_j"), _column(samples, "load", "power_w")
    if len(energy) < 2 or not power or energy[-1][0] <= energy[0][0]:
        check("energy", None, "energy_j missing")
    else:
        rate_w = (energy[-1][1] - energy[0][1]) / (energy[-1][0] - energy[0][0])
        mean_w = statistics.fmean(v for _, v in power)
        ok = 0.6 * mean_w <= rate_w <= 1.4 * mean_w
        check("energy", ok, f"energy rate {rate_w:.0f} W vs mean power {mean_w:.0f} W (need within 40%)")

    required = [c for c in checks.values() if c["ok"] is not None]
    return {"ok": bool(required) and all(c["ok"] for c in required), "checks": checks}


def empty_columns(samples: list[Sample]) -> list[str]:
    """Columns that were None in every row (NotSupported on this GPU/driver)."""
    columns = samples[0][2].keys() if samples else []
    return sorted(c for c in columns if all(f.get(c) is None for _, _, f in samples))


class LoadProcess:
    """The GEMM child process; ``start`` returns the backend name once CUDA is up."""

    def __init__(self, seconds: float) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", LOAD_SCRIPT, str(seconds)], stdout=subprocess.PIPE, text=True
        )

    def wait_ready(self, timeout_s: float = 180.0) -> str:
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout_s)
        line = self._proc.stdout.readline().strip() if ready else ""
        if not line.startswith("LOAD_READY"):
            self.stop()
            raise RuntimeError(f"load process not ready: {line or 'timeout/exit'}")
        return line.removeprefix("LOAD_READY").strip()

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def run(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    result: dict[str, Any] = {"host": platform.node(), "python": platform.python_version(), "ok": False}
    source = GpuSource(identity=Identity(replica="gpu-check"))
    by_uuid: dict[str, list[Sample]] = {}
    events: list[str] = []
    result["events"] = events
    poll_phase(source, "idle", args.idle_s, args.interval_s, by_uuid, events)
    if source.disabled or not by_uuid:
        result["error"] = "GPU source disabled or no GPU rows: " + "; ".join(events)
        return 2, result
    backend = load_backend_available()
    if backend is None:
        result["error"] = "neither torch nor cupy is importable: no CUDA load can be generated"
        return 2, result
    load = LoadProcess(args.load_s + 5.0)
    try:
        result["load_backend"] = load.wait_ready()
        poll_phase(source, "load", args.load_s, args.interval_s, by_uuid, events)
    except RuntimeError as exc:
        result["error"] = str(exc)
        return 2, result
    finally:
        load.stop()
    result["poll_cost"] = measure_poll_cost(source, args.cost_polls)
    uuid = pick_loaded_gpu(by_uuid)
    samples = by_uuid[uuid] if uuid else []
    result.update(analyze(samples))
    result["gpu_uuid"] = uuid
    result["gpu_name"] = samples[0][2].get("gpu_name") if samples else None
    result["driver_version"] = samples[0][2].get("driver_version") if samples else None
    result["empty_columns"] = empty_columns(samples)
    result["last_row"] = samples[-1][2] if samples else None
    source.close()
    return (0 if result["ok"] else 1), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=8.0, help="idle polling before the load (s)")
    parser.add_argument("--load-s", type=float, default=22.0, help="polling while the GEMM load runs (s)")
    parser.add_argument("--interval-s", type=float, default=0.25, help="poll interval (s)")
    parser.add_argument("--cost-polls", type=int, default=400, help="back-to-back polls for the cost figure")
    default_out = Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None
    parser.add_argument("--out", type=Path, default=default_out, help="JSON result path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    status, result = run(args)
    result["exit_status"] = status
    for name, c in result.get("checks", {}).items():
        print(f"{'PASS' if c['ok'] else 'SKIP' if c['ok'] is None else 'FAIL'} {name}: {c['detail']}")
    if "poll_cost" in result:
        print("poll cost:", json.dumps(result["poll_cost"]))
    if "error" in result:
        print("ERROR:", result["error"])
    print(
        f"gpu {result.get('gpu_name')} driver {result.get('driver_version')}; empty columns: {result.get('empty_columns')}"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))
        print("wrote", args.out)
    return status


if __name__ == "__main__":
    sys.exit(main())
