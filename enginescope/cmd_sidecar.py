"""``enginescope sidecar``: scrape one engine until SIGTERM/SIGINT, then flush and exit 0."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import urllib.parse
from pathlib import Path

from enginescope.cli import CliError, add_store_argument

HELP = "Run the sidecar next to one engine: scrape /metrics (+ request log, + GPU) into the store."
log = logging.getLogger("enginescope.sidecar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine-url", required=True, help="engine base URL, e.g. http://127.0.0.1:30000")
    parser.add_argument("--engine", choices=["auto", "sglang", "vllm"], default="auto")
    add_store_argument(parser)
    parser.add_argument("--interval-s", type=float, default=1.0, help="scrape interval in seconds")
    parser.add_argument("--timeout-s", type=float, default=2.0, help="HTTP timeout per scrape")
    parser.add_argument("--request-log-dir", type=Path, help="SGLang --export-metrics-to-file-dir to tail")
    parser.add_argument(
        "--store-request-params", action="store_true", help="opt in: keep non-content request parameters"
    )
    parser.add_argument("--replica", help="replica id (default: $MODAL_TASK_ID, else a stable generated id)")
    parser.add_argument("--model", default="", help="model label (default: the engine's model_name)")
    parser.add_argument("--region", default="")
    parser.add_argument("--gpu-type", default="")
    parser.add_argument(
        "--gpu",
        choices=["auto", "nvml", "none"],
        default="auto",
        help="GPU telemetry: auto = NVML if a driver is present",
    )
    parser.add_argument(
        "--wait-engine-s",
        type=float,
        default=900.0,
        help="give up if the engine never answers within this many seconds of start",
    )
    parser.add_argument("--retention-days", type=float, help="delete this replica's data older than N days")
    parser.add_argument(
        "--raw-retention-days",
        type=float,
        help="keep raw histograms/signals N days; older days answer from the minute rollups",
    )
    parser.add_argument(
        "--prom-listen", help="serve the enriched view on HOST:PORT/metrics (e.g. 127.0.0.1:19400)"
    )
    from enginescope.exporters.otlp import add_otlp_arguments

    add_otlp_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from enginescope.sidecar import Sidecar, SidecarConfig

    _check_url(args.engine_url)
    _check_store(args.store)
    for flag in ("retention_days", "raw_retention_days"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise CliError(f"--{flag.replace('_', '-')} must be > 0 days (got {value:g})")
    if args.interval_s <= 0:
        raise CliError(f"--interval-s must be > 0 (got {args.interval_s})")
    config = SidecarConfig(
        engine_url=args.engine_url,
        store_dir=args.store,
        interval_s=args.interval_s,
        engine=args.engine,
        replica=args.replica,
        model=args.model,
        region=args.region,
        gpu_type=args.gpu_type,
        request_log_dir=args.request_log_dir,
        store_request_params=args.store_request_params,
        nvml=_nvml(args.gpu),
        timeout_s=args.timeout_s,
        retention_days=args.retention_days,
        raw_retention_days=args.raw_retention_days,
        extra_sinks=_extra_sinks(args),
    )
    sidecar = Sidecar(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if not _wait_engine(sidecar, stop, args):
        sidecar.stop()
        raise CliError(f"engine at {args.engine_url} did not answer /metrics within {args.wait_engine_s:g}s")
    if not stop.is_set():  # a signal during the wait: go straight to the final tick
        sidecar.start()
    while not stop.wait(0.5):  # short waits keep the main thread responsive to signals
        pass
    sidecar.drain("signal received")
    sidecar.stop()
    return 0


def _wait_engine(sidecar, stop: threading.Event, args: argparse.Namespace) -> bool:
    if sidecar.wait_for_engine(args.wait_engine_s, cancel=stop):
        return True
    if stop.is_set():  # asked to stop while the engine was still starting: not an error
        return True
    return False


def _check_url(url: str) -> None:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CliError(f"--engine-url must be http(s)://HOST:PORT (got {url!r})")


def _check_store(store: Path | str) -> None:
    if not isinstance(store, Path):
        return  # object storage: the writer's first commit reports access errors with the URL
    try:
        store.mkdir(parents=True, exist_ok=True)
        probe = store / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise CliError(f"store {store} is not writable: {exc.strerror or exc}") from exc


def _nvml(mode: str):
    if mode == "none":
        return None
    try:
        import pynvml
    except ImportError:
        if mode == "nvml":
            raise CliError("--gpu nvml: the nvidia-ml-py package is not installed") from None
        return None
    return pynvml  # the GPU source disables itself cleanly if no driver is present


def _extra_sinks(args: argparse.Namespace) -> list:
    sinks = []
    if args.prom_listen:
        from enginescope.exporters.prom_endpoint import PromEndpointSink

        host, _, port = args.prom_listen.rpartition(":")
        if not port.isdigit():
            raise CliError(f"--prom-listen must be HOST:PORT (got {args.prom_listen!r})")
        sinks.append(PromEndpointSink(host=host or "127.0.0.1", port=int(port)))
    otlp = _otlp_sink(args)
    if otlp is not None:
        sinks.append(otlp)
    return sinks


def _otlp_sink(args: argparse.Namespace):
    from enginescope.exporters.otlp import OtlpConfigError, otlp_sink_from_args

    try:
        return otlp_sink_from_args(args, dict(os.environ))
    except OtlpConfigError as exc:  # the message names the flag or variable
        raise CliError(str(exc)) from exc
