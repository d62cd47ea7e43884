"""The series inventory tells idle series from series the engine no longer exposes."""

from __future__ import annotations

from pathlib import Path

from enginescope.collectors.model import Batch, Identity
from enginescope.collectors.normalise import Normaliser
from enginescope.store import StoreWriter, open_store
from enginescope.store.inventory import SeriesInventory

FIXTURE = Path(__file__).parent / "fixtures" / "sglang" / "0.5.23-single-gpu" / "metrics.txt"
IDENTITY = Identity(replica="r1", engine="sglang", model="m")


def _batch(normaliser: Normaliser, text: str, ts_s: float) -> Batch:
    scrape = normaliser.process(text, ts_s)
    return Batch(IDENTITY, samples=scrape.samples, histograms=scrape.histograms, series=scrape.series)


def test_idle_histograms_are_in_the_inventory_and_a_vanished_series_ages(tmp_path: Path) -> None:
    text = FIXTURE.read_text()
    t0_s = 1_780_000_000.0
    writer = StoreWriter(tmp_path, IDENTITY, background=False)
    writer._inventory = SeriesInventory(heartbeat_s=60.0)
    normaliser = Normaliser()
    for i in range(181):  # 3 minutes of 1 s scrapes of an unchanging exposition: nothing observed
        body = text if i < 120 else text.replace("sglang:num_running_reqs", "sglang:num_running_reqs_gone")
        writer.write(_batch(normaliser, body, t0_s + i))
    writer.close()
    con = open_store(tmp_path)
    assert con.execute("SELECT count(*) FROM histograms").fetchone() == (0,)  # idle: no interval rows
    hist = con.execute(
        "SELECT metric, len(bounds), epoch(last_seen) - epoch(first_seen) FROM series "
        "WHERE metric = 'sglang:time_to_first_token_seconds'"
    ).fetchall()
    assert hist and all(n > 5 and span_s == 180.0 for _, n, span_s in hist)
    idle_dp = con.execute("SELECT count(*) FROM series WHERE metric LIKE 'sglang:dp_attention%'").fetchone()
    assert idle_dp[0] >= 2  # the all-zero dp_attention histograms of every SGLang exposition
    gone = con.execute(
        "SELECT epoch(last_seen) - epoch(first_seen) FROM series WHERE metric = 'sglang:num_running_reqs'"
    ).fetchall()
    assert gone == [(60.0,)]  # last heartbeat before the engine stopped exposing it (t0+119 -> logged t0+60)
    # one row per series, not one per scrape
    n_log = con.execute("SELECT count(*) FROM series_log").fetchone()[0]
    n_series = con.execute("SELECT count(*) FROM series").fetchone()[0]
    assert n_series < n_log <= 4 * n_series
