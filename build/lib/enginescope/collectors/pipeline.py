"""Plug-in points: a Source produces Batches, a Sink consumes them."""

from __future__ import annotations

from typing import Protocol

from enginescope.collectors.model import Batch


class Source(Protocol):
    name: str

    def collect(self, now_s: float) -> Batch:
        """Collect one tick. Never raises: failures become events and self-metrics."""
        ...

    def close(self) -> None: ...


class Sink(Protocol):
    def write(self, batch: Batch) -> None:
        """Accept a batch without blocking the scrape loop for long."""
        ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
