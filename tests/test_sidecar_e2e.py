"""The production sidecar against a real HTTP server serving a real SGLang 0.5.23 exposition."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from enginescope.collectors.quantile import histogram_quantile
from enginescope.sidecar import Sidecar, SidecarConfig
from tests.exposition_server import ExpositionServer

FIXTURE = Path(__file__).parent / "fixtures" / "sglang" / "0.5.23-single-gpu" / "metrics.txt"
TTFT = "sglang:time_to_first_token_seconds"
STREAMING = 'is_streaming="true"'


def _bump_ttft(text: str, added: dict[float, int], added_sum_s: float) -> str:
    """Add observations to the streaming TTFT histogram: ``added`` maps bucket bound -> new obs."""

    def cumulative(le: float) -> int:
        return sum(n for bound, n in added.items() if bound <= le)

    out = []
    for line in text.splitlines():
        if line.startswith(TTFT) and STREAMING in line:
            head, value = line.rsplit(" ", 1)
            if "_bucket" in head:
                le = float(re.search(r'le="([^"]+)"', head).group(1))
                value = str(float(value) + cumulative(le))
            elif head.startswith(TTFT + "_count"):
                value = str(float(value) + sum(added.values()))
            elif head.startswith(TTFT + "_sum"):
                value = str(float(value) + added_sum_s)
            line = f"{head} {value}"
        out.append(line)
    return "\n".join(out) + "\n"


def _restart(text: str, *families: str) -> str:
    """What an engine restarted from zero serves: counters fall back to small values."""
    out = []
    for line in text.splitlines():
        if line.startswith(("sglang:num_requests_total", *families)):
            head, _ = line.rsplit(" ", 1)
            line = f"{head} 2.0"
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.fixture()
def base_text() -> str:
    return FIXTURE.read_text()


def test_sidecar_stores_true_deltas_quantiles_and_events(tmp_path: Path, base_text: str) -> None:
    from enginescope.store import open_store

    with ExpositionServer(base_text) as server:
        sidecar = Sidecar(SidecarConfig(engine_url=server.url, store_dir=tmp_path, interval_s=1.0))
        sidecar.tick()  # baseline: history from before the sidecar existed is not a spike
        server.body = _bump_ttft(base_text, {0.2: 3, 1.0: 1}, added_sum_s=0.45 + 0.9)
        sidecar.tick()
        server.body = _restart(server.body)
        sidecar.tick()
        sidecar.stop()
        replica = sidecar.identity.replica
        assert set(server.accept_headers) == {"text/plain;version=0.0.4"}

    con = open_store(tmp_path)
    rows = con.execute(
        "SELECT bounds, counts, count FROM histograms WHERE signal = 'ttft_seconds' "
        "AND json_extract_string(labels, '$.is_streaming') = 'true' AND count > 0"
    ).fetchall()
    assert len(rows) == 1, rows  # the baseline scrape produced no histogram increase
    bounds, counts, count = rows[0]
    assert count == 4
    assert counts[bounds.index(0.1)] == 0 and counts[bounds.index(0.2)] == 3 and counts[-1] == 4
    p50 = con.execute(
        "SELECT histogram_quantile(0.5, bounds, counts) FROM histograms WHERE signal='ttft_seconds' AND count > 0"
    ).fetchone()[0]
    assert p50 == pytest.approx(histogram_quantile(0.5, bounds, counts))
    assert 0.1 < p50 <= 0.2

    deltas = [
        r[0]
        for r in con.execute(
            "SELECT delta FROM samples WHERE metric = 'sglang:num_requests_total' "
            "AND json_extract_string(labels, '$.is_streaming') = 'true' ORDER BY ts, delta NULLS FIRST"
        ).fetchall()
    ]
    assert deltas[0] is None  # baseline
    assert deltas[1:3] == [0.0, 2.0]  # after the reset the new value is the increase, never negative
    assert min(deltas[1:]) >= 0

    kinds = [
        r[0]
        for r in con.execute("SELECT kind FROM events WHERE replica = ? ORDER BY ts", [replica]).fetchall()
    ]
    for kind in ("container_started", "engine_ready", "engine_restart", "container_stopped"):
        assert kind in kinds
    identity = con.execute(
        "SELECT DISTINCT engine, model FROM samples WHERE metric LIKE 'sglang:%'"
    ).fetchall()
    assert identity == [("sglang", "meta-llama/Llama-3.1-8B-Instruct")]


def test_replica_id_is_stable_across_sidecar_restarts(tmp_path: Path, base_text: str) -> None:
    with ExpositionServer(base_text) as server:
        first = Sidecar(SidecarConfig(engine_url=server.url, store_dir=tmp_path))
        second = Sidecar(SidecarConfig(engine_url=server.url, store_dir=tmp_path))
        first.stop()
        second.stop()
    assert first.identity.replica == second.identity.replica
    state = list((tmp_path / "state" / "sidecar-ids").iterdir())
    assert [p.read_text() for p in state] == [first.identity.replica]


def test_engine_down_is_an_event_not_a_crash(tmp_path: Path, base_text: str) -> None:
    from enginescope.store import open_store

    with ExpositionServer(base_text) as server:
        sidecar = Sidecar(SidecarConfig(engine_url=server.url, store_dir=tmp_path, timeout_s=0.5))
        sidecar.tick()
    sidecar.tick()  # server gone: connection refused
    sidecar.stop()
    con = open_store(tmp_path)
    detail = con.execute("SELECT detail FROM events WHERE kind = 'engine_down'").fetchall()
    assert len(detail) == 1 and "/metrics" in detail[0][0]
    errors = con.execute(
        "SELECT max(value) FROM samples WHERE metric = 'enginescope_sidecar_scrape_errors_total'"
    ).fetchone()[0]
    assert errors >= 1


def test_one_restart_is_one_event_and_ready_is_recorded_again(tmp_path: Path, base_text: str) -> None:
    from enginescope.store import open_store

    with ExpositionServer(base_text) as server:
        sidecar = Sidecar(SidecarConfig(engine_url=server.url, store_dir=tmp_path, timeout_s=0.5))
        sidecar.tick()
        server.healthy = False
    sidecar.tick()  # engine gone
    with ExpositionServer(_restart(base_text)) as server:
        sidecar.engine_source.metrics_url = server.url + "/metrics"
        sidecar.engine_source.health_url = server.url + "/health"
        sidecar.tick()  # back, one family reset
        server.body = _restart(base_text, "sglang:prompt_tokens_total")  # a second family resets later
        sidecar.tick()
        sidecar.stop()
    kinds = [r[0] for r in open_store(tmp_path).execute("SELECT kind FROM events ORDER BY ts").fetchall()]
    assert kinds.count("engine_restart") == 1
    assert kinds.count("engine_ready") == 2
    assert kinds.index("engine_down") < kinds.index("engine_restart")


def test_vllm_is_detected_and_mapped_to_the_same_signals(tmp_path: Path) -> None:
    from enginescope.store import open_store

    vllm = (Path(__file__).parent / "fixtures" / "vllm" / "0.33.0-plain" / "metrics.txt").read_text()
    grown = vllm.replace(
        'vllm:prompt_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 255873.0',
        'vllm:prompt_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 256873.0',
    )
    assert grown != vllm
    with ExpositionServer(vllm, content_type="text/plain; version=1.0.0; charset=utf-8") as server:
        sidecar = Sidecar(SidecarConfig(engine_url=server.url, store_dir=tmp_path))
        sidecar.tick()
        server.body = grown
        sidecar.tick()
        sidecar.stop()
    con = open_store(tmp_path)
    assert con.execute("SELECT DISTINCT engine FROM signals").fetchall() == [("vllm",)]
    running = con.execute("SELECT max(value) FROM signals WHERE signal = 'running_requests'").fetchone()[0]
    assert running == 7.0
    prompt = con.execute("SELECT sum(value) FROM signals WHERE signal = 'prompt_tokens'").fetchone()[0]
    assert prompt == 1000.0  # only the increase after the baseline scrape


def test_exporter_health_is_stored_while_the_otlp_endpoint_is_down(tmp_path: Path, base_text: str) -> None:
    from enginescope.exporters.otlp import otlp_sink_from_env
    from enginescope.store import open_store

    otlp = otlp_sink_from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_METRIC_EXPORT_INTERVAL": "50"}
    )
    with ExpositionServer(base_text) as server:
        sidecar = Sidecar(SidecarConfig(engine_url=server.url, store_dir=tmp_path, extra_sinks=[otlp]))
        for _ in range(3):
            sidecar.tick()
            time.sleep(0.2)  # the exporter collects every 50 ms on its own clock
        sidecar.stop()
    con = open_store(tmp_path)
    backlog = con.execute(
        "SELECT max(value) FROM samples WHERE metric = 'enginescope_otlp_backlog_bytes'"
    ).fetchone()[0]
    assert backlog > 0  # nothing could be delivered, the store says how much is held
    exported = con.execute(
        "SELECT max(value) FROM samples WHERE metric = 'enginescope_otlp_exported_points_total'"
    ).fetchone()[0]
    assert exported == 0


def test_a_slowly_dribbling_engine_cannot_hold_a_scrape_past_its_timeout() -> None:
    """The socket timeout is per read; a body trickling in just under it must still be cut off."""
    import socket
    import threading
    import time

    from enginescope.collectors.engine_source import ScrapeError, http_get

    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def dribble() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(1000):  # one byte every 0.1 s: 100 s in all, each read well inside 0.5 s
                if done.wait(0.1):
                    return
                try:
                    conn.sendall(b"#")
                except OSError:
                    return

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(ScrapeError, match="within"):
            http_get(f"http://127.0.0.1:{listener.getsockname()[1]}/metrics", timeout_s=0.5)
        assert time.monotonic() - started < 5.0  # bounded by the timeout, not by the engine
    finally:
        done.set()
        thread.join(5)
        listener.close()


def test_a_body_cut_short_is_a_failed_scrape_not_a_counter_reset() -> None:
    """A connection closed mid-body would leave ``...total 12`` of ``...total 123456``: a fake reset."""
    import socket
    import threading

    from enginescope.collectors.engine_source import ScrapeError, http_get

    listener = socket.create_server(("127.0.0.1", 0))

    def serve_half() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                request = conn.recv(65536)
                body = b"sglang:num_requests_total 12"  # of "123456\n"
                head = b"Content-Length: 35\r\n" if b"/len" in request else b"Transfer-Encoding: chunked\r\n"
                if b"/len" not in request:
                    body = b"%x\r\n%s\r\n" % (40, body)  # a chunk announced longer than what arrives
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + head + b"\r\n" + body)

    thread = threading.Thread(target=serve_half, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    try:
        for path in ("/len", "/chunked"):
            with pytest.raises(ScrapeError, match="127.0.0.1"):
                http_get(f"http://127.0.0.1:{port}{path}", timeout_s=2.0)
    finally:
        thread.join(5)
        listener.close()


def test_stop_with_a_stuck_scrape_writes_events_without_a_racing_second_scrape(
    tmp_path: Path, base_text: str
) -> None:
    import threading

    from enginescope.collectors.model import Batch
    from enginescope.store import open_store

    release = threading.Event()
    calls: list[float] = []

    class StuckSource:
        name = "stuck"

        def collect(self, now_s: float) -> Batch:
            calls.append(now_s)
            release.wait(10)
            return Batch(sidecar.identity)

        def close(self) -> None:
            return None

    with ExpositionServer(base_text) as server:
        sidecar = Sidecar(SidecarConfig(engine_url=server.url, store_dir=tmp_path, interval_s=0.1))
        sidecar.sources.append(StuckSource())
        sidecar.start()
        while not calls:
            release.wait(0.05)
        sidecar.stop(timeout_s=0.3)
        release.set()
    assert len(calls) == 1  # the final tick did not call into the busy source again
    kinds = {r[0] for r in open_store(tmp_path).execute("SELECT kind FROM events").fetchall()}
    assert {"container_started", "container_stopped"} <= kinds


def test_gpu_readings_pair_with_engine_samples_by_asof_join(tmp_path: Path, base_text: str) -> None:
    from enginescope.simfleet.nvml import SimGpuSpec, SimulatedNvml
    from enginescope.store import open_store

    nvml = SimulatedNvml([SimGpuSpec(), SimGpuSpec()], lambda: 0.5)
    with ExpositionServer(base_text) as server:
        sidecar = Sidecar(SidecarConfig(engine_url=server.url, store_dir=tmp_path, nvml=nvml))
        for _ in range(3):
            sidecar.tick()
        sidecar.stop()
    rows = (
        open_store(tmp_path)
        .execute(
            "SELECT s.ts, g.ts, s.value, g.power_w FROM samples s "
            "ASOF JOIN (SELECT * FROM gpu WHERE gpu_index = 0) g ON s.replica = g.replica AND s.ts >= g.ts "
            "WHERE s.metric = 'sglang:num_running_reqs' ORDER BY s.ts"
        )
        .fetchall()
    )
    assert len(rows) == 4  # three ticks and the final one at stop
    for engine_ts, gpu_ts, _, power_w in rows:
        assert gpu_ts <= engine_ts and (engine_ts - gpu_ts).total_seconds() < 1.0
        assert 70 < power_w < 700


@pytest.mark.slow
def test_otlp_exports_one_ttft_point_per_series_per_interval_idle_or_not(
    tmp_path: Path, base_text: str
) -> None:
    """Issue 11 done-when: 1 s scrapes, 5 s exports of an unchanging exposition -> one TTFT
    point per series per 5 s, with the engine's own bucket bounds, although nothing changed."""
    import time

    from enginescope.collectors.exposition import parse_exposition
    from enginescope.exporters.otlp import OtlpConfig, OtlpSink
    from tests.otlp_receivers import HttpReceiver

    engine_bounds: dict[str, tuple[float, ...]] = {}  # is_streaming -> finite le bounds
    for family in parse_exposition(base_text).families:
        for sample in family.samples if family.name == TTFT else ():
            if sample.ref.role == "bucket" and sample.ref.bound != float("inf"):
                key = dict(sample.ref.series_labels)["is_streaming"]
                engine_bounds[key] = (*engine_bounds.get(key, ()), sample.ref.bound)
    receiver = HttpReceiver().start()
    otlp = OtlpSink(
        OtlpConfig(endpoint=receiver.endpoint + "/v1/metrics", interval_s=5.0, compression="gzip")
    )
    try:
        with ExpositionServer(base_text) as server:
            sidecar = Sidecar(
                SidecarConfig(engine_url=server.url, store_dir=tmp_path, interval_s=1.0, extra_sinks=[otlp])
            )
            sidecar.start()
            time.sleep(11.5)  # exports at ~5 s and ~10 s
            points = [p for p in receiver.points() if p.name == "gen_ai.server.time_to_first_token"]
            scrapes = len(server.accept_headers)
            sidecar.stop()
    finally:
        receiver.stop()
    assert scrapes >= 10  # the sidecar did scrape every second
    by_time: dict[int, list] = {}
    for p in points:
        by_time.setdefault(p.time_ns, []).append(p)
    times = sorted(by_time)
    assert len(times) == 2, times  # one export per 5 s, not one per scrape
    assert 4.5 <= (times[1] - times[0]) / 1e9 <= 5.5
    for t in times:
        streaming = sorted(p.attributes["sglang.is_streaming"] for p in by_time[t])
        assert streaming == ["false", "true"]  # every series, each once, idle as they are
        for p in by_time[t]:
            assert p.count == 0 and p.temporality == 2  # nothing new since the sidecar started
            assert p.explicit_bounds == engine_bounds[p.attributes["sglang.is_streaming"]]
            assert p.attributes["gen_ai.request.model"] == "meta-llama/Llama-3.1-8B-Instruct"
    starts = {(p.attributes["sglang.is_streaming"], p.start_ns) for p in points}
    assert len(starts) == 2  # a stable start time per series


class _SlowDisk:
    """A sink on a slow disk: every write takes 1 s, closing takes far longer than any grace."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, batch) -> None:
        time.sleep(1.0)
        self.writes += 1

    def flush(self) -> None:
        time.sleep(60)

    def close(self) -> None:
        time.sleep(60)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_stop_shares_one_deadline_across_a_hung_otlp_endpoint_and_a_slow_disk(
    tmp_path: Path, base_text: str, protocol: str
) -> None:
    from enginescope.exporters.otlp import OtlpConfig, OtlpSink
    from enginescope.exporters.otlp.config import Protocol
    from enginescope.store import open_store
    from tests.otlp_receivers import HangingReceiver

    hung = HangingReceiver()
    endpoint = hung.endpoint if protocol == "grpc" else hung.endpoint + "/v1/metrics"
    otlp = OtlpSink(
        OtlpConfig(endpoint=endpoint, protocol=Protocol(protocol), timeout_s=10.0, interval_s=3600)
    )
    slow = _SlowDisk()
    try:
        with ExpositionServer(base_text) as server:
            sidecar = Sidecar(
                SidecarConfig(engine_url=server.url, store_dir=tmp_path, extra_sinks=[otlp, slow])
            )
            sidecar.tick()
            began = time.monotonic()
            results = sidecar.stop(timeout_s=3.0)
            took_s = time.monotonic() - began
    finally:
        hung.stop()
    assert took_s < 3.8, took_s  # alone, the OTLP timeout (10 s) or the disk (60 s) would exceed it
    assert results == {"0:StoreWriter": True, "1:OtlpSink": False, "2:_SlowDisk": False}
    con = open_store(tmp_path)  # the store was flushed within the deadline, final tick included
    kinds = [r[0] for r in con.execute("SELECT kind FROM events ORDER BY ts").fetchall()]
    assert kinds == ["container_started", "engine_ready", "container_stopped"]
