"""Parse + normalise speed vs prometheus_client on a realistic multi-rank SGLang exposition.

The real SGLang 0.5.23 single-GPU scrape (tests/fixtures/sglang/0.5.23-single-gpu/metrics.txt)
is widened to 8 DP ranks x 2 TP ranks: every scheduler series (those with ``tp_rank``) is
repeated per rank with a ``dp_rank`` label, plus a third ``per_stage_req_latency_seconds``
stage, which gives about 5,000 lines. A run of scrapes then grows every value, as counters and
histograms do between scrapes, so the steady state (warm series cache) is what is measured.

Usage: .venv/bin/python benchmarks/bench_parser.py [--scrapes 30] [--write]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enginescope.collectors.exposition import ExpositionParser  # noqa: E402
from enginescope.collectors.normalise import Normaliser  # noqa: E402

FIXTURE = ROOT / "tests/fixtures/sglang/0.5.23-single-gpu/metrics.txt"
RESULTS = ROOT / "benchmarks/RESULTS.md"
DP_RANKS, TP_RANKS = 8, 2
_VALUE_RE = re.compile(r" ([^ ]+)$")


def widen(text: str, dp_ranks: int = DP_RANKS, tp_ranks: int = TP_RANKS) -> list[tuple[str, float]]:
    """(series text, base value) for every sample line of the widened exposition; '#' lines as-is."""
    out: list[tuple[str, float]] = []
    for line in text.splitlines():
        if line.startswith("#") or 'tp_rank="0"' not in line:
            out.append((line, 0.0) if line.startswith("#") else _split(line))
            continue
        variants = [line]
        if 'stage="prefill_forward"' in line:
            variants.append(line.replace('stage="prefill_forward"', 'stage="chunked_prefill"'))
        for variant in variants:
            series, value = _split(variant)
            for dp in range(dp_ranks):
                for tp in range(tp_ranks):
                    ranked = series.replace('{engine_type="', f'{{dp_rank="{dp}",engine_type="', 1)
                    ranked = ranked.replace('tp_rank="0"', f'tp_rank="{tp}"')
                    out.append((ranked, value * (1.0 + 0.05 * dp)))
    return out


def _split(line: str) -> tuple[str, float]:
    series, _, value = line.rpartition(" ")
    return series, float(value)


def render(lines: list[tuple[str, float]], growth: float) -> str:
    """One scrape: every sample value scaled by ``growth`` (keeps histograms cumulative)."""
    parts = [series if series.startswith("#") else f"{series} {value * growth!r}" for series, value in lines]
    return "\n".join(parts) + "\n"


def measure(scrapes: int) -> dict[str, float]:
    lines = widen(FIXTURE.read_text())
    texts = [render(lines, 1.0 + 0.002 * i) for i in range(scrapes)]
    n_lines = texts[0].count("\n")
    normaliser, parser = Normaliser("auto"), ExpositionParser()
    theirs, ours, ours_parse = [], [], []
    cold_s = _timed(lambda: normaliser.process(texts[0], 0.0))
    _timed(lambda: parser.parse(texts[0]))
    for i, text in enumerate(texts[1:], 1):
        theirs.append(_timed(lambda t=text: list(text_string_to_metric_families(t))))
        ours.append(_timed(lambda t=text, i=i: normaliser.process(t, 5.0 * i)))
        ours_parse.append(_timed(lambda t=text: parser.parse(t)))
    # Layout changes every scrape (a new series each time): the per-line cache path, not the replay.
    churned = Normaliser("auto")
    churned.process(texts[0], 0.0)
    ours_lines = [
        _timed(lambda t=text, i=i: churned.process(t + f'sglang:bench_churn{{n="{i}"}} 1\n', 5.0 * i))
        for i, text in enumerate(texts[1:], 1)
    ]
    last = normaliser.process(texts[-1], 5.0 * scrapes)
    return {
        "lines": n_lines,
        "prometheus_client_ms": statistics.median(theirs) * 1e3,
        "ours_ms": statistics.median(ours) * 1e3,
        "ours_parse_ms": statistics.median(ours_parse) * 1e3,
        "ours_cold_ms": cold_s * 1e3,
        "ours_lines_ms": statistics.median(ours_lines) * 1e3,
        "speedup": statistics.median(theirs) / statistics.median(ours),
        "rows": len(last.samples) + len(last.histograms) + len(last.signals),
        "errors": len(last.errors),
    }


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores (nproc), {cpu}, Python {platform.python_version()}"


def report(result: dict[str, float], scrapes: int) -> str:
    return (
        "## Exposition parser + normaliser (benchmarks/bench_parser.py)\n\n"
        f"Machine: {machine()} (shared with other jobs; medians of {scrapes - 1} steady-state scrapes).\n"
        f"Input: real SGLang 0.5.23 scrape widened to {DP_RANKS} DP x {TP_RANKS} TP ranks, "
        f"{result['lines']} lines, values growing each scrape.\n\n"
        "| what | ms per scrape |\n|---|---|\n"
        f"| prometheus_client `text_string_to_metric_families` (parse only) | {result['prometheus_client_ms']:.2f} |\n"
        f"| ours: `Normaliser.process` (parse + deltas + histograms + signals), steady state | {result['ours_ms']:.2f} |\n"
        f"| ours: `ExpositionParser.parse` only, steady state | {result['ours_parse_ms']:.2f} |\n"
        f"| ours: `Normaliser.process`, layout changes every scrape (per-line cache path) | {result['ours_lines_ms']:.2f} |\n"
        f"| ours: `Normaliser.process`, first scrape (cold cache, baseline) | {result['ours_cold_ms']:.2f} |\n\n"
        f"Speed-up (parse + normalise vs prometheus_client parse only): **{result['speedup']:.1f}x** "
        f"(goal: 20x). Rows per scrape: {result['rows']}; parse errors: {result['errors']}.\n"
    )


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--scrapes", type=int, default=30)
    args.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    opts = args.parse_args()
    result = measure(opts.scrapes)
    text = report(result, opts.scrapes)
    print(text)
    if opts.write:
        with RESULTS.open("a") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
