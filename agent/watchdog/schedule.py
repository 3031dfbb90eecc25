"""How often the loop looks at what, as tables (WALinuxAgent's periodic operations: each with
its period; a probe runs off the loop's thread and never raises into it).

A service's probes follow from the roles of its health stages (agent.watchdog.stages), never
from its name: one that serves the model (its stages check /v1/models: vLLM) is watched closely,
its engine's progress and, when idle, a tiny completion too; one proven by its /health alone
(Open WebUI, the proxy) by that, at the front's period.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from agent import probes, service_health
from agent.settings import Settings


@dataclass(frozen=True)
class Periods:
    tick: float = 5.0  # the loop wakes at least this often (and whenever news comes)
    containers: float = 30.0  # container state re-read (events tell every change at once)
    health: float = 3.0  # the model server's /health (and its served name until it answered)
    models: float = 60.0  # the served name, once it answered and the service is healthy
    load: float = 5.0  # vLLM's /metrics
    canary: float = 20.0  # a tiny completion, only while the engine is idle
    front: float = 10.0  # /health of a service proven by it alone: Open WebUI, the proxy
    gpu: float = 15.0
    heartbeat: float = 30.0  # the state file is rewritten at least this often
    maintenance: float = 2.0


DEFAULT_PERIODS = Periods()


@dataclass(frozen=True)
class Periodic:
    """One probe of a service on its own period."""

    name: str  # the signal it feeds (agent.watchdog.judge): a stage's role, or "load"
    every: float  # seconds between two runs
    timeout: float
    settled: float | None = None  # the period once it passed and the service is healthy
    loaded: bool = False  # not while the service starts (loads its model)
    idle: bool = False  # only while the engine has no request (a completion would queue)
    needed: bool = False  # no verdict until it answered once since the (re)start

    def runs(self, *, state: str, idle: bool) -> bool:
        """Whether it runs at all for a machine in `state` (idle: the engine's progress)."""
        return not (self.loaded and state == "starting") and (idle or not self.idle)

    def period(self, *, passed: bool, state: str) -> float:
        """Its period now: `passed`, the last run of it passed."""
        if self.settled is not None and passed and state == "healthy":
            return self.settled
        return self.every


def schedule(roles: Collection[str], periods: Periods = DEFAULT_PERIODS) -> tuple[Periodic, ...]:
    """The probes of a service whose health stages have these roles, in the order they run."""
    p = periods
    if "models" not in roles:
        front = (Periodic("health", p.front, timeout=3.0, needed=True),)
        return tuple(row for row in front if row.name in roles)
    return (
        Periodic("health", p.health, timeout=2.0, needed=True),
        # the served name is re-checked slowly once it answered; quickly until then
        Periodic("models", p.health, timeout=5.0, settled=p.models, needed=True),
        Periodic("load", p.load, timeout=3.0, loaded=True),
        Periodic("canary", p.canary, timeout=20.0, loaded=True, idle=True),
    )


def needed(rows: tuple[Periodic, ...]) -> tuple[str, ...]:
    """The signals a verdict waits for (agent.watchdog.judge.Signals.verdict)."""
    return tuple(row.name for row in rows if row.needed)


def job(
    row: Periodic, settings: Settings, stages: Mapping[str, service_health.Stage]
) -> Callable[[], Any]:
    """What running `row` once does: its stage with its timeout, or vLLM's /metrics (load)."""
    if row.name == "load":
        api = service_health.api_url(settings)
        return lambda: probes.vllm_load(api, row.timeout)
    stage = stages[row.name]
    return lambda: stage.run(row.timeout)
