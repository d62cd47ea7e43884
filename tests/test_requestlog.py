"""RequestLogTailer on SGLang 0.5.23's real export records: mapping, resume, rotation, privacy."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from enginescope.collectors.requestlog import RequestLogTailer, record_to_row
from enginescope.store import StoreWriter, open_store

FIXTURE = Path(__file__).parent / "fixtures" / "requestlog" / "request-metrics-example.jsonl"
LINES = FIXTURE.read_bytes().splitlines(keepends=True)
HOUR1 = "sglang-request-metrics-20261128_10.log"
HOUR2 = "sglang-request-metrics-20261128_11.log"


def _tailer(tmp_path: Path, **kw) -> RequestLogTailer:
    return RequestLogTailer(tmp_path / "logs", tmp_path / "state" / "requestlog.json", **kw)


def _append(tmp_path: Path, name: str, data: bytes) -> None:
    (tmp_path / "logs").mkdir(exist_ok=True)
    with (tmp_path / "logs" / name).open("ab") as handle:
        handle.write(data)


def test_maps_real_records() -> None:
    chat, spec, abort = (record_to_row(json.loads(line)).fields for line in LINES)
    assert chat["request_id"] == "45a45e4610b84b8f819426a280befd08"
    assert (chat["finish_reason"], chat["prompt_tokens"], chat["completion_tokens"]) == ("stop", 412, 87)
    assert (chat["cached_tokens"], chat["cached_device_tokens"], chat["cached_host_tokens"]) == (384, 384, 0)
    assert chat["ttft_s"] == pytest.approx(0.05769410700008848)
    assert chat["tpot_s"] == pytest.approx(1 / 93.98471672118659)
    assert chat["is_streaming"] is False and chat.get("dp_rank") is None
    assert spec["is_streaming"] is True and spec["spec_verify_ct"] == 48
    assert spec["spec_accept_length"] == pytest.approx(2.5208333333333335) and spec["spec_accept_rate"] == 0.5
    assert (abort["finish_reason"], abort["status_code"], abort["completion_tokens"]) == ("abort", 503, 0)
    assert "prompt_tokens" not in abort and "ttft_s" not in abort
    assert record_to_row(json.loads(LINES[2])).ts_s == 1795827982.4893634  # response_sent_to_client_ts


def test_resume_rotation_and_partial_line(tmp_path: Path) -> None:
    _append(tmp_path, HOUR1, LINES[0] + LINES[1][:100])  # second record half written
    tailer = _tailer(tmp_path)
    assert [r.fields["request_id"][:4] for r in tailer.collect(0).requests] == ["45a4"]
    assert tailer.collect(0).requests == []  # the fragment waits for its newline
    _append(tmp_path, HOUR1, LINES[1][100:])
    restarted = _tailer(tmp_path)  # resumes from the persisted offset
    assert [r.fields["request_id"][:4] for r in restarted.collect(0).requests] == ["8203"]
    _append(tmp_path, HOUR2, LINES[2])  # next hour's file
    assert [r.fields["request_id"][:4] for r in restarted.collect(0).requests] == ["47a2"]
    state = json.loads((tmp_path / "state" / "requestlog.json").read_text())
    assert state == {"file": HOUR2, "offset": len(LINES[2]), "line": 1}
    assert restarted.collect(0).requests == [] and restarted.malformed_lines == 0


def test_malformed_lines_are_skipped_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _append(tmp_path, HOUR1, LINES[0] + b'{"id": broken\n' + b"[1, 2]\n" + LINES[1])
    tailer = _tailer(tmp_path)
    with caplog.at_level(logging.WARNING):
        rows = tailer.collect(0).requests
    assert len(rows) == 2 and tailer.malformed_lines == 2
    assert f"{HOUR1}:2" in caplog.text and f"{HOUR1}:3" in caplog.text


def test_truncated_line_before_rotation_counts_as_malformed(tmp_path: Path) -> None:
    _append(tmp_path, HOUR1, LINES[0] + LINES[1][:50])
    _append(tmp_path, HOUR2, LINES[2])
    tailer = _tailer(tmp_path)
    assert len(tailer.collect(0).requests) == 2 and tailer.malformed_lines == 1


@pytest.mark.parametrize("store_params", [False, True])
def test_prompt_content_never_reaches_the_store(tmp_path: Path, store_params: bool) -> None:
    _append(tmp_path, HOUR1, b"".join(LINES))
    tailer = _tailer(tmp_path, store_params=store_params)
    writer = StoreWriter(tmp_path / "store", tailer.identity, background=False)
    batch = tailer.collect(0)
    writer.write(batch)
    writer.close()
    con = open_store(tmp_path / "store")
    assert con.execute("SELECT count(*) FROM requests").fetchone() == (3,)
    params = [p for (p,) in con.execute("SELECT params FROM requests").fetchall()]
    if store_params:
        first = json.loads(params[0])
        assert first["sampling_params"]["max_new_tokens"] == 256 and first["stream"] is False
        assert not {"input_ids", "text", "received_time"} & set(first)
    else:
        assert params == [None, None, None]
    # Every stored value, decoded: no prompt token ids anywhere, under any column.
    stored = json.dumps(
        [pq.read_table(p).to_pylist() for p in (tmp_path / "store").rglob("*.parquet")], default=str
    )
    prompt_ids = json.loads(json.loads(LINES[0])["request_parameters"])["input_ids"]
    assert str(prompt_ids[7]) not in stored and "input_ids" not in stored


def _with_custom_labels(line: bytes, labels: dict) -> dict:
    """The fixture's record with ``custom_labels`` where SGLang's GenerateReqInput declares it
    (after ``no_logs``), request_parameters double-encoded as the exporter writes it."""
    record = json.loads(line)
    params = json.loads(record["request_parameters"])
    ordered: dict = {}
    for key, value in params.items():
        ordered[key] = value
        if key == "no_logs":
            ordered["custom_labels"] = labels
    record["request_parameters"] = json.dumps(ordered)
    return record


def test_custom_labels_give_the_traffic_class() -> None:
    record = _with_custom_labels(LINES[1], {"task": "code", "tenant": "acme"})
    assert isinstance(record["request_parameters"], str)  # the exporter's double encoding
    fields = record_to_row(record).fields
    assert fields["traffic_class"] == "code"
    assert json.loads(fields["custom_labels"]) == {"task": "code", "tenant": "acme"}
    assert "params" not in fields  # content and other parameters stay behind the opt-in
    other_key = record_to_row(record, class_label="tenant").fields
    assert other_key["traffic_class"] == "acme"
    plain = record_to_row(json.loads(LINES[1])).fields
    assert plain.get("traffic_class") is None and plain.get("custom_labels") is None
    assert record_to_row(_with_custom_labels(LINES[1], {"lang": "de"})).fields.get("traffic_class") is None


def test_traffic_class_reaches_the_store_without_content(tmp_path: Path) -> None:
    records = [
        _with_custom_labels(line, {"task": task})
        for line, task in zip(LINES, ("chat", "code", "chat"), strict=True)
    ]
    _append(tmp_path, HOUR1, b"".join(json.dumps(r).encode() + b"\n" for r in records))
    tailer = _tailer(tmp_path, class_label="task")
    writer = StoreWriter(tmp_path / "store", tailer.identity, background=False)
    writer.write(tailer.collect(0))
    writer.close()
    con = open_store(tmp_path / "store")
    rows = con.execute(
        "SELECT traffic_class, custom_labels, spec_correct_drafts_histogram FROM requests ORDER BY request_id"
    ).fetchall()
    assert sorted(r[0] for r in rows) == ["chat", "chat", "code"]
    spec = [r for r in rows if r[0] == "code"][0]
    assert json.loads(spec[1]) == {"task": "code"} and spec[2] == [11, 13, 13, 11]
    stored = json.dumps(
        [pq.read_table(p).to_pylist() for p in (tmp_path / "store").rglob("*.parquet")], default=str
    )
    assert "input_ids" not in stored
