"""What runs inside one GPU container: the engine, its sidecar, and a clean exit.

Plain Python on purpose (no ``modal`` import): the Modal class in ``enginescope.deploy.app_builder`` calls
:class:`ContainerEntry` from ``@modal.enter``/``@modal.exit``, and the same code runs locally
against the simulated engine (``python -m enginescope.deploy.container --recipe R --engine-cmd ...``), so the
start-up and shutdown paths are tested without a GPU.

Order matters. The sidecar starts *before* the engine so a cold start is observed (the
``container_started`` event, then engine scrapes as soon as ``/metrics`` answers). On exit:
``draining`` is recorded, in-flight requests get up to the grace period, the sidecar takes a
final scrape while the engine is still up and flushes, then the engine is stopped and the
Volume committed. All of it fits Modal's 30 s exit budget.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from enginescope.recipes.schema import Recipe, load_recipe

log = logging.getLogger(__name__)

EXIT_BUDGET_S = 30.0  # Modal kills exit handlers after 30 s
STOP_RESERVE_S = 8.0  # kept for the final scrape, flush, engine stop and commit
ENGINE_STOP_TIMEOUT_S = 5.0
COMMIT_RESERVE_S = 1.0  # the last Volume commit
MIN_SIDECAR_STOP_S = 1.0


class EngineStartError(RuntimeError):
    """The engine exited or never became healthy."""


def sglang_command(
    recipe: Recipe, *, port: int, metrics_dir: Path | None, host: str = "0.0.0.0"
) -> list[str]:
    """The ``sglang.launch_server`` command line for ``recipe``."""
    m, p, s = recipe.model, recipe.parallel, recipe.speculative
    cmd = [
        "python", "-m", "sglang.launch_server",
        "--model-path", m.hf_id, "--revision", m.revision, "--served-model-name", m.served_name,
        "--host", host, "--port", str(port),
        "--tp", str(p.tp), "--dp", str(p.dp),
        "--enable-metrics",
    ]  # fmt: skip
    if p.ep > 1:
        cmd += ["--ep-size", str(p.ep)]
    if p.dp_attention:
        cmd.append("--enable-dp-attention")
    if metrics_dir is not None:
        cmd += ["--export-metrics-to-file", "--export-metrics-to-file-dir", str(metrics_dir)]
    if s.enabled:
        cmd += ["--speculative-algorithm", s.method]
        if s.draft_model:
            cmd += ["--speculative-draft-model-path", s.draft_model]
        cmd += [
            "--speculative-num-steps", str(s.num_steps),
            "--speculative-eagle-topk", str(s.topk),
            "--speculative-num-draft-tokens", str(s.num_draft_tokens),
        ]  # fmt: skip
    return cmd + list(recipe.engine.extra_args)


def in_flight_requests(metrics_text: str) -> float:
    """Running + queued requests, aggregated as the catalog does everywhere else: ranks that
    mirror one scheduler (``tp_rank``, ...) count once (their max), ``dp_rank`` groups add up,
    and with priority scheduling only the ``priority=""`` total counts."""
    from enginescope.collectors.catalog import SGLANG, canonical_family
    from enginescope.collectors.exposition import parse_exposition

    wanted = {"sglang:num_running_reqs", "sglang:num_queue_reqs"}
    gauges: dict[str, list] = {}
    for family in parse_exposition(metrics_text).families:
        name = canonical_family(family.name)
        if name in wanted:
            gauges.setdefault(name, []).extend(
                zip((r.labels for r in family.refs), family.values, strict=True)
            )
    values = dict(SGLANG.signals(set(gauges), gauges, {}))
    return values.get("running_requests", 0.0) + values.get("queue_depth", 0.0)


def _http_get(url: str, timeout_s: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (OSError, ValueError):
        return 0, ""


class ContainerEntry:
    """Start the engine and sidecar, drain and stop them. ``start``/``drain``/``stop``."""

    def __init__(
        self,
        recipe: Recipe,
        engine_cmd: list[str],
        store_dir: Path,
        *,
        engine_url: str | None = None,
        request_log_dir: Path | None = None,
        engine_env: Mapping[str, str] | None = None,
        commit: Callable[[], None] | None = None,
        nvml: Any | None = None,
        extra_sinks: list[Any] | None = None,
        warmup_requests: int = 3,
        deferred_commits: bool = False,
    ) -> None:
        self.recipe = recipe
        self.engine_cmd = engine_cmd
        self.store_dir = Path(store_dir)
        self.engine_url = engine_url or f"http://127.0.0.1:{recipe.server.port}"
        self.request_log_dir = request_log_dir
        self.engine_env = dict(engine_env or {})
        self.commit = commit
        self.nvml = nvml
        self.extra_sinks = extra_sinks or []
        self.warmup_requests = warmup_requests
        # On a Modal Volume (no atomic create across containers) the fleet watcher commits.
        self.deferred_commits = deferred_commits
        self.engine: subprocess.Popen[bytes] | None = None
        self.sidecar: Any = None
        self._stop = threading.Event()
        self._commit_thread: threading.Thread | None = None
        self._started_at_s = time.monotonic()
        self._exit_started_s: float | None = None  # monotonic; drain() or stop(), whichever first

    # -- start -----------------------------------------------------------------------------

    def start(self) -> None:
        """Sidecar, then engine; returns once the engine is healthy and warmed up."""
        self._started_at_s = time.monotonic()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if self.request_log_dir is not None:
            self.request_log_dir.mkdir(parents=True, exist_ok=True)
        self.sidecar = self._make_sidecar()
        self.sidecar.start()
        self._start_commit_loop()
        log.info("starting engine: %s", shlex.join(self.engine_cmd))
        self.engine = subprocess.Popen(
            self.engine_cmd, env={**os.environ, **self.engine_env}, start_new_session=True
        )
        self._wait_healthy(float(self.recipe.server.health_timeout_s))
        self._warm_up()
        startup_s = time.monotonic() - self._started_at_s
        self.sidecar.ready(f"startup_s={startup_s:.1f}")  # the container, not /health, decides
        log.info("engine ready after %.1fs", startup_s)

    def _make_sidecar(self) -> Any:
        from enginescope.sidecar import Sidecar, SidecarConfig

        config = SidecarConfig(
            engine_url=self.engine_url,
            store_dir=self.store_dir,
            interval_s=self.recipe.sidecar.interval_s,
            engine=self.recipe.engine.name,
            replica=None,  # MODAL_TASK_ID inside Modal
            model=self.recipe.model.served_name,
            gpu_type=self.recipe.gpu.type.rstrip("!+"),
            request_log_dir=self.request_log_dir,
            nvml=self.nvml,
            extra_sinks=self.extra_sinks,
            ready_by="owner",  # ready = healthy and warmed up (start())
            deferred_commits=self.deferred_commits,
        )
        return Sidecar(config)

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.engine.poll() if self.engine else None
            if code is not None:
                raise EngineStartError(f"engine exited with status {code} before /health answered")
            if _http_get(f"{self.engine_url}/health", 2.0)[0] == 200:
                return
            if time.monotonic() >= deadline or self._stop.is_set():
                raise EngineStartError(f"{self.engine_url}/health not ready after {timeout_s:g}s")
            time.sleep(0.5)

    def _warm_up(self) -> None:
        """A few short completions so the first user request does not pay for lazy init."""
        body = json.dumps({
            "model": self.recipe.model.served_name,
            "messages": [{"role": "user", "content": "Say OK."}],
            "max_tokens": 4,
        }).encode()  # fmt: skip
        for _ in range(self.warmup_requests):
            request = urllib.request.Request(
                f"{self.engine_url}/v1/chat/completions", body, {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=120) as resp:
                    resp.read()
            except (OSError, ValueError) as exc:  # warm-up is best effort
                log.warning("warm-up request failed: %s", exc)

    def _start_commit_loop(self) -> None:
        if self.commit is None:
            return
        interval_s = self.recipe.sidecar.commit_interval_s
        self._commit_thread = threading.Thread(
            target=self._commit_loop, args=(interval_s,), name="volume-commit", daemon=True
        )
        self._commit_thread.start()

    def _commit_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self._commit()

    def _commit(self) -> None:
        try:
            self.commit()  # type: ignore[misc]
        except Exception as exc:  # a failed commit is retried next time; never fatal
            log.warning("volume commit failed: %s", exc)

    def cancel_start(self) -> None:
        """Make a pending :meth:`start` give up waiting for the engine (exit requested)."""
        self._stop.set()

    # -- exit ------------------------------------------------------------------------------

    def drain(self, reason: str = "", max_wait_s: float | None = None) -> float:
        """Record ``draining`` and wait (bounded) for in-flight requests; returns seconds waited."""
        budget_s = min(float(self.recipe.server.exit_grace_period_s), EXIT_BUDGET_S - STOP_RESERVE_S)
        max_wait_s = budget_s if max_wait_s is None else max_wait_s
        self._exit_started_s = self._exit_started_s or time.monotonic()
        if self.sidecar is not None:
            self.sidecar.drain(reason or "exit requested")
        began = time.monotonic()
        while time.monotonic() - began < max_wait_s and self._engine_alive():
            status, text = _http_get(f"{self.engine_url}/metrics", 1.0)
            if status != 200 or in_flight_requests(text) == 0:
                break
            time.sleep(0.25)
        return time.monotonic() - began

    def stop(self) -> None:
        """Final scrape + flush, stop the engine, commit. Idempotent, never raises."""
        self._stop.set()
        self._exit_started_s = self._exit_started_s or time.monotonic()
        if self.sidecar is not None:
            try:
                self.sidecar.stop(timeout_s=self.sidecar_stop_budget_s())
            except Exception as exc:
                log.error("sidecar stop failed: %s", exc)
        self._stop_engine()
        if self._commit_thread is not None:
            self._commit_thread.join(timeout=1.0)
        if self.commit is not None:
            self._commit()

    def sidecar_stop_budget_s(self) -> float:
        """What is left of Modal's exit budget for the final scrape and every sink's shutdown,
        after keeping enough for the engine stop and the last commit."""
        began = self._exit_started_s or time.monotonic()
        left_s = EXIT_BUDGET_S - (time.monotonic() - began) - ENGINE_STOP_TIMEOUT_S - COMMIT_RESERVE_S
        return max(MIN_SIDECAR_STOP_S, left_s)

    def _engine_alive(self) -> bool:
        return self.engine is not None and self.engine.poll() is None

    def _stop_engine(self) -> None:
        if not self._engine_alive():
            return
        assert self.engine is not None
        try:  # the engine runs in its own session: signal the whole group (scheduler workers too)
            os.killpg(self.engine.pid, signal.SIGTERM)
            self.engine.wait(timeout=ENGINE_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("engine ignored SIGTERM for %.0fs; killing", ENGINE_STOP_TIMEOUT_S)
            os.killpg(self.engine.pid, signal.SIGKILL)
            self.engine.wait(timeout=ENGINE_STOP_TIMEOUT_S)
        except ProcessLookupError:
            pass


# -- local entry point -----------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m enginescope.deploy.container", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--recipe", required=True, type=Path, help="recipe TOML file")
    parser.add_argument("--store", required=True, type=Path, help="store folder")
    parser.add_argument("--engine-cmd", help="engine command line (default: SGLang from the recipe)")
    parser.add_argument("--port", type=int, help="engine port (default: the recipe's server.port)")
    parser.add_argument("--request-log-dir", type=Path, help="engine's per-request export folder")
    parser.add_argument(
        "--deferred-commits",
        action="store_true",
        help="leave Delta commits to the fleet watcher (a shared Volume)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT, then drain and stop within the exit budget."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parse_args(argv)
    recipe = load_recipe(args.recipe)
    port = args.port or recipe.server.port
    metrics_dir = args.request_log_dir if recipe.sidecar.request_log else None
    cmd = (
        shlex.split(args.engine_cmd)
        if args.engine_cmd
        else sglang_command(recipe, port=port, metrics_dir=metrics_dir)
    )
    entry = ContainerEntry(
        recipe, cmd, args.store, engine_url=f"http://127.0.0.1:{port}", request_log_dir=metrics_dir,
        engine_env=dict(recipe.engine.env), deferred_commits=args.deferred_commits,
    )  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: (stop.set(), entry.cancel_start()))
    status = 0
    try:
        entry.start()
        print(f"ready: {entry.engine_url}", flush=True)
    except EngineStartError as exc:
        log.error("%s", exc)
        status = 0 if stop.is_set() else 1
    while status == 0 and not stop.wait(0.5) and entry._engine_alive():
        pass
    if status == 0 and not stop.is_set():
        log.error("engine exited with status %s", entry.engine.poll() if entry.engine else None)
        status = 1
    entry.drain("SIGTERM" if stop.is_set() else "engine exited")
    entry.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
