"""The watch loop: news from the engine and the probes in, decisions out, one step at a time.

`Watch.step()` waits for news at most one tick, hands it to the services' machines (what the
engine's facts and events mean: agent.watchdog.containers), runs the periodic checks that are
due (each with its own period, agent.watchdog.schedule; a check never raises into the loop),
acts on the decisions, and tells systemd it is alive. Clock, wall clock and the engine are
injected, so tests drive it; `run` is the process around it.
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import maintenance, service_health, stack
from agent.errors import AgentError
from agent.settings import Settings
from agent.stack import ServiceStatus, StackEvent
from agent.watchdog import ledger
from agent.watchdog.actions import Actions
from agent.watchdog.containers import PROBED, STOPPED, read_container, read_event
from agent.watchdog.gpus import GpuNews, GpuWatch, hopeless, report_gpus
from agent.watchdog.judge import Signals
from agent.watchdog.machine import Decision, Machine, Policy, Verdict
from agent.watchdog.schedule import DEFAULT_PERIODS, Periods, job, needed, schedule
from agent.watchdog.signals import Connected, Disconnected, EventFeed, News, ProbeDone, ProbePool
from agent.watchdog.stages import ApiKey, stages

if TYPE_CHECKING:
    from agent.engine import DockerClient


class Watch:
    def __init__(
        self,
        settings: Settings,
        *,
        connect: Callable[[], DockerClient],
        api_key: ApiKey,
        actions: Actions,
        policy: Policy,
        periods: Periods = DEFAULT_PERIODS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        gpus: GpuWatch | None = None,
    ) -> None:
        self.gpus = gpus
        self.settings, self.connect, self.actions = settings, connect, actions
        self.policy, self.periods, self.clock, self.wall = policy, periods, clock, wall
        self.services = stack.wanted_services(settings)
        self.stages = {s: stages(settings, s, api_key) for s in self.services}
        self.schedules = {s: schedule(self.stages[s], periods) for s in self.services}
        self.jobs = {
            (s, row.name): job(row, settings, self.stages[s])
            for s in self.services
            for row in self.schedules[s]
        }
        self.news: queue.Queue[News] = queue.Queue()
        self.pool = ProbePool(self.news, clock)
        self.feed = EventFeed(connect, settings.project, self.news, clock=clock)
        self.machines: dict[str, Machine] = {}
        self.signals = {s: Signals() for s in self.services}
        self.containers: dict[str, ServiceStatus] = {}
        self.killed: dict[str, StackEvent] = {}  # a die by SIGKILL, its `oom` still to come
        self.due: dict[str, float] = {}
        self.client: DockerClient | None = None
        self.maintenance: str | None = None
        self.connected = False
        self.last_saved, self.cleared = 0.0, 0.0
        self.dirty = True
        # the compose file `up` writes once the stack it describes has started: when it
        # changes, `up` (alone, or a change's) brought the stack to new settings, and this
        # loop's view of them (the served name, the door) may be old (run.watch reloads)
        self.compose = settings.paths.stack / stack.COMPOSE_FILE
        self.deployed = _stamp(self.compose)
        self.redeployed = False

    # --- life -----------------------------------------------------------------------------

    def start(self) -> None:
        """Read the saved state and the stack's containers; then the event feed runs."""
        now, wall = self.clock(), self.wall()
        found = ledger.load(self.settings.paths.state)
        same = found is not None and found.fingerprint == ledger.fingerprint(self.settings)
        for service in self.services:
            rec = found.services.get(service) if found and same else None
            self.machines[service] = ledger.restore(rec, service, self.policy, now, wall)
        self.cleared = found.cleared if found else 0.0
        if found is not None and not same:
            self.actions.report.event(
                "settings_changed", "notice", "the settings changed: failures and budgets reset"
            )
        self._check_maintenance(now)
        self._read_containers(now, first=True)
        self.feed.start()

    def close(self) -> None:
        self.feed.stop()
        self.pool.close()
        self.save(force=True)

    def step(self) -> None:
        now = self.clock()
        try:
            news: News | None = self.news.get(timeout=max(0.0, self._next_due(now) - now))
        except queue.Empty:
            news = None
        while news is not None:
            self._safely(self._handle, news)
            try:
                news = self.news.get_nowait()
            except queue.Empty:
                news = None
        self._safely(self._periodic)
        self.save()

    # --- news -----------------------------------------------------------------------------

    def _handle(self, news: News) -> None:
        now = self.clock()
        if isinstance(news, Connected):
            if not self.connected:
                self.actions.report.event("engine_connected", "info", "reading Docker's events")
            self.connected = True
            self.actions.report.forget("engine")  # the next outage is news, worded alike or not
            self._read_containers(now)  # events missed meanwhile are never re-sent
        elif isinstance(news, Disconnected):
            self.connected = False
            self.client = None
            self.actions.report.once(
                "engine", news.reason, "engine_disconnected", "warning", news.reason
            )
        elif isinstance(news, ProbeDone):
            self._probe_done(news, now)
        elif isinstance(news, StackEvent):
            self._event(news, now)

    def _event(self, event: StackEvent, now: float) -> None:
        machine = self.machines.get(event.service)
        if machine is None or self.maintenance:
            return
        heard = read_event(event, ours=self.actions.own_window(event.service))
        bad = heard.died or (heard.verdict is not None and not heard.verdict.ok)
        if bad and self._change_began(now):
            return
        if heard.oom:
            self.actions.oom(event.service)
            if (killed := self.killed.pop(event.service, None)) is not None:
                self.actions.died(killed)  # its `die` came first
        if heard.died:
            code = event.attributes.get("exitCode")
            if code == "137" and not self.actions.oom_seen(event.service):
                self.killed[event.service] = event  # a kill: its `oom` event may come after
            else:
                self.actions.died(event)
        if heard.reread is not None:
            self.due["containers"] = now + heard.reread
        if heard.verdict is not None:
            self._decide(machine.observe(now, heard.verdict))

    def _probe_done(self, done: ProbeDone, now: float) -> None:
        if isinstance(done.result, GpuNews):
            self._gpu_news(done.result, now)
            return
        machine = self.machines.get(done.service)
        if machine is None or done.epoch != machine.epoch or self.maintenance:
            return  # started before a restart: says nothing about the new run
        sig = self.signals[done.service]
        sig.renew(machine.epoch)
        sig.take(done.name, done.result, now, service_health.STALL_SECONDS)
        svc = self.containers.get(done.service)
        if svc is None or svc.state not in PROBED:
            return
        verdict = sig.verdict(needed(self.schedules[done.service]))
        if verdict is not None and (verdict.ok or not self._change_began(now)):
            self._decide(machine.observe(now, verdict))

    def _change_began(self, now: float) -> bool:
        """Whether a change took the maintenance lock since the last look (read again now,
        before bad news is judged: the change may be what stops the service)."""
        self._check_maintenance(now)
        return self.maintenance is not None

    def _gpu_news(self, news: GpuNews, now: float) -> None:
        self.actions.gpu_notes = report_gpus(news, self.actions.report, self.actions.metrics)
        bad = hopeless(news)
        machine = self.machines.get(stack.VLLM)
        if bad is not None and machine is not None and not self.maintenance:
            self._decide(machine.observe(now, Verdict(False, bad[0], hopeless=True, fix=bad[1])))

    # --- periodic checks ------------------------------------------------------------------

    def _periodic(self) -> None:
        now = self.clock()
        if self._due("maintenance", now, self.periods.maintenance):
            self._check_maintenance(now)
            if not self.maintenance and (found := _stamp(self.compose)) != self.deployed:
                self.deployed, self.redeployed = found, True
        if self._due("containers", now, self.periods.containers):
            self._read_containers(now)
        if self.maintenance:  # standing back, alive: WATCHDOG=1 through a half-hour switch
            self.actions.alive(self)
            return
        for service, machine in self.machines.items():
            self._decide(machine.tick(now))
            svc = self.containers.get(service)
            if svc is not None and svc.state in PROBED and machine.state != "restarting":
                self._schedule_probes(service, machine, now)
        if any(m.state == "failed" for m in self.machines.values()):
            self._check_cleared(now)
        if self.gpus is not None and self._due("gpu", now, self.periods.gpu):
            self.pool.submit("gpu", "nvml", 0, self.gpus.read)
        self.actions.alive(self)

    def _schedule_probes(self, service: str, machine: Machine, now: float) -> None:
        sig = self.signals[service]
        if sig.epoch != machine.epoch:  # (re)started: every probe is due at once
            sig.renew(machine.epoch)
            for key in [k for k in self.due if k.startswith(service + ".")]:
                del self.due[key]
        if machine.state == "failed":
            return
        for row in self.schedules[service]:
            if not row.runs(state=machine.state, idle=sig.idle):
                continue
            passed = sig.latest.get(row.name, (False, ""))[0]
            period = row.period(passed=passed, state=machine.state)
            if self._due(f"{service}.{row.name}", now, period):
                self._probe(service, row.name, machine, self.jobs[service, row.name])

    def _probe(self, service: str, name: str, machine: Machine, fn: Callable[[], Any]) -> None:
        if not self.pool.submit(service, name, machine.epoch, fn):
            # the last one still runs (it may hang: what we look for); try again soon
            self.due[f"{service}.{name}"] = self.clock() + 0.5

    def _read_containers(self, now: float, first: bool = False) -> None:
        self.due["containers"] = now + self.periods.containers
        for service in list(self.killed):  # no `oom` event came after the kill: an exit
            self.actions.died(self.killed.pop(service))
        try:
            if self.client is None:
                self.client = self.connect()
            found = stack.status(self.client, self.settings.project, self.services)
        except AgentError as exc:
            self.client = None
            self.actions.report.once(
                "engine", exc.message, "engine_unreachable", "warning", exc.message
            )
            return
        for svc in found:
            machine = self.machines.get(svc.service)
            if machine is not None:
                self._container_seen(machine, self.containers.get(svc.service), svc, now, first)
            self.containers[svc.service] = svc

    def _container_seen(
        self,
        machine: Machine,
        old: ServiceStatus | None,
        new: ServiceStatus,
        now: float,
        first: bool,
    ) -> None:
        seen = read_container(
            old,
            new,
            failed=machine.state == "failed",
            first=first,
            maintenance=bool(self.maintenance),
            now=now,
            wall=self.actions.wall(),  # the clock our own restarts are marked on
            ours=self.actions.own_window(new.service),
        )
        report = self.actions.report
        if seen.change == "stopped":
            message = f"{new.service} is {new.state}: the watchdog leaves it to `sandbox-agent up`"
            report.once(
                new.service, new.state, "service_stopped", "notice", message, service=new.service
            )
        elif new.state not in STOPPED:
            report.forget(new.service)
        if seen.running_since is not None:
            machine.running_since(seen.running_since)
        if seen.change == "reset":
            self._decide(machine.reset(now))
        elif seen.change == "crashed":
            reason = self.actions.crash_reason(new)
            self._decide(machine.crashed(now, reason, seen.crashes))
        elif seen.change == "started_again":
            self.actions.started_again(new, seen.was)
            machine.started_again(now)

    def _check_maintenance(self, now: float) -> None:
        found = maintenance.current(self.settings.paths.state)
        pending = None if found else maintenance.pending(self.settings.paths.state)
        self.actions.change_pending(pending)  # half done: stand back, as for a change running
        what = found.what if found else pending.kind + " half done" if pending else None
        if what == self.maintenance:
            return
        if what is not None and pending is None:
            self.actions.report.event(
                "maintenance_started", "notice", f"standing back: {what}", what=what
            )
        elif what is None:
            self.actions.report.event("maintenance_ended", "notice", "watching again")
            self._read_containers(now)  # what the change left
            for service, machine in self.machines.items():
                # the grace runs from the container's start: one the change (re)started loads
                # under it, one it left alone (hung meanwhile, say) is judged at once
                up = getattr(self.containers.get(service), "uptime_s", None)
                self._decide(machine.reset(now, started=None if up is None else now - up))
        self.maintenance, self.dirty = what, True

    def _check_cleared(self, now: float) -> None:
        if not self._due("cleared", now, 2.0):
            return
        found = ledger.load(self.settings.paths.state)
        if found is not None and found.cleared > self.cleared:
            self.cleared = found.cleared
            for machine in self.machines.values():
                if machine.state == "failed":
                    self._decide(machine.reset(now))

    # --- decisions ------------------------------------------------------------------------

    def _decide(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            self.dirty = True
            client = self.client or self._client()
            self.actions.decided(decision, self.machines[decision.service], client, self.clock)

    def _client(self) -> DockerClient | None:
        with contextlib.suppress(AgentError):
            self.client = self.connect()
        return self.client

    def save(self, force: bool = False) -> None:
        now, wall = self.clock(), self.wall()
        if not (force or self.dirty or now - self.last_saved >= self.periods.heartbeat):
            return
        records = {
            name: ledger.record(m, now, wall, self._failed_id(name, m))
            for name, m in self.machines.items()
        }
        state = ledger.WatchState(
            fingerprint=ledger.fingerprint(self.settings),
            updated=wall,
            pid=self.actions.pid,
            services=records,
            maintenance=self.maintenance,
            gpu=tuple(self.actions.gpu_notes),
            cleared=self.cleared,
        )
        with contextlib.suppress(OSError):
            ledger.save(self.settings.paths.state, state)
        self.last_saved, self.dirty = now, False

    # --- helpers --------------------------------------------------------------------------

    def _failed_id(self, service: str, machine: Machine) -> str | None:
        svc = self.containers.get(service)
        return svc.container_id if svc is not None and machine.state == "failed" else None

    def _due(self, key: str, now: float, period: float) -> bool:
        if now < self.due.get(key, 0.0):
            return False
        self.due[key] = now + period
        return True

    def _next_due(self, now: float) -> float:
        return min([now + self.periods.tick, *(t for t in self.due.values() if t > now)])

    def _safely(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - a check never raises into the loop
            what = f"{type(exc).__name__}: {exc}"
            self.actions.report.once(
                "loop", what, "watch_error", "error", f"a check failed: {what}"
            )


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Which version of a file is there (replaced by rename: a new inode), None when none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
