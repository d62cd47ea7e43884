"""A simulated Modal fleet: replicas (engine + HTTP server + sidecar) started and stopped by the autoscaler.

Each replica gets a Modal-like identity (``ta-<ULID>`` task id, region, cloud provider, GPU
type), its own loopback port and, when a store is configured, its own production
:class:`enginescope.sidecar.Sidecar` scraping it over HTTP from a thread. The store is a folder
or an object-store URL (``s3://bucket/prefix``); what is not a store table (ground truth, the
simulated per-request export the sidecars tail, their tailer state) goes to a local working
folder, ``FleetConfig.work_dir`` (default: the store folder). The sidecar records
the container lifecycle (``container_started``, ``engine_ready``, ``draining``,
``container_stopped``); the fleet itself writes ``scale_up``/``scale_down`` (and scenario
annotations) through a StoreWriter whose identity is ``replica="fleet"``.

Like Modal's router, a replica receives traffic only once its server answers ``/health`` (after
the engine's cold start), and stops receiving it as soon as it drains or fails its health check.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from enginescope.collectors.identity import FLEET_REPLICA
from enginescope.collectors.model import Batch, EventKind, EventRow, Identity
from enginescope.loadgen.openai_client import http_request
from enginescope.loadgen.router import Router
from enginescope.simfleet.autoscaler import Autoscaler, AutoscalerConfig, Decision
from enginescope.simfleet.engine import SimEngine
from enginescope.simfleet.groundtruth import GroundTruth
from enginescope.simfleet.profile import EngineProfile
from enginescope.simfleet.server import serve

log = logging.getLogger(__name__)

# (MODAL_CLOUD_PROVIDER, MODAL_REGION) pairs a Modal container may report.
PLACEMENTS = (
    ("CLOUD_PROVIDER_AWS", "us-east-1"),
    ("CLOUD_PROVIDER_GCP", "us-central1"),
    ("CLOUD_PROVIDER_OCI", "us-ashburn-1"),
    ("CLOUD_PROVIDER_AWS", "us-west-2"),
)
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_task_id(now_s: float, rng: random.Random) -> str:
    """``ta-`` + a ULID (48-bit ms time, 80 random bits, Crockford base32), like MODAL_TASK_ID."""
    value = (int(now_s * 1000) << 80) | rng.getrandbits(80)
    chars = [_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5)]
    return "ta-" + "".join(chars)


class ReplicaState(StrEnum):
    STARTING = "starting"  # cold start: engine loading, not routable
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass
class Replica:
    task_id: str
    identity: Identity
    host: str
    port: int
    engine: Any  # enginescope.simfleet.engine.SimEngine
    server: Any  # enginescope.simfleet.server server handle
    nvml: Any | None = None
    sidecar: Any | None = None  # enginescope.sidecar.Sidecar
    state: ReplicaState = ReplicaState.STARTING
    started_s: float = field(default_factory=time.time)
    ready_s: float | None = None
    groundtruth: Any | None = None  # enginescope.simfleet.groundtruth.GroundTruth
    healthy: bool = False
    gpu_busy: float = 0.0  # cached for NVML's load function, read from the sidecar thread
    gpu_intensity: float = 1.0
    run_task: asyncio.Task[None] | None = None  # the engine's real-time driver
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # health watch, GPU coupling

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass
class FleetConfig:
    profile: EngineProfile
    autoscaler: AutoscalerConfig = field(default_factory=AutoscalerConfig)
    store_dir: Path | str | None = None  # None: no sidecars, no store (``enginescope simulate``)
    # Local folder for groundtruth/, requestlog/ and state/; None: the store folder (needed for a URL store).
    work_dir: Path | None = None
    host: str = "127.0.0.1"
    base_port: int = 0  # 0: any free port; else replica k gets base_port + k
    scrape_interval_s: float = 1.0
    control_interval_s: float = 1.0
    health_interval_s: float = 0.25
    drain_timeout_s: float = 20.0
    router_policy: str = "least-outstanding"
    autoscale: bool = True
    simulate_gpus: bool = True  # one SimulatedNvml per replica, fed to its sidecar
    gpu_spec: Any | None = None  # enginescope.simfleet.nvml.SimGpuSpec override (e.g. fast thermals)
    seed: int = 0
    # Each SGLang engine writes its per-request export to <work>/requestlog/<replica>/ and its
    # sidecar tails it into the ``requests`` table (exact quantiles, slowest requests); vLLM has none.
    request_log: bool = True
    # Keep the non-content request parameters (custom_labels: the traffic class) in requests.params.
    store_request_params: bool = True
    # Mean spec acceptance by traffic class, {(label, value): tokens per verify step}; a scenario
    # may change it, and replicas started later get the current table.
    class_accept_lengths: dict[tuple[str, str], float] = field(default_factory=dict)


class Fleet:
    def __init__(
        self,
        config: FleetConfig,
        router: Router | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.router = router or Router(config.router_policy, config.autoscaler.max_inputs, seed=config.seed)
        self.autoscaler = Autoscaler(config.autoscaler)
        self.replicas: dict[str, Replica] = {}
        self.decisions: list[Decision] = []
        self._on_change = on_change or (lambda line: None)
        self._rng = random.Random(config.seed)
        self._ports_used = 0
        self._control_task: asyncio.Task[None] | None = None
        self.work_dir = local_work_dir(config.store_dir, config.work_dir)
        self._events = self._events_writer()

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self, replicas: int | None = None) -> None:
        """Start ``replicas`` (default: min_containers, at least 1), then the control loop."""
        count = replicas if replicas is not None else max(self.config.autoscaler.min_containers, 1)
        if count:
            await self.scale_to(count, EventKind.SCALE_UP, f"initial {count} (min_containers)")
        if self.config.autoscale:
            self._control_task = asyncio.get_running_loop().create_task(self._control_loop())

    async def stop(self) -> None:
        """Stop every replica: each sidecar scrapes a last time and flushes, then its engine stops."""
        if self._control_task is not None:
            self._control_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._control_task
        live = [r for r in self.replicas.values() if r.state != ReplicaState.STOPPED]
        await asyncio.gather(*(self._stop_replica(r) for r in live))
        if self._events is not None:
            await asyncio.to_thread(self._events.close)

    async def wait_ready(self, count: int, timeout_s: float) -> bool:
        deadline_s = time.monotonic() + timeout_s
        while len(self.ready()) < count:
            if time.monotonic() >= deadline_s:
                return False
            await asyncio.sleep(self.config.health_interval_s)
        return True

    def live(self) -> list[Replica]:
        """Replicas that count as containers: starting or ready (draining ones are on the way out)."""
        return [r for r in self.replicas.values() if r.state in (ReplicaState.STARTING, ReplicaState.READY)]

    def ready(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.state == ReplicaState.READY and r.healthy]

    # --- events ----------------------------------------------------------------------------
    def record(
        self, kind: str, detail: str, replica_count: int | None = None, ts_s: float | None = None
    ) -> None:
        """A fleet event (``replica = fleet``) at ``ts_s`` (default now), narrated through ``on_change``."""
        if self._events is not None:
            event = EventRow(time.time() if ts_s is None else ts_s, kind, detail, replica_count)
            self._events.write(Batch(self._events.identity, events=[event]))
        self._on_change(f"{kind}: {detail}" + (f" [{replica_count} replicas]" if replica_count else ""))

    def annotate(self, detail: str, ts_s: float | None = None, replica_count: int | None = None) -> None:
        """A scenario annotation (``kind = scenario``) in the events table."""
        count = len(self.live()) if replica_count is None else replica_count
        self.record(EventKind.SCENARIO, detail, count, ts_s)

    # --- knobs -----------------------------------------------------------------------------
    def set_class_accept_length(self, key: tuple[str, str], accept_length: float) -> None:
        """One traffic class's mean spec acceptance on every replica, and on those started later."""
        self.config.class_accept_lengths = {**self.config.class_accept_lengths, key: accept_length}
        for replica in self.replicas.values():
            replica.engine.set_class_accept_length(*key, accept_length)

    def _events_writer(self) -> Any | None:
        if self.config.store_dir is None:
            return None
        from enginescope.store import StoreWriter

        profile = self.config.profile
        identity = Identity(
            replica=FLEET_REPLICA, engine=profile.engine, model=profile.model_name, gpu_type=profile.gpu_type
        )
        return StoreWriter(self.config.store_dir, identity, flush_interval_s=1.0)

    # --- scaling ---------------------------------------------------------------------------
    async def scale_to(self, desired: int, kind: str = "", reason: str = "") -> None:
        live = self.live()
        if desired > len(live):
            self.record(kind or EventKind.SCALE_UP, f"{len(live)} -> {desired}: {reason}", desired)
            await asyncio.gather(*(self._start_replica() for _ in range(desired - len(live))))
        elif desired < len(live):
            self.record(kind or EventKind.SCALE_DOWN, f"{len(live)} -> {desired}: {reason}", desired)
            for replica in self._scale_down_order(live)[: len(live) - desired]:
                asyncio.get_running_loop().create_task(self.drain(replica, f"scale down: {reason}"))

    def _scale_down_order(self, live: list[Replica]) -> list[Replica]:
        """Cancel cold starts first, then the least busy (newest on ties), like an idle timeout."""
        outstanding = self.router.outstanding()

        def key(r: Replica) -> tuple[int, int, float]:
            return (r.state != ReplicaState.STARTING, outstanding.get(r.task_id, 0), -r.started_s)

        return sorted(live, key=key)

    async def _control_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.control_interval_s)
            outstanding = self.router.outstanding()
            in_flight = [outstanding.get(r.task_id, 0) for r in self.live()]
            decision = self.autoscaler.decide(time.monotonic(), in_flight, self.router.backlog)
            self.decisions.append(decision)
            desired = decision.desired
            if desired < decision.current:
                desired = max(desired, self._within_first_window())
            if desired != decision.current:
                await self.scale_to(desired, reason=decision.reason)

    def _within_first_window(self) -> int:
        """Live replicas younger than the scale-down window: like a Modal container, a new one is
        idle-timed from its start, so one started without load (min_containers = 0) is not
        reclaimed during its own cold start."""
        window_s = self.config.autoscaler.scaledown_window_s
        return sum(1 for r in self.live() if time.time() - r.started_s < window_s)

    # --- one replica -----------------------------------------------------------------------
    async def _start_replica(self) -> Replica:
        replica = await self._launch()
        self.replicas[replica.task_id] = replica
        if replica.sidecar is not None:
            replica.sidecar.start()
        loop = asyncio.get_running_loop()
        replica.tasks.append(loop.create_task(self._watch_health(replica)))
        if replica.nvml is not None:
            replica.tasks.append(loop.create_task(self._couple_gpu(replica)))
        return replica

    async def _watch_health(self, replica: Replica) -> None:
        """Route to the replica while ``/health`` answers 200 (after cold start, after restarts)."""
        while replica.state in (ReplicaState.STARTING, ReplicaState.READY):
            healthy = await _health_ok(replica.base_url)
            if healthy and not replica.healthy and replica.sidecar is not None:
                # Let the sidecar take its baseline scrape before traffic arrives.
                await asyncio.sleep(1.2 * self.config.scrape_interval_s)
            if healthy != replica.healthy:
                self._set_health(replica, healthy)
            await asyncio.sleep(self.config.health_interval_s)

    def _set_health(self, replica: Replica, healthy: bool) -> None:
        replica.healthy = healthy
        if healthy and replica.state == ReplicaState.STARTING:
            replica.state = ReplicaState.READY
            replica.ready_s = time.time()
            cold_s = replica.ready_s - replica.started_s
            self._on_change(f"replica {replica.task_id} ready after {cold_s:.1f}s cold start")
        elif healthy:
            self._on_change(f"replica {replica.task_id} healthy again")
        else:
            self._on_change(f"replica {replica.task_id} failed its health check")
        self._publish_backends()

    def _publish_backends(self) -> None:
        self.router.set_backends({r.task_id: r.base_url for r in self.ready()})

    async def drain(self, replica: Replica, reason: str) -> None:
        """Deregister from the router, let in-flight requests finish (bounded), then stop."""
        if replica.state in (ReplicaState.DRAINING, ReplicaState.STOPPED):
            return
        replica.state = ReplicaState.DRAINING
        self._publish_backends()
        if replica.sidecar is not None:
            replica.sidecar.drain(reason)
        with contextlib.suppress(AttributeError):
            replica.engine.begin_drain()
        deadline_s = time.monotonic() + self.config.drain_timeout_s
        while self.router.outstanding().get(replica.task_id, 0) and time.monotonic() < deadline_s:
            await asyncio.sleep(0.2)
        await self._stop_replica(replica)

    async def _stop_replica(self, replica: Replica) -> None:
        replica.state = ReplicaState.STOPPED
        self._publish_backends()
        for task in replica.tasks:
            task.cancel()
        if replica.sidecar is not None:
            await asyncio.to_thread(replica.sidecar.stop)  # final scrape while the engine still answers
        await self._shutdown(replica)
        self._on_change(f"replica {replica.task_id} stopped")

    async def _launch(self) -> Replica:
        """Container start: the engine process begins its cold start, its port opens."""
        identity = self._identity()
        groundtruth = None
        if self.work_dir is not None:
            groundtruth = GroundTruth(self.work_dir / "groundtruth" / f"{identity.replica}.jsonl")
        engine = SimEngine(
            self.config.profile,
            name=identity.replica,
            seed=self._rng.getrandbits(32),
            clock=time.monotonic,
            export_dir=self._request_log_dir(identity.replica),
            groundtruth=groundtruth,
        )
        for (label, value), accept_length in self.config.class_accept_lengths.items():
            engine.set_class_accept_length(label, value, accept_length)
        server = await serve(engine, self.config.host, self._next_port())
        replica = Replica(identity.replica, identity, self.config.host, server.port, engine, server)
        replica.groundtruth = groundtruth
        replica.run_task = asyncio.get_running_loop().create_task(engine.run())
        if self.config.store_dir is not None:
            replica.nvml = self._nvml(replica) if self.config.simulate_gpus else None
            replica.sidecar = self._sidecar(replica)
        return replica

    def _request_log_dir(self, replica: str) -> Path | None:
        """SGLang's export folder; None for vLLM, which writes no per-request file (docs/simulator.md)."""
        if self.work_dir is None or not self.config.request_log or self.config.profile.engine != "sglang":
            return None
        return self.work_dir / "requestlog" / replica

    def _nvml(self, replica: Replica) -> Any:
        from enginescope.simfleet.nvml import SimGpuSpec, SimulatedNvml

        spec = self.config.gpu_spec or SimGpuSpec()
        devices = [
            dataclasses.replace(spec, uuid=gpu_uuid(replica.task_id, index))
            for index in range(self.config.profile.tp_size)
        ]
        return SimulatedNvml(devices, lambda: replica.gpu_busy, intensity_fn=lambda: replica.gpu_intensity)

    def _sidecar(self, replica: Replica) -> Any:
        from enginescope.sidecar import Sidecar, SidecarConfig

        identity = replica.identity
        config = SidecarConfig(
            engine_url=replica.base_url,
            store_dir=self.config.store_dir,  # type: ignore[arg-type]
            state_dir=self.work_dir / "state" if self.work_dir is not None else None,
            interval_s=self.config.scrape_interval_s,
            engine=self.config.profile.engine,
            replica=identity.replica,
            model=identity.model,
            region=identity.region,
            gpu_type=identity.gpu_type,
            cloud_provider=identity.cloud_provider,
            nvml=replica.nvml,
            request_log_dir=self._request_log_dir(identity.replica),
            store_request_params=self.config.store_request_params,
        )
        return Sidecar(config)

    async def _couple_gpu(self, replica: Replica) -> None:
        """GPU load follows the engine; a throttled SM clock slows the engine (TP waits for the slowest)."""
        while True:
            replica.gpu_busy = replica.engine.gpu_busy_fraction()
            replica.gpu_intensity = replica.engine.gpu_intensity()
            factor = await asyncio.to_thread(replica.nvml.speed_factor)
            replica.engine.set_speed_factor(min(max(factor, 0.05), 1.0))
            await asyncio.sleep(0.5)

    async def _shutdown(self, replica: Replica) -> None:
        await replica.server.stop()
        replica.engine.close()
        await asyncio.gather(*replica.tasks, return_exceptions=True)
        if replica.run_task is not None:
            await asyncio.wait_for(replica.run_task, 5.0)
        if replica.groundtruth is not None:
            replica.groundtruth.close()

    def _next_port(self) -> int:
        if not self.config.base_port:
            return 0
        port = self.config.base_port + self._ports_used
        self._ports_used += 1
        return port

    def _identity(self) -> Identity:
        return replica_identity(self.config.profile, self._rng, time.time())


def local_work_dir(store: Path | str | None, work_dir: Path | None = None) -> Path | None:
    """The local folder for a fleet's files that are not store tables: ``work_dir``, else the
    store folder; None without a store. A URL store (``s3://...``) needs a ``work_dir``."""
    if store is None:
        return None
    if work_dir is not None:
        return Path(work_dir)
    if isinstance(store, Path):
        return store
    from enginescope.store.location import store_location

    location = store_location(store)
    if not location.is_local:
        raise ValueError(
            f"store {location.root} is not a local folder: give a local work_dir for the fleet's files"
        )
    return location.path


def replica_identity(profile: EngineProfile, rng: random.Random, started_s: float) -> Identity:
    """A Modal-like identity for a replica of ``profile`` whose container started at ``started_s``."""
    provider, region = rng.choice(PLACEMENTS)
    gpu = profile.gpu_type if profile.tp_size == 1 else f"{profile.gpu_type}:{profile.tp_size}"
    return Identity(
        replica=new_task_id(started_s, rng),
        engine=profile.engine,
        model=profile.model_name,
        region=region,
        gpu_type=gpu,
        cloud_provider=provider,
        app="enginescope-demo",
        host=os.uname().nodename,
    )


def gpu_uuid(task_id: str, index: int) -> str:
    digest = hashlib.sha1(f"{task_id}-{index}".encode()).hexdigest()
    return f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


async def _health_ok(base_url: str) -> bool:
    try:
        status, body = await asyncio.wait_for(http_request("GET", base_url + "/health", {}), 2.0)
        async for _ in body:
            pass
        return status == 200
    except (OSError, TimeoutError, Exception):  # any failure means "not healthy"
        return False
