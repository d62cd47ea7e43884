"""Plug-in points: a Source produces Batches, a Sink consumes them; shutdown under one deadline.

``Sink`` follows the OTel SDK's exporter/reader contract: ``write`` must not block for long,
``force_flush(timeout_s)`` and ``shutdown(timeout_s)`` return within their timeout and say
whether everything was written (True) or something was left behind (False).
:func:`shutdown_all` shares ONE deadline across every sink of a sidecar: they shut down in
parallel, so a hung OTLP endpoint and a slow disk together still fit the container's exit
grace. Objects with the older ``flush()``/``close()`` pair are wrapped by :func:`as_sink`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from enginescope.collectors.model import Batch

log = logging.getLogger(__name__)


class Source(Protocol):
    name: str

    def collect(self, now_s: float) -> Batch:
        """Collect one tick. Never raises: failures become events and self-metrics."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    def write(self, batch: Batch) -> None:
        """Accept a batch without blocking the scrape loop for long."""
        ...

    def force_flush(self, timeout_s: float) -> bool:
        """Write out what was accepted; True when all of it is written within ``timeout_s``."""
        ...

    def shutdown(self, timeout_s: float) -> bool:
        """Flush and release resources within ``timeout_s``; True when nothing was lost."""
        ...


def _within(fn: Callable[[], Any], timeout_s: float, name: str) -> bool:
    """Run ``fn`` on a daemon thread; False if it raised or outlived ``timeout_s``."""
    outcome: list[bool] = []

    def run() -> None:
        try:
            result = fn()
        except Exception as exc:  # a sink must never take the sidecar down
            log.error("%s failed: %s: %s", name, type(exc).__name__, exc)
            outcome.append(False)
        else:
            outcome.append(result is not False)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join(max(0.0, timeout_s))
    if thread.is_alive():
        log.warning("%s still running after %.1fs; not waiting for it", name, timeout_s)
        return False
    return bool(outcome and outcome[0])


class LegacySink:
    """A ``Sink`` around an object with ``write``/``flush``/``close`` (no timeouts of its own):
    each call runs on a helper thread and is abandoned at its timeout."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._name = type(inner).__name__

    def write(self, batch: Batch) -> None:
        self.inner.write(batch)

    def force_flush(self, timeout_s: float) -> bool:
        return _within(self.inner.flush, timeout_s, f"{self._name}.flush")

    def shutdown(self, timeout_s: float) -> bool:
        return _within(self.inner.close, timeout_s, f"{self._name}.close")

    def __getattr__(self, name: str) -> Any:  # self_metrics and the like
        return getattr(self.inner, name)


def as_sink(obj: Any) -> Sink:
    """``obj`` itself if it implements the protocol, else wrapped in :class:`LegacySink`."""
    if callable(getattr(obj, "force_flush", None)) and callable(getattr(obj, "shutdown", None)):
        return obj
    return LegacySink(obj)


def shutdown_all(sinks: Sequence[Sink], timeout_s: float, final: Batch | None = None) -> dict[str, bool]:
    """Shut every sink down in parallel under one deadline; returns ``{sink name: ok}``.

    ``final`` (the last tick's batch) is written to each sink first, inside the same
    deadline. Returns within ``timeout_s`` (plus thread start-up) whatever the sinks do.
    """
    deadline = time.monotonic() + max(0.0, timeout_s)
    results: dict[str, bool] = {}
    threads = []
    for index, sink in enumerate(sinks):
        name = f"{index}:{_name(sink)}"

        def run(sink: Sink = sink, name: str = name) -> None:
            try:
                if final is not None:
                    sink.write(final)
                results[name] = bool(sink.shutdown(max(0.0, deadline - time.monotonic())))
            except Exception as exc:
                log.error("sink %s shutdown failed: %s: %s", name, type(exc).__name__, exc)
                results[name] = False

        thread = threading.Thread(target=run, name=f"shutdown-{name}", daemon=True)
        thread.start()
        threads.append((name, thread))
    for name, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("sink %s did not shut down within %.1fs", name, timeout_s)
            results.setdefault(name, False)
    return {name: results.get(name, False) for name, _ in threads}


def _name(sink: Any) -> str:
    inner = getattr(sink, "inner", None)
    return type(inner if inner is not None else sink).__name__
