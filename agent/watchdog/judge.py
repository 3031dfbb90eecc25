"""From the latest signals of one service to one Verdict, with agent.service_health's definitions.

vLLM: /health, the served name in /v1/models, the engine's progress from /metrics
(service_health.engine_progress: stuck vs busy) and, now and then when idle, a tiny completion.
Open WebUI: /service_health. The verdict is ok only when every latest signal of this epoch is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent import probes, service_health
from agent.watchdog.machine import Verdict

LOAD_SAMPLES = 12  # /metrics samples kept per service (a minute at the default period)


@dataclass
class Signals:
    """The latest result of each probe of one service, since its last (re)start."""

    epoch: int = 0
    latest: dict[str, tuple[bool, str]] = field(default_factory=dict)
    load: list[service_health.LoadSample] = field(default_factory=list)
    progress: str = "unknown"  # idle | busy | stuck | unknown

    def renew(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.latest, self.load, self.progress = epoch, {}, [], "unknown"

    def take(self, name: str, result: Any, at: float, stall: float) -> None:
        if name == "load":
            self.load = [*self.load[-(LOAD_SAMPLES - 1) :], service_health.LoadSample(at, result)]
            self.progress, why = service_health.engine_progress(self.load, stall)
            # /metrics that cannot be read says nothing about health (/health does)
            self.latest["load"] = (self.progress != "stuck", why)
            return
        assert isinstance(result, probes.Probe)
        self.latest[name] = (result.ok, result.detail)

    def verdict(self, needed: tuple[str, ...]) -> Verdict | None:
        """None until every needed probe has answered once in this epoch."""
        for name, (ok, why) in self.latest.items():
            if not ok:
                return Verdict(False, f"{LABELS.get(name, name)}: {why}", sustained=name in HARD)
        if not all(name in self.latest for name in needed):
            return None
        return Verdict(True)

    @property
    def idle(self) -> bool:
        """No request in the engine, or /metrics unreadable: time for a tiny completion."""
        return self.progress in ("idle", "unknown")


LABELS = {
    "health": "/health",
    "models": "/v1/models",
    "load": "the engine",
    "canary": "a 1-token completion",
}
# Already sustained when seen once: a completion that timed out, an engine stuck for
# service_health.STALL_SECONDS.
HARD = frozenset({"load", "canary"})
