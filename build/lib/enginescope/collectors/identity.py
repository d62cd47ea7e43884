"""Resolve a replica's identity: Modal's environment first, else a stable generated id."""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path

from enginescope.collectors.model import Identity

# Fleet watchers (simfleet's autoscaler, deploy's Modal watcher) write fleet-level events and
# signals under a pseudo-replica "fleet" or "fleet-<app>"; replica counts and lists exclude it.
FLEET_REPLICA = "fleet"


def fleet_replica(app_name: str | None = None) -> str:
    return f"{FLEET_REPLICA}-{app_name}" if app_name else FLEET_REPLICA


def is_fleet_replica(replica: str) -> bool:
    return replica == FLEET_REPLICA or replica.startswith(FLEET_REPLICA + "-")


_MODAL_ENV = {
    "replica": "MODAL_TASK_ID",
    "region": "MODAL_REGION",
    "cloud_provider": "MODAL_CLOUD_PROVIDER",
    "image_id": "MODAL_IMAGE_ID",
    "app": "MODAL_APP_NAME",
}


def resolve_identity(
    *,
    engine_url: str,
    state_dir: Path | None,
    replica: str | None = None,
    engine: str = "unknown",
    model: str = "",
    region: str = "",
    gpu_type: str = "",
    cloud_provider: str = "",
    env: Mapping[str, str] | None = None,
) -> Identity:
    """Explicit arguments win, then ``MODAL_*`` variables, then a generated id.

    The generated id is persisted under ``state_dir`` keyed by host and engine URL, so a
    restarted sidecar keeps writing under the same replica instead of inventing a new one.
    """
    env = os.environ if env is None else env
    host = env.get("HOSTNAME") or socket.gethostname()
    replica = replica or env.get(_MODAL_ENV["replica"]) or _persisted_id(state_dir, host, engine_url)
    return Identity(
        replica=replica,
        engine=engine,
        model=model,
        region=region or env.get(_MODAL_ENV["region"], ""),
        gpu_type=gpu_type or env.get("ENGINESCOPE_GPU_TYPE", ""),
        cloud_provider=cloud_provider or env.get(_MODAL_ENV["cloud_provider"], ""),
        app=env.get(_MODAL_ENV["app"], ""),
        image_id=env.get(_MODAL_ENV["image_id"], ""),
        host=host,
    )


def _persisted_id(state_dir: Path | None, host: str, engine_url: str) -> str:
    key = hashlib.sha1(f"{host}|{engine_url}".encode()).hexdigest()[:12]
    if state_dir is None:
        return f"local-{key}"
    path = state_dir / "sidecar-ids" / key
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    replica = f"local-{uuid.uuid4().hex[:10]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(replica)
    tmp.replace(path)
    return replica
