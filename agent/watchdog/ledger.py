"""The watchdog's state under `paths.state/watchdog.json`: what each service is, why, and its
restarts in the last hour. It survives the watchdog's own restart (the budget is not reset by
a crash of the agent), `sandbox-agent status` shows it, and `sandbox-agent up` clears a
`failed` service (`clear_failed`). Restart times are stored as wall-clock seconds, for that
file only: the machines run on the monotonic clock and are converted on load.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.files import atomic_write
from agent.results import Record
from agent.settings import Settings
from agent.watchdog.machine import STATES, Machine, Policy

FILE = "watchdog.json"


def fingerprint(settings: Settings) -> str:
    """A change of settings clears a failed service: its failure was under the old ones."""
    data = {k: v for k, v in settings.as_dict().items() if k != "watch"}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ServiceRecord(Record):
    service: str
    state: str
    reason: str
    since: float  # wall clock
    restarts: tuple[float, ...]  # wall clock, within the last hour
    container_id: str | None = None  # the container stopped when it failed


@dataclass(frozen=True)
class WatchState(Record):
    fingerprint: str
    updated: float  # wall clock of the last write (a heartbeat while the watchdog runs)
    pid: int
    services: dict[str, ServiceRecord] = field(default_factory=dict)
    maintenance: str | None = None
    gpu: tuple[str, ...] = ()  # GPU problems reported, one line each
    # set by `sandbox-agent up` (clear_failed): the watchdog resets its failed machines
    cleared: float = 0.0


def path(state_dir: Path) -> Path:
    return state_dir / FILE


def load(state_dir: Path) -> WatchState | None:
    try:
        data = json.loads(path(state_dir).read_text())
        services = {
            name: ServiceRecord(
                service=name,
                state=str(s["state"]) if s["state"] in STATES else "starting",
                reason=str(s.get("reason", "")),
                since=float(s.get("since", 0)),
                restarts=tuple(float(t) for t in s.get("restarts", ())),
                container_id=s.get("container_id"),
            )
            for name, s in dict(data.get("services", {})).items()
        }
        return WatchState(
            fingerprint=str(data.get("fingerprint", "")),
            updated=float(data.get("updated", 0)),
            pid=int(data.get("pid", 0)),
            services=services,
            maintenance=data.get("maintenance"),
            gpu=tuple(str(g) for g in data.get("gpu", ())),
            cleared=float(data.get("cleared", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save(state_dir: Path, state: WatchState) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path(state_dir), json.dumps(state.as_dict(), indent=1), mode=0o600)


def clear_failed(state_dir: Path) -> bool:
    """`sandbox-agent up`: failed services start again with a fresh budget. True if any was."""
    found = load(state_dir)
    if found is None:
        return False
    failed = [s for s in found.services.values() if s.state == "failed"]
    services = {
        name: ServiceRecord(name, "starting", "cleared by sandbox-agent up", time.time(), ())
        if rec.state == "failed"
        else rec
        for name, rec in found.services.items()
    }
    save(
        state_dir,
        WatchState(
            found.fingerprint,
            found.updated,
            found.pid,
            services,
            found.maintenance,
            found.gpu,
            cleared=time.time(),
        ),
    )
    return bool(failed)


def record(machine: Machine, now: float, wall: float, container_id: str | None) -> ServiceRecord:
    """A machine as the file keeps it (monotonic times turned into wall-clock ones)."""
    return ServiceRecord(
        service=machine.service,
        state=machine.state,
        reason=machine.reason,
        since=round(wall - (now - machine.since), 3),
        restarts=tuple(round(wall - (now - t), 3) for t in machine.restarts),
        container_id=container_id,
    )


def restore(
    rec: ServiceRecord | None, service: str, policy: Policy, now: float, wall: float
) -> Machine:
    """A machine from its record: restarts still within the hour count against the budget;
    a failed service stays failed (reported once, already)."""
    machine = Machine.new(service, policy, now)
    if rec is None:
        return machine
    for stamp in rec.restarts:
        age = wall - stamp
        if 0 <= age < policy.window:
            machine.restarts.append(now - age)
    if rec.state == "failed":
        machine.state, machine.reason = "failed", rec.reason
        machine.since = now - max(0.0, wall - rec.since)
    return machine


def summary(state_dir: Path, wall: float | None = None) -> dict[str, Any] | None:
    """What `sandbox-agent status` shows of the watchdog; None when it never ran."""
    found = load(state_dir)
    if found is None:
        return None
    wall = time.time() if wall is None else wall
    return {
        "updated_s_ago": round(max(0.0, wall - found.updated), 1),
        "pid": found.pid,
        "maintenance": found.maintenance,
        "gpu": list(found.gpu),
        "services": {
            name: {
                "state": rec.state,
                "reason": rec.reason,
                "restarts_last_hour": sum(1 for t in rec.restarts if wall - t < 3600),
            }
            for name, rec in found.services.items()
        },
    }


def restarts_last_hour(services: Mapping[str, ServiceRecord], wall: float) -> int:
    return sum(1 for rec in services.values() for t in rec.restarts if wall - t < 3600)
