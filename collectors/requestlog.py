"""Tail SGLang's per-request export (``--export-metrics-to-file``) into ``requests`` rows.

Files are ``sglang-request-metrics-YYYYMMDD_HH.log`` (JSON Lines, one file per server-local
hour, append-only). The tailer resumes from a persisted (file, byte offset, line number),
follows rotation to the next hour's file, consumes only lines ending in ``\\n`` (a record can
land in pieces), and skips malformed lines with a warning naming file and line.

Privacy: ``request_parameters`` holds the prompt (``text``/``input_ids``). It is always
dropped; with ``store_params=True`` only non-content parameters are kept as JSON.

Traffic classes: SGLang copies a client's ``x-custom-labels`` header into the request's
``custom_labels`` (a ``GenerateReqInput`` field, so it lands in ``request_parameters``). The
labels are kept as JSON in ``custom_labels`` (they are operator-chosen labels, not content),
and the value of one of them (``class_label``, default ``task``) becomes ``traffic_class``,
the key the speculative-acceptance drift detector groups by.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enginescope.collectors.model import Batch, Identity, RequestRow

log = logging.getLogger(__name__)

FILE_RE = re.compile(r"^sglang-request-metrics-\d{8}_\d{2}\.log$")
# Keys of request_parameters that carry user content; never stored, even with store_params.
CONTENT_KEYS = frozenset(
    {"text", "input_ids", "input_embeds", "image_data", "video_data", "audio_data", "prompt", "messages"}
)
DEFAULT_CLASS_LABEL = "task"
# perf_counter values, meaningless outside the server process.
_DROPPED_PARAM_KEYS = frozenset({"received_time"})

# record key -> requests column, copied as is.
_DIRECT = {
    "prompt_tokens": "prompt_tokens",
    "completion_tokens": "completion_tokens",
    "reasoning_tokens": "reasoning_tokens",
    "cached_tokens": "cached_tokens",
    "queue_time": "queue_time_s",
    "first_token_latency": "ttft_s",
    "e2e_latency": "e2e_s",
    "decode_throughput": "decode_throughput_tps",
    "request_received_ts": "request_received_ts",
    "forward_entry_time": "forward_entry_ts",
    "prefill_finished_time": "prefill_finished_ts",
    "response_sent_to_client_ts": "response_sent_ts",
    "request_finished_ts": "request_finished_ts",
    "num_retractions": "num_retractions",
    "spec_accept_length": "spec_accept_length",
    "spec_accept_rate": "spec_accept_rate",
    "spec_verify_ct": "spec_verify_ct",
    "spec_num_correct_drafts": "spec_num_correct_drafts",
    "spec_num_proposed_drafts": "spec_num_proposed_drafts",
    "dp_rank": "dp_rank",
    "weight_version": "weight_version",
}


@dataclass(slots=True)
class TailState:
    file: str | None = None
    offset: int = 0
    line: int = 0  # lines consumed in ``file`` (for error messages)


def default_state_path(store_dir: str | Path, replica: str) -> Path:
    """Where the sidecar keeps the tail position: ``<store>/state/<replica>/requestlog.json``."""
    return Path(store_dir) / "state" / replica.replace("/", "_") / "requestlog.json"


def record_to_row(
    record: dict[str, Any],
    store_params: bool = False,
    now_s: float = 0.0,
    class_label: str = DEFAULT_CLASS_LABEL,
) -> RequestRow:
    """Map one export record to a RequestRow (columns of the ``requests`` table)."""
    fields: dict[str, Any] = {"request_id": record.get("id")}
    for key, column in _DIRECT.items():
        value = record.get(key)
        if value is not None and not isinstance(value, dict | list):
            fields[column] = value
    finish = record.get("finish_reason")
    if isinstance(finish, dict):
        fields["finish_reason"] = finish.get("type")
        fields["status_code"] = finish.get("status_code")
    elif finish is not None:
        fields["finish_reason"] = str(finish)
    details = record.get("cached_tokens_details")
    if isinstance(details, dict):
        for tier in ("device", "host", "storage"):
            if isinstance(details.get(tier), int | float):
                fields[f"cached_{tier}_tokens"] = details[tier]
    throughput = fields.get("decode_throughput_tps")
    if isinstance(throughput, int | float) and throughput > 0:
        fields["tpot_s"] = 1.0 / throughput
    histogram = record.get("spec_correct_drafts_histogram")
    if isinstance(histogram, list) and all(isinstance(n, int) for n in histogram):
        fields["spec_correct_drafts_histogram"] = histogram
    params = _request_parameters(record.get("request_parameters"))
    if isinstance(params.get("stream"), bool):
        fields["is_streaming"] = params["stream"]
    labels = _custom_labels(params.get("custom_labels"))
    if labels:
        fields["custom_labels"] = json.dumps(labels, sort_keys=True)
        fields["traffic_class"] = labels.get(class_label)
    if store_params and params:
        kept = {k: v for k, v in params.items() if k not in CONTENT_KEYS and k not in _DROPPED_PARAM_KEYS}
        fields["params"] = json.dumps(kept, sort_keys=True)
    return RequestRow(ts_s=_finished_s(record, now_s), fields=fields)


def _request_parameters(raw: Any) -> dict[str, Any]:
    """The export double-encodes request_parameters as a JSON string."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _custom_labels(raw: Any) -> dict[str, str]:
    """``custom_labels`` is ``Dict[str, str]`` in SGLang; scalars are kept as text, nested values
    dropped (a label is a short key, and nothing nested can smuggle content into the store)."""
    if not isinstance(raw, dict):
        return {}
    return {str(k): str(v) for k, v in raw.items() if isinstance(v, str | int | float | bool)}


def _finished_s(record: dict[str, Any], now_s: float) -> float:
    for key in ("request_finished_ts", "response_sent_to_client_ts"):
        if isinstance(record.get(key), int | float):
            return float(record[key])
    received, e2e = record.get("request_received_ts"), record.get("e2e_latency")
    if isinstance(received, int | float) and isinstance(e2e, int | float):
        return float(received + e2e)
    return now_s  # without --enable-metrics: the time we read it


class RequestLogTailer:
    """Source over an ``--export-metrics-to-file-dir``; ``collect`` returns new requests."""

    name = "requestlog"

    def __init__(
        self,
        log_dir: str | Path,
        state_path: str | Path,
        store_params: bool = False,
        identity: Identity | None = None,
        max_bytes_per_collect: int = 16 << 20,
        class_label: str = DEFAULT_CLASS_LABEL,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.state_path = Path(state_path)
        self.store_params = store_params
        self.class_label = class_label
        self.identity = identity or Identity(replica="unknown")
        self.max_bytes_per_collect = max_bytes_per_collect
        self.malformed_lines = 0
        self.records_read = 0
        self.state = self._load_state()

    def collect(self, now_s: float) -> Batch:
        batch = Batch(identity=self.identity)
        try:
            batch.requests = self._read_new(now_s)
        except OSError as exc:  # never crash the sidecar; the next tick retries
            log.warning("requestlog: cannot read %s: %s", self.log_dir, exc)
        return batch

    def close(self) -> None:
        self._save_state()

    def _read_new(self, now_s: float) -> list[RequestRow]:
        rows: list[RequestRow] = []
        budget = self.max_bytes_per_collect
        files = self._files()
        before = (self.state.file, self.state.offset)
        while budget > 0:
            current = self._current_file(files)
            if current is None:
                break
            later = [f for f in files if f > current]
            consumed = self._read_file(current, budget, rows, now_s, final=bool(later))
            budget -= consumed
            if consumed == 0 or budget <= 0:
                if later and consumed == 0:
                    self.state = TailState(file=later[0])  # rotated: the old hour is complete
                    continue
                break
        if (self.state.file, self.state.offset) != before:
            self._save_state()
        return rows

    def _files(self) -> list[str]:
        try:
            return sorted(name for name in os.listdir(self.log_dir) if FILE_RE.match(name))
        except FileNotFoundError:
            return []  # the engine creates the folder at startup

    def _current_file(self, files: list[str]) -> str | None:
        if self.state.file in files:
            return self.state.file
        # First run, or our file was removed: continue with the next newer file.
        newer = [f for f in files if self.state.file is None or f > self.state.file]
        if not newer:
            return None
        self.state = TailState(file=newer[0])
        return newer[0]

    def _read_file(self, name: str, budget: int, rows: list[RequestRow], now_s: float, final: bool) -> int:
        """Consume complete lines of ``name`` from the saved offset; return bytes consumed."""
        path = self.log_dir / name
        if path.stat().st_size < self.state.offset:
            log.warning("requestlog: %s shrank below the saved offset; reading it again", path)
            self.state = TailState(file=name)
        with path.open("rb") as handle:
            handle.seek(self.state.offset)
            data = handle.read(budget)
        end = data.rfind(b"\n") + 1
        if end == 0 and final and data:
            # A newer file exists, so this fragment will never be completed.
            self.state.line += 1
            self._malformed(name, self.state.line, "truncated last line")
            self.state.offset += len(data)
            return len(data)
        for raw in data[:end].splitlines():
            self.state.line += 1
            self._parse_line(name, self.state.line, raw, rows, now_s)
        self.state.offset += end
        return end

    def _parse_line(self, name: str, line_no: int, raw: bytes, rows: list[RequestRow], now_s: float) -> None:
        if not raw.strip():
            return
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError(f"expected a JSON object, got {type(record).__name__}")
            rows.append(record_to_row(record, self.store_params, now_s, self.class_label))
            self.records_read += 1
        except ValueError as exc:
            self._malformed(name, line_no, str(exc))

    def _malformed(self, name: str, line_no: int, reason: str) -> None:
        self.malformed_lines += 1
        log.warning("requestlog: skipping malformed line %s:%d: %s", self.log_dir / name, line_no, reason)

    def _load_state(self) -> TailState:
        try:
            raw = json.loads(self.state_path.read_text())
            return TailState(file=raw.get("file"), offset=int(raw["offset"]), line=int(raw.get("line", 0)))
        except FileNotFoundError:
            return TailState()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("requestlog: ignoring unreadable state %s (%s); starting over", self.state_path, exc)
            return TailState()

    def _save_state(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".tmp-{self.state_path.name}")
        state = {"file": self.state.file, "offset": self.state.offset, "line": self.state.line}
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)
