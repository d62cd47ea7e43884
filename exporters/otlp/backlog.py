"""The sink's backlog: serialized OTLP requests, bounded by the memory they hold.

Each export is encoded and compressed exactly once, at enqueue time, into the bytes the
wire wants (``ExportMetricsServiceRequest`` protobuf; gzip/deflate for OTLP/HTTP, plain for
gRPC, which compresses the message itself) and only those bytes are kept. Protobuf messages
concatenate: the bytes of two requests, joined, parse as one request holding the
``resource_metrics`` of both. Gzip members concatenate too (RFC 1952 §2.2; Go's and Python's
readers decode multi-member streams), so a chunk of gzip entries is joined as stored, never
decompressed and recompressed. Deflate (zlib) streams do not concatenate: one entry per request.
"""

from __future__ import annotations

import gzip
import sys
import zlib
from collections import deque
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import MetricsData


@dataclass(slots=True)
class Entry:
    """One batch, ready to send."""

    payload: bytes  # serialized request, compressed with ``encoding``
    encoding: str  # none | gzip | deflate
    raw_bytes: int  # serialized size before compression (what request-size limits count)
    points: int
    cancelled: bool = False  # in flight but given up to make room: dropped unless that send succeeds

    @property
    def held_bytes(self) -> int:
        """Memory this entry pins: the bytes object plus the entry and its deque slot."""
        return sys.getsizeof(self.payload) + ENTRY_OVERHEAD_BYTES


ENTRY_OVERHEAD_BYTES = sys.getsizeof(Entry(b"", "none", 0, 0)) + 8  # + one deque pointer


def count_points(data: MetricsData) -> int:
    return sum(
        len(m.data.data_points) for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    )


def compress(raw: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(raw, compresslevel=6, mtime=0)
    if encoding == "deflate":
        return zlib.compress(raw, 6)
    return raw


def decompress(payload: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(payload)
    if encoding == "deflate":
        return zlib.decompress(payload)
    return payload


def encode_entry(data: MetricsData, encoding: str) -> Entry:
    raw = encode_metrics(data).SerializeToString()
    return Entry(compress(raw, encoding), encoding, len(raw), count_points(data))


def joinable(encoding: str) -> bool:
    """Whether stored payloads of this encoding can be joined into one request as they are."""
    return encoding in ("none", "gzip")


def request_body(chunk: list[Entry], encoding: str) -> bytes:
    """One request from a chunk of entries stored in the wire ``encoding``: joined as stored."""
    if len(chunk) == 1 and chunk[0].encoding == encoding:
        return chunk[0].payload
    if all(e.encoding == encoding for e in chunk) and joinable(encoding):
        return b"".join(e.payload for e in chunk)
    # Only reached when entries were stored for another encoding (not by OtlpSink).
    raw = b"".join(decompress(e.payload, e.encoding) for e in chunk)
    return compress(raw, encoding)


class Backlog:
    """Queued and in-flight entries, oldest first, holding at most ``limit_bytes``.

    Not thread-safe: the sink calls it under its lock. ``held_bytes`` counts queued entries and
    in-flight ones not given up; a cancelled in-flight entry is released when its send ends.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.queued: deque[Entry] = deque()
        self.inflight: list[Entry] = []
        self.held_bytes = 0

    def __len__(self) -> int:
        return len(self.queued) + sum(not e.cancelled for e in self.inflight)

    def measured_bytes(self) -> int:
        """``held_bytes`` recomputed from the objects themselves (for tests and benchmarks)."""
        return sum(e.held_bytes for e in (*self.queued, *self.inflight) if not e.cancelled)

    def add(self, entry: Entry) -> list[Entry]:
        """Enqueue; returns what was dropped to stay within the limit (oldest first)."""
        need = entry.held_bytes
        if need > self.limit_bytes:
            return [entry]  # larger than the whole backlog
        # The in-flight request holds the oldest batches: give those up first.
        for old in self.inflight:
            if self.held_bytes + need <= self.limit_bytes:
                break
            if not old.cancelled:
                old.cancelled = True
                self.held_bytes -= old.held_bytes
        dropped = []
        while self.queued and self.held_bytes + need > self.limit_bytes:
            old = self.queued.popleft()
            self.held_bytes -= old.held_bytes
            dropped.append(old)
        self.queued.append(entry)
        self.held_bytes += need
        return dropped

    def take(self, max_request_bytes: int) -> list[Entry]:
        """Move the oldest entries, up to ``max_request_bytes`` serialized (at least one), in flight."""
        chunk, size = [], 0
        while self.queued and (
            not chunk
            or (size + self.queued[0].raw_bytes <= max_request_bytes and joinable(self.queued[0].encoding))
        ):
            entry = self.queued.popleft()
            chunk.append(entry)
            size += entry.raw_bytes
        self.inflight = chunk
        return chunk

    def settle(self, delivered: bool, keep: bool) -> tuple[list[Entry], list[Entry]]:
        """End the in-flight send; returns (sent, lost).

        ``delivered``: the receiver has the data, cancelled entries included. Otherwise ``keep``
        puts the entries not given up back in front (a retryable failure); lost entries are the
        cancelled ones, or all of them when not kept (a permanent failure).
        """
        chunk, self.inflight = self.inflight, []
        if delivered:
            self.held_bytes -= sum(e.held_bytes for e in chunk if not e.cancelled)
            return chunk, []
        kept = [e for e in chunk if keep and not e.cancelled]
        lost = [e for e in chunk if not keep or e.cancelled]
        self.queued.extendleft(reversed(kept))  # oldest still first
        self.held_bytes -= sum(e.held_bytes for e in lost if not e.cancelled)
        return [], lost
