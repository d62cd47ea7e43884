"""Real OTLP metric receivers for tests: gRPC (grpcio + opentelemetry-proto servicer) and
HTTP/protobuf (http.server, gzip/deflate aware). Both keep every decoded request, and can be
told to answer the next requests with an error (``fail_next``) or a partial success."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Point:
    """One received data point, flattened with its metric and resource."""

    resource: dict[str, str]
    name: str
    unit: str
    kind: str  # gauge | sum | histogram
    temporality: int  # 1 delta, 2 cumulative, 0 for gauges
    monotonic: bool
    attributes: dict[str, str]
    start_ns: int
    time_ns: int
    value: float | None = None
    bucket_counts: tuple[int, ...] = ()
    explicit_bounds: tuple[float, ...] = ()
    count: int = 0
    sum: float = 0.0


def _attrs(kvs) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in kvs}


def flatten(requests: list[ExportMetricsServiceRequest]) -> list[Point]:
    out = []
    for request in requests:
        for rm in request.resource_metrics:
            resource = _attrs(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    data = getattr(m, kind)
                    temporality = getattr(data, "aggregation_temporality", 0)
                    monotonic = getattr(data, "is_monotonic", False)
                    for p in data.data_points:
                        point = Point(
                            resource,
                            m.name,
                            m.unit,
                            kind,
                            temporality,
                            monotonic,
                            _attrs(p.attributes),
                            p.start_time_unix_nano,
                            p.time_unix_nano,
                        )
                        if kind == "histogram":
                            point.bucket_counts = tuple(p.bucket_counts)
                            point.explicit_bounds = tuple(p.explicit_bounds)
                            point.count, point.sum = p.count, p.sum
                        else:
                            point.value = p.as_double if p.HasField("as_double") else float(p.as_int)
                        out.append(point)
    return out


@dataclass
class Failure:
    """How to answer one request instead of accepting it."""

    code: int | grpc.StatusCode  # HTTP status or gRPC code
    message: str = "rejected by test"
    retry_after: str | None = None  # HTTP Retry-After header
    retry_delay_s: float | None = None  # gRPC google.rpc.RetryInfo
    location: str | None = None  # HTTP Location header (redirects)


class _Store:
    def __init__(self) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.arrivals_s: list[tuple[float, bool]] = []  # (monotonic time, accepted) of every request
        self.failures: list[Failure] = []
        self.partial: tuple[int, str] | None = None  # (rejected points, message) for accepted requests
        self.lock = threading.Lock()
        self.received = threading.Condition(self.lock)

    def fail_next(self, failure: Failure, count: int = 1) -> None:
        with self.lock:
            self.failures.extend([failure] * count)

    def next_failure(self) -> Failure | None:
        """Pop the failure for the request that just arrived (None = accept it)."""
        with self.received:
            failure = self.failures.pop(0) if self.failures else None
            self.arrivals_s.append((time.monotonic(), failure is None))
            self.received.notify_all()
            return failure

    def response(self) -> metrics_service_pb2.ExportMetricsServiceResponse:
        response = metrics_service_pb2.ExportMetricsServiceResponse()
        if self.partial:
            response.partial_success.rejected_data_points = self.partial[0]
            response.partial_success.error_message = self.partial[1]
        return response

    def add(self, request: ExportMetricsServiceRequest, metadata: dict[str, str]) -> None:
        with self.received:
            self.requests.append(request)
            self.metadata.append(metadata)
            self.received.notify_all()

    def points(self) -> list[Point]:
        with self.lock:
            return flatten(list(self.requests))

    def wait_for(self, predicate, timeout_s: float = 10.0) -> bool:
        with self.received:
            return self.received.wait_for(lambda: predicate(flatten(self.requests)), timeout=timeout_s)


class GrpcReceiver(_Store):
    """A MetricsService on 127.0.0.1:<port>; ``stop()``/``start()`` reuse the same port."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GrpcReceiver:
        store = self

        class Servicer(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):  # noqa: N802 (gRPC method name)
                failure = store.next_failure()
                if failure is not None:
                    if failure.retry_delay_s is not None:
                        context.set_trailing_metadata([("grpc-status-details-bin", _retry_status(failure))])
                    context.abort(failure.code, failure.message)
                store.add(request, dict(context.invocation_metadata()))
                return store.response()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Servicer(), self._server)
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None


def _retry_status(failure: Failure) -> bytes:
    delay = Duration()
    delay.FromNanoseconds(int(failure.retry_delay_s * 1e9))
    status = status_pb2.Status(code=failure.code.value[0], message=failure.message)
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status.SerializeToString()


class HttpReceiver(_Store):
    """POST /v1/metrics taking ExportMetricsServiceRequest protobuf, gzip or deflate encoded."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self._server: ThreadingHTTPServer | None = None
        self.encodings: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HttpReceiver:
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                store.encodings.append(encoding)
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/metrics" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(404 if self.path != "/v1/metrics" else 415)
                    return
                failure = store.next_failure()
                if failure is not None:
                    status = status_pb2.Status(message=failure.message)
                    self._reply(failure.code, status, failure.retry_after, failure.location)
                    return
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                store.add(request, {k.lower(): v for k, v in self.headers.items()})
                self._reply(200, store.response())

            def _reply(
                self, code: int, message, retry_after: str | None = None, location: str | None = None
            ) -> None:
                reply = message.SerializeToString()
                self.send_response(code)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                if location is not None:
                    self.send_header("Location", location)
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class HangingReceiver:
    """Accepts TCP connections and never answers (a wedged Collector or load balancer)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self._conns.append(conn)  # kept open, never read, never answered

    def stop(self) -> None:
        self._stop.set()
        for conn in self._conns:
            conn.close()
        self._sock.close()
