"""`sandbox-agent watch`: the loop as a process. Under systemd (Type=notify) READY=1 once
the stack's state is read, WATCHDOG=1 from the loop, STATUS= one line, events as native
journal fields; outside systemd the same loop logs to the terminal (or JSON lines)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent import engine, systemd_client
from agent.errors import AgentError
from agent.results import Result
from agent.secrets import SecretStore
from agent.settings import Settings
from agent.watchdog.actions import Actions
from agent.watchdog.gpus import GpuWatch
from agent.watchdog.loop import Watch
from agent.watchdog.machine import Policy
from agent.watchdog.metrics import Metrics
from agent.watchdog.report import Reporter
from agent.watchdog.schedule import DEFAULT_PERIODS, Periods
from agent.watchdog.stages import ApiKey

if TYPE_CHECKING:
    from agent.engine import DockerClient


@dataclass(frozen=True)
class WatchResult(Result):
    project: str
    seconds: float
    status: str


def policy_of(settings: Settings) -> Policy:
    return Policy(start_grace=settings.start_grace, budget=settings.watch.restarts_per_hour)


def watch(
    settings: Settings,
    env: Mapping[str, str],
    *,
    root: Path = Path("/"),
    stop: threading.Event | None = None,
    periods: Periods = DEFAULT_PERIODS,
    reload: Callable[[], Settings] | None = None,
) -> WatchResult:
    """Watch the stack until SIGTERM/SIGINT (or `stop` is set).

    When `up` brings the stack to other settings (its own, or a change's: a new model, served
    name, door), the loop is built again on the settings `reload` reads then: it probes what
    now runs, and a failure under the old settings is forgotten (agent.watchdog.ledger)."""
    started = time.monotonic()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    notifier = systemd_client.Notifier.from_env(env)
    journal = systemd_client.Journal()
    native = journal.available and systemd_client.journal_stream_is_stderr(env)
    report = Reporter(journal if native else None)
    metrics = Metrics()
    if settings.watch.metrics_port:
        try:
            metrics.serve(settings.watch.metrics_port, settings.watch.metrics_bind)
        except OSError as exc:
            report.event(
                "metrics_unavailable",
                "error",
                f"cannot serve metrics on {settings.watch.metrics_bind}:"
                f"{settings.watch.metrics_port}: {exc.strerror}",
            )
    gpus = GpuWatch(root) if settings.gpus != "none" else None
    first = True
    try:
        while True:
            actions = Actions(
                settings,
                report,
                notifier,
                metrics=metrics,
                watchdog_every=systemd_client.watchdog_interval(env),
            )
            loop = Watch(
                settings,
                connect=_connector(settings),
                api_key=ApiKey(SecretStore(settings.paths.secrets)),  # read again when refused
                actions=actions,
                policy=policy_of(settings),
                periods=periods,
                gpus=gpus if settings.gpus != "none" else None,
            )
            try:
                loop.start()
                actions.alive(loop)
                if first:
                    notifier.notify("READY=1", f"STATUS={actions.status_line}")
                    report.event(
                        "watch_started",
                        "info",
                        f"watching {settings.project}: {actions.status_line}",
                        project=settings.project,
                        metrics_port=settings.watch.metrics_port or None,
                    )
                first, newer = False, None
                while not stop.is_set() and newer is None:
                    loop.step()
                    if loop.redeployed:
                        loop.redeployed = False
                        newer = _reloaded(reload, settings, report)
            finally:
                loop.close()
            if newer is None:
                break
            settings = newer
            if gpus is None and settings.gpus != "none":
                gpus = GpuWatch(root)
    finally:
        notifier.notify("STOPPING=1")
        metrics.close()
        if gpus is not None:
            gpus.close()
        report.event("watch_stopped", "info", "the watchdog stops")
    return WatchResult(settings.project, round(time.monotonic() - started, 1), actions.status_line)


def _connector(settings: Settings) -> Callable[[], DockerClient]:
    return lambda: engine.connect(settings.docker.host, timeout=10)


def _reloaded(
    reload: Callable[[], Settings] | None, settings: Settings, report: Reporter
) -> Settings | None:
    """The settings `up` just deployed, when they are not these; None otherwise (and when they
    cannot be read: the loop goes on with the ones it has, and says why)."""
    if reload is None:
        return None
    try:
        newer = reload()
    except AgentError as exc:
        report.event(
            "settings_unreadable",
            "error",
            f"the stack was redeployed, but its settings cannot be read: {exc}; "
            "watching with the ones from before",
        )
        return None
    if newer == settings:
        return None
    report.event(
        "settings_reloaded",
        "notice",
        "the stack was redeployed with other settings: watching those",
    )
    return newer
