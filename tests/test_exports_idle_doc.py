"""docs/exports.md's "idle or not scraped?" query, run on a real store: a minute with no
``histograms`` row is told apart as idle, not scraped, engine down or not exposed."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from enginescope.collectors.model import Batch, Identity, SignalRow
from enginescope.collectors.normalise import Normaliser
from enginescope.store import StoreWriter, open_store
from tests.test_sidecar_e2e import FIXTURE, _bump_ttft

DOC = Path(__file__).parents[1] / "docs" / "exports.md"
IDENTITY = Identity(replica="r1", engine="sglang", model="m")
T0_S = 1_779_999_960.0  # a minute boundary


def doc_query() -> str:
    text = DOC.read_text()
    section = text.split("### Idle or not scraped?", 1)[1]
    return re.search(r"```sql\n(.*?)```", section, re.S).group(1)


def test_the_documented_query_tells_idle_from_not_scraped(tmp_path: Path) -> None:
    normaliser = Normaliser("sglang")
    writer = StoreWriter(tmp_path, IDENTITY, background=False)
    body = FIXTURE.read_text()

    def scrape(ts_s: float, up: bool) -> None:
        batch = Batch(IDENTITY, signals=[SignalRow(ts_s, "engine_up", float(up), 1.0)])
        if up:
            out = normaliser.process(body, ts_s)
            batch.samples, batch.histograms, batch.series = out.samples, out.histograms, out.series
            batch.signals += out.signals
        writer.write(batch)

    for i in range(120):  # minute 0: one TTFT observation at +30 s; minute 1: idle
        if i == 30:
            body = _bump_ttft(body, {0.2: 1}, added_sum_s=0.15)
        scrape(T0_S + i, True)
    for i in range(180, 240):  # minute 2: no sidecar; minute 3: the engine does not answer
        scrape(T0_S + i, False)
    writer.close()
    con = open_store(tmp_path)
    assert con.execute("SELECT count(*) FROM histograms").fetchone() == (1,)  # zero intervals left out

    def at(seconds: float) -> str:
        return f"TIMESTAMPTZ '{dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()}'"

    sql = doc_query().replace("now() - INTERVAL 1 HOUR", at(T0_S)).replace("now()", at(T0_S + 239))
    rows = con.execute(sql).fetchall()
    assert [(r[0], r[1].timestamp() - T0_S, r[2]) for r in rows] == [
        ("r1", 0.0, "observed"),
        ("r1", 60.0, "idle"),
        ("r1", 120.0, "not scraped"),
        ("r1", 180.0, "engine down"),
    ]
    other = doc_query().replace("'sglang:time_to_first_token_seconds'", "'sglang:not_a_metric'")
    assert (
        con.execute(
            other.replace("now() - INTERVAL 1 HOUR", at(T0_S)).replace("now()", at(T0_S + 239))
        ).fetchall()
        == []
    )
