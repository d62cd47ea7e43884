"""A scenario's prelude: the traffic earlier replicas served before the demo, in virtual time.

The demo runs in real time (engines on ``time.monotonic``, sidecars scraping every second). A
story that needs more simulated time than a demo should take, such as the spec-drift detector's
300 s window after a baseline of at least 200 requests per class, starts with a
:class:`~enginescope.simfleet.scenarios.Prelude`: :func:`play` runs ``Prelude.replicas`` simulated
engines on a virtual clock mapped to the epoch seconds before the demo's own replicas start (the
same queueing model, acceptance by traffic class and per-request export as live; ~1.5 s of CPU
per 1,000 requests). What each earlier replica's sidecar would have collected is collected in
virtual time by the same production pieces, minus HTTP:

* every ``Prelude.scrape_interval_s`` the engine's ``/metrics`` body (as the sidecar asks for it)
  goes through the sidecar's ``Normaliser`` (samples, histograms, signals, series), and its
  simulated GPUs (``SimulatedNvml`` on the virtual clock) through the production ``GpuSource``;
* SGLang's per-request export is written to ``<work>/requestlog/<replica>/`` (ground truth to
  ``<work>/groundtruth/<replica>.jsonl``) and :func:`ingest` reads it with the sidecar's own
  request-log tailer (its state under ``<work>/state/``). ``<work>`` is the local working folder
  (``work_dir``, default the store folder; a URL store such as ``s3://bucket/prefix`` needs one).

:func:`ingest` writes all of it, with each replica's lifecycle events, through a StoreWriter
(sources -> sink -> store, as their sidecars would have). The history is scraped every 5 s of
virtual time (the live sidecars: every second) to keep it cheap.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from enginescope.collectors.engine_source import ACCEPT_TEXT
from enginescope.collectors.gpu import GpuSource
from enginescope.collectors.model import Batch, EventKind, EventRow, Identity, SignalRow
from enginescope.collectors.normalise import Normaliser
from enginescope.loadgen.generator import RequestMix, next_arrival_s
from enginescope.simfleet.engine import EngineUnavailable, SimEngine
from enginescope.simfleet.exposition import render
from enginescope.simfleet.fleet import gpu_uuid, local_work_dir, replica_identity
from enginescope.simfleet.groundtruth import GroundTruth
from enginescope.simfleet.nvml import SimGpuSpec, SimulatedNvml
from enginescope.simfleet.profile import EngineProfile
from enginescope.simfleet.sim_request import OutputEvent

if TYPE_CHECKING:
    from enginescope.simfleet.scenarios import Prelude

# Requests still running when the prelude ends get this much more virtual time to finish.
_MAX_DRAIN_S = 120.0
_ENDPOINT = "/v1/chat/completions"  # the demo's load generator speaks the chat API


@dataclass
class PreludeReplica:
    identity: Identity
    engine: SimEngine
    groundtruth: GroundTruth | None = None
    export_dir: Path | None = None
    outstanding: int = 0
    sidecar: _ReplaySidecar | None = None


class _ReplaySidecar:
    """What the replica's sidecar would have collected, on the engine's virtual clock: its
    ``/metrics`` body through the production Normaliser, its GPUs through the GpuSource."""

    def __init__(self, identity: Identity, engine: SimEngine) -> None:
        self.identity = identity
        self.engine = engine
        self.normaliser = Normaliser(engine.profile.engine)
        devices = [
            dataclasses.replace(SimGpuSpec(), uuid=gpu_uuid(identity.replica, index))
            for index in range(engine.profile.tp_size)
        ]
        nvml = SimulatedNvml(devices, engine.gpu_busy_fraction, intensity_fn=engine.gpu_intensity,
                             clock=engine.now_s)  # fmt: skip
        self.gpu = GpuSource(nvml=nvml, identity=identity, now_fn=self.now_s)
        self.batches: list[Batch] = []
        self._last_s: float | None = None

    def now_s(self) -> float:
        return self.engine.epoch(self.engine.now_s())

    def scrape(self) -> None:
        now_s = self.now_s()
        content_type, body = render(self.engine.registry, ACCEPT_TEXT)
        scrape = self.normaliser.process(body.decode(), now_s, content_type)
        interval_s = now_s - self._last_s if self._last_s is not None else 0.0
        self._last_s = now_s
        batch = self.gpu.collect(now_s)
        batch.identity = self.identity
        batch.samples.extend(scrape.samples)
        batch.histograms.extend(scrape.histograms)
        batch.series.extend(scrape.series)
        batch.signals.extend([*scrape.signals, SignalRow(now_s, "engine_up", 1.0, interval_s)])
        batch.events.extend(scrape.events)
        self.batches.append(batch)


@dataclass
class PreludeRun:
    """What :func:`play` did: epoch start/end, the earlier replicas, the annotations to record."""

    start_s: float
    end_s: float
    drain_s: float
    scrape_interval_s: float
    replicas: list[PreludeReplica]
    class_accept_lengths: dict[tuple[str, str], float]
    annotations: list[tuple[float, str]] = field(default_factory=list)  # (epoch s, detail)
    submitted: int = 0
    rejected: int = 0
    next_scrape_s: float = 0.0  # virtual time of the next replayed scrape


class PreludeContext:
    """What a scenario action sees in the prelude (the live fleet's ``ScenarioContext`` has the
    same methods): the class acceptance table, applied to every earlier replica."""

    def __init__(self, run: PreludeRun) -> None:
        self.run = run
        self.state: dict[str, object] = {}

    def class_accept_lengths(self) -> dict[tuple[str, str], float]:
        return dict(self.run.class_accept_lengths)

    def set_class_accept_length(self, key: tuple[str, str], accept_length: float) -> None:
        self.run.class_accept_lengths[key] = accept_length
        for replica in self.run.replicas:
            replica.engine.set_class_accept_length(*key, accept_length)


def play(
    prelude: Prelude,
    profile: EngineProfile,
    mix: RequestMix,
    class_accept_lengths: dict[tuple[str, str], float],
    *,
    end_s: float,
    store_dir: Path | str | None = None,
    seed: int = 0,
    work_dir: Path | None = None,
) -> PreludeRun:
    """Play ``prelude`` so that it ends at epoch ``end_s``; returns the run (engines closed).

    With a store, the replicas' per-request export and ground truth go under ``work_dir``
    (default: the store folder) and their scrapes are kept for :func:`ingest`."""
    work = local_work_dir(store_dir, work_dir)
    rng = random.Random(f"prelude-{seed}")
    start_s = end_s - prelude.duration_s
    boot_s = profile.startup_total_s
    run = PreludeRun(
        start_s, end_s, prelude.drain_s, prelude.scrape_interval_s, [], dict(class_accept_lengths)
    )
    for _ in range(prelude.replicas):
        run.replicas.append(_replica(profile, rng, start_s - boot_s, work))
    for replica in run.replicas:
        for (label, value), accept_length in run.class_accept_lengths.items():
            replica.engine.set_class_accept_length(label, value, accept_length)
        replica.engine.advance_to(boot_s)  # ready at the prelude's start
        if store_dir is not None:
            replica.sidecar = _ReplaySidecar(replica.identity, replica.engine)
            replica.sidecar.scrape()  # the baseline scrape
    run.next_scrape_s = boot_s + prelude.scrape_interval_s
    ctx = PreludeContext(run)
    actions = sorted(prelude.actions, key=lambda a: a.at_s)
    arrivals_end_s = prelude.duration_s - prelude.drain_s
    t_s = 0.0
    while True:
        arrival_s = next_arrival_s(prelude.pattern, t_s, rng, arrivals_end_s)
        due_s = prelude.duration_s if arrival_s is None else arrival_s
        while actions and actions[0].at_s <= due_s:
            action = actions.pop(0)
            _advance(run, boot_s + action.at_s)
            run.annotations.append((start_s + action.at_s, action.detail))
            if action.apply is not None:
                action.apply(ctx)  # type: ignore[arg-type]  # PreludeContext: ScenarioContext's methods
        if arrival_s is None:
            break
        t_s = arrival_s
        _advance(run, boot_s + t_s)
        _submit(run, mix, rng)
    _advance(run, boot_s + prelude.duration_s)
    drained_s = boot_s + prelude.duration_s
    while any(r.outstanding for r in run.replicas) and drained_s < boot_s + prelude.duration_s + _MAX_DRAIN_S:
        drained_s += 1.0
        _advance(run, drained_s)
    for replica in run.replicas:
        if replica.sidecar is not None:
            replica.sidecar.scrape()  # the sidecar's final scrape
        replica.engine.close()
        if replica.groundtruth is not None:
            replica.groundtruth.close()
    return run


def _replica(
    profile: EngineProfile, rng: random.Random, started_s: float, work_dir: Path | None
) -> PreludeReplica:
    identity = replica_identity(profile, rng, started_s)
    name = identity.replica
    export_dir = groundtruth = None
    if work_dir is not None:
        if profile.engine == "sglang":  # vLLM writes no per-request export
            export_dir = work_dir / "requestlog" / name
        groundtruth = GroundTruth(work_dir / "groundtruth" / f"{name}.jsonl")
    engine = SimEngine(profile, name=name, seed=rng.getrandbits(32), export_dir=export_dir,
                       groundtruth=groundtruth)  # fmt: skip
    engine.epoch_offset_s = started_s  # virtual t = 0 is the container start
    return PreludeReplica(identity, engine, groundtruth, export_dir)


def _advance(run: PreludeRun, t_s: float) -> None:
    """Every engine to virtual ``t_s``, scraping at each scrape time on the way."""
    while run.next_scrape_s <= t_s:
        for replica in run.replicas:
            replica.engine.advance_to(run.next_scrape_s)
            if replica.sidecar is not None:
                replica.sidecar.scrape()
        run.next_scrape_s += run.scrape_interval_s
    for replica in run.replicas:
        replica.engine.advance_to(t_s)


def _submit(run: PreludeRun, mix: RequestMix, rng: random.Random) -> None:
    """One request, routed like the demo's router (least outstanding)."""
    traffic_class, prompt_tokens, max_tokens = mix.sample(rng)
    replica = min(run.replicas, key=lambda r: r.outstanding)

    def sink(event: OutputEvent) -> None:
        if event.finished:
            replica.outstanding -= 1

    try:
        replica.engine.submit(
            prompt_tokens, max_new_tokens=max_tokens, stream=True, endpoint=_ENDPOINT, sink=sink,
            sampling={"ignore_eos": True}, ignore_eos=True,
            custom_labels={mix.class_label: traffic_class} if traffic_class else None,
        )  # fmt: skip
    except (EngineUnavailable, ValueError):  # 503 or a prompt that does not fit: the client's error
        run.rejected += 1
        return
    replica.outstanding += 1
    run.submitted += 1


def ingest(
    run: PreludeRun, store_dir: Path | str, store_params: bool, now_s: float, work_dir: Path | None = None
) -> int:
    """Load each earlier replica's per-request export into the store (a folder or a URL) with the
    sidecar's tailer (its state under ``work_dir``, default the store folder), plus its lifecycle
    events; returns the number of requests stored."""
    from enginescope.collectors.requestlog import RequestLogTailer, default_state_path
    from enginescope.store import StoreWriter

    stored = 0
    for replica in run.replicas:
        identity = replica.identity
        writer = StoreWriter(store_dir, identity, background=False)
        try:
            writer.write(Batch(identity, events=_lifecycle(run, replica)))
            for batch in replica.sidecar.batches if replica.sidecar is not None else ():
                writer.write(batch)
            if replica.export_dir is not None:
                work = local_work_dir(store_dir, work_dir)
                assert work is not None
                state = default_state_path(work, identity.replica)
                tailer = RequestLogTailer(
                    replica.export_dir, state, store_params=store_params, identity=identity
                )
                while (batch := tailer.collect(now_s)).requests:
                    writer.write(batch)
                    stored += len(batch.requests)
                tailer.close()
        finally:
            writer.close()
    return stored


def _lifecycle(run: PreludeRun, replica: PreludeReplica) -> list[EventRow]:
    engine = replica.engine
    started_s = engine.epoch(0.0)
    return [
        EventRow(started_s, EventKind.CONTAINER_STARTED, "earlier replica (scenario prelude, virtual time)"),
        EventRow(
            run.start_s, EventKind.ENGINE_READY, f"ready after {run.start_s - started_s:.1f}s cold start"
        ),
        EventRow(run.end_s - run.drain_s, EventKind.DRAINING, "replaced by the demo's replicas"),
        EventRow(run.end_s, EventKind.CONTAINER_STOPPED, "drained"),
    ]
