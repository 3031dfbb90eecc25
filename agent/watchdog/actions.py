"""What the watchdog does about a decision: restart one service (its existing container, so
Compose's labels stay), stop a failed one (Docker's restart policy would loop it), say so in
the journal, STATUS, the MOTD and the metrics."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from agent import log, stack
from agent.errors import AgentError
from agent.files import atomic_write
from agent.maintenance import PendingChange
from agent.settings import Settings
from agent.stack import ServiceStatus, StackEvent
from agent.systemd_client import Notifier
from agent.watchdog.certificate import CertificateWatch
from agent.watchdog.containers import OwnWindow
from agent.watchdog.machine import Decision, Machine
from agent.watchdog.report import Reporter

if TYPE_CHECKING:
    from agent.engine import DockerClient
    from agent.watchdog.metrics import Metrics


class Watch(Protocol):
    """What the reports read of the watch loop (agent.watchdog.loop.Watch)."""

    @property
    def machines(self) -> dict[str, Machine]: ...
    @property
    def containers(self) -> dict[str, ServiceStatus]: ...
    @property
    def maintenance(self) -> str | None: ...
    @property
    def connected(self) -> bool: ...
    def clock(self) -> float: ...


STOP_TIMEOUT = 5  # seconds a restarted service gets to exit
HUNG_STOP_TIMEOUT = 2  # one that answers nothing at all will not exit on SIGTERM either
FAILED_FIX = "see `sandbox-agent logs {service}`, fix the cause, then run `sandbox-agent up`"


def reason_kind(reason: str) -> str:
    """A bounded label for the metrics: why a restart happened."""
    for needle, kind in (
        ("Docker's healthcheck", "docker_unhealthy"),
        ("the engine:", "engine_stuck"),
        ("1-token completion", "completion_failed"),
        ("timed out", "hang"),
        ("/v1/models", "models"),
        ("/health", "health"),
        ("start grace", "start_grace"),
    ):
        if needle in reason:
            return kind
    return "other"


class Actions:
    def __init__(
        self,
        settings: Settings,
        report: Reporter,
        notifier: Notifier,
        *,
        metrics: Metrics | None = None,
        watchdog_every: float | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.report, self.notifier = settings, report, notifier
        self.metrics, self.watchdog_every, self.wall = metrics, watchdog_every, wall
        self.pid = os.getpid()
        self.failed_reason: dict[str, str] = {}
        self.pending: PendingChange | None = None  # a change killed half done
        self.gpu_notes: list[str] = []
        self._own: dict[str, OwnWindow] = {}  # around our last restart or stop
        self._died: dict[str, str] = {}
        self._reported: set[str] = set()  # a die event said so already
        self._oom: set[str] = set()
        self._pinged = float("-inf")
        self.status_line = ""
        self.certificate = CertificateWatch(settings)

    # --- engine events --------------------------------------------------------------------

    def own_window(self, service: str) -> OwnWindow | None:
        """The wall-clock span around our last restart or stop of `service` (None: never)."""
        return self._own.get(service)

    def oom(self, service: str) -> None:
        self._oom.add(service)

    def oom_seen(self, service: str) -> bool:
        return service in self._oom

    def died(self, event: StackEvent) -> None:
        code = event.attributes.get("exitCode")
        oom = event.service in self._oom
        reason = "was killed by the kernel's OOM killer" if oom else f"exited with code {code}"
        self._died[event.service] = reason
        self._reported.add(event.service)
        self.report.event(
            "service_crashed",
            "warning",
            f"{event.service} {reason}",
            service=event.service,
            reason="oom" if oom else "exit",
            exit_code=code,
            oom=int(oom),
        )
        if self.metrics is not None:
            self.metrics.crashed(event.service, "oom" if oom else "exit")

    def started_again(self, svc: ServiceStatus, was: str) -> None:
        """A new run of the same container that neither a crash nor we caused: said."""
        self.report.event(
            "service_started",
            "notice",
            f"{svc.service} started again in its container (the engine restarted, or a person "
            "started it): loading, under the start grace",
            service=svc.service,
            was=was,
        )

    def crash_reason(self, svc: ServiceStatus) -> str:
        self._oom.discard(svc.service)
        return self._died.pop(svc.service, None) or (
            "was killed by the kernel's OOM killer" if svc.oom_killed else "exited"
        )

    # --- decisions ------------------------------------------------------------------------

    def decided(
        self,
        decision: Decision,
        machine: Machine,
        client: DockerClient | None,
        clock: Callable[[], float],
    ) -> None:
        service, reason, action = decision.service, decision.reason, decision.action
        if action == "restart":
            self._restart(decision, machine, client, clock)
        elif action == "failed":
            self._failed(decision, client)
        elif action == "crashed":
            if service not in self._reported:  # its die event was missed (engine away)
                self.report.event(
                    "service_crashed",
                    "warning",
                    f"{service} {reason} (seen in its restart count)",
                    service=service,
                    reason="exit",
                )
            self._reported.discard(service)
        elif action == "unhealthy":
            self.report.event(
                "service_unhealthy",
                "warning",
                f"{service} is unhealthy: {reason}",
                service=service,
                reason=reason,
            )
        elif action == "suspect":
            self.report.once(
                f"{service}.suspect",
                reason,
                "service_suspect",
                "warning",
                f"{service} may be unhealthy: {reason}",
                service=service,
                reason=reason,
            )
        elif action in ("healthy", "recovered"):
            self.report.forget(f"{service}.suspect")
            if reason == "reset":
                self.failed_reason.pop(service, None)
                self.write_motd()
                self.report.event(
                    "service_cleared",
                    "notice",
                    f"{service}: failure cleared, watching again",
                    service=service,
                )
            else:
                self.report.event(
                    f"service_{action}",
                    "info",
                    f"{service} is healthy",
                    service=service,
                    was=reason,
                )

    def _restart(
        self,
        decision: Decision,
        machine: Machine,
        client: DockerClient | None,
        clock: Callable[[], float],
    ) -> None:
        service, reason = decision.service, decision.reason
        started, wall = clock(), self.wall()
        try:
            if client is None:
                raise AgentError("the Docker engine is not reachable")
            hung = "timed out" in reason
            cid = stack.restart_service(
                client,
                self.settings.project,
                service,
                timeout=HUNG_STOP_TIMEOUT if hung else STOP_TIMEOUT,
            )
        except AgentError as exc:
            machine.restarted(clock())
            self.report.event(
                "service_restart_failed",
                "error",
                f"could not restart {service}: {exc.message}",
                service=service,
                reason=reason,
                attempt=decision.attempt,
            )
            return
        self._own[service] = OwnWindow(wall - 1.0, self.wall() + 0.5)
        machine.restarted(clock())
        self.report.event(
            "service_restarted",
            "warning",
            f"restarted {service} (attempt {decision.attempt} in the last hour): {reason}",
            service=service,
            reason=reason,
            attempt=decision.attempt,
            seconds=round(clock() - started, 2),
            container=cid[:12],
        )
        if self.metrics is not None:
            self.metrics.restarted(service, reason_kind(reason))

    def _failed(self, decision: Decision, client: DockerClient | None) -> None:
        service, reason = decision.service, decision.reason
        fix = decision.fix or FAILED_FIX.format(service=service)
        stopped = ""
        # a GPU problem (decision.fix) is not healed by stopping or restarting a container
        if not decision.fix and client is not None:
            wall = self.wall()
            with contextlib.suppress(AgentError):
                if stack.stop(client, self.settings.project, service, timeout=STOP_TIMEOUT):
                    stopped = "; its container was stopped so that Docker does not loop it"
            self._own[service] = OwnWindow(wall - 1.0, self.wall() + 0.5)
        self.failed_reason[service] = reason
        self.write_motd()  # before the event: whoever it reaches finds the login message
        self.report.event(
            "service_failed",
            "crit",
            f"{service} failed: {reason}{stopped}. Fix: {fix}",
            service=service,
            reason=reason,
            attempt=decision.attempt,
            fix=fix,
        )

    def change_pending(self, pending: PendingChange | None) -> None:
        """A change killed half done: said once (at error, with its fix) and on the login
        message until `up` repairs it; the loop leaves the services alone meanwhile."""
        if pending == self.pending:
            return
        self.pending = pending
        self.write_motd()  # first: whoever reads the event finds the login message saying it
        if pending is not None:
            self.report.event(
                "change_interrupted",
                "error",
                f"{pending.summary}; the watchdog leaves the services alone. Fix: {pending.fix}",
                kind=pending.kind,
                config=pending.config,
                fix=pending.fix,
            )

    def write_motd(self) -> None:
        """The login message: a change half done, a failed service, each with its fix;
        removed when there is neither. Words from a service's failure: `log.safe_text`."""
        path = self.settings.watch.motd
        lines = []
        if self.pending is not None:
            lines += [f"  CHANGE HALF DONE: {self.pending.summary}", f"    fix: {self.pending.fix}"]
        for service, reason in sorted(self.failed_reason.items()):
            lines.append(f"  {service} FAILED: {reason}")
            lines.append(f"    fix: {FAILED_FIX.format(service=service)}")
        with contextlib.suppress(OSError):
            lines += [f"  {line}" for line in self.certificate.lines]
            if not lines:
                path.unlink(missing_ok=True)
                return
            text = "\n".join(log.safe_text(line) for line in ["sandbox-agent watchdog:", *lines])
            atomic_write(path, text + "\n", mode=0o644)

    # --- alive ----------------------------------------------------------------------------

    def alive(self, watch: Watch) -> None:
        """WATCHDOG=1 only from the loop (so a hung loop is killed), STATUS on a change."""
        now, wall = watch.clock(), self.wall()
        line = status_line(watch, wall)
        lines = []
        if line != self.status_line:
            self.status_line = line
            lines.append(f"STATUS={line}")
        if self.watchdog_every is not None and now - self._pinged >= self.watchdog_every:
            self._pinged = now
            lines.append("WATCHDOG=1")
        if lines:
            self.notifier.notify(*lines)
        if self.certificate.check(now, self.report):
            self.write_motd()
        if self.metrics is not None:
            self.metrics.tick(watch.machines, wall)


def status_line(watch: Watch, wall: float) -> str:
    parts: list[str] = []
    if watch.maintenance:
        parts.append(f"maintenance: {watch.maintenance}")
    now = watch.clock()
    for service, machine in watch.machines.items():
        svc = watch.containers.get(service)
        if (
            svc is not None
            and svc.state not in ("running", "restarting")
            and machine.state != "failed"
        ):
            parts.append(f"{service} {svc.state}")
        elif machine.state == "failed":
            parts.append(f"{service} FAILED ({machine.reason[:80]})")
        else:
            parts.append(f"{service} {machine.state}")
    restarts = sum(m.restarts_in_window(now) for m in watch.machines.values())
    parts.append(f"{restarts} restart{'s' if restarts != 1 else ''} in the last hour")
    if not watch.connected:
        parts.append("engine not connected")
    return " · ".join(parts)
