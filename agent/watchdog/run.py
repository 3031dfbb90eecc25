"""`sandbox-agent watch`: the loop as a process. Under systemd (Type=notify) READY=1 once
the stack's state is read, WATCHDOG=1 from the loop, STATUS= one line, events as native
journal fields; outside systemd the same loop logs to the terminal (or JSON lines)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent import engine, systemd_client
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
) -> WatchResult:
    """Watch the stack until SIGTERM/SIGINT (or `stop` is set)."""
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
    actions = Actions(
        settings,
        report,
        notifier,
        metrics=metrics,
        watchdog_every=systemd_client.watchdog_interval(env),
    )
    gpus = GpuWatch(root) if settings.gpus != "none" else None
    loop = Watch(
        settings,
        connect=lambda: engine.connect(settings.docker.host, timeout=10),
        api_key=ApiKey(SecretStore(settings.paths.secrets)),  # read again when refused
        actions=actions,
        policy=policy_of(settings),
        periods=periods,
        gpus=gpus,
    )
    try:
        loop.start()
        actions.alive(loop)
        notifier.notify("READY=1", f"STATUS={actions.status_line}")
        report.event(
            "watch_started",
            "info",
            f"watching {settings.project}: {actions.status_line}",
            project=settings.project,
            metrics_port=settings.watch.metrics_port or None,
        )
        while not stop.is_set():
            loop.step()
    finally:
        notifier.notify("STOPPING=1")
        loop.close()
        metrics.close()
        if gpus is not None:
            gpus.close()
        report.event("watch_stopped", "info", "the watchdog stops")
    return WatchResult(settings.project, round(time.monotonic() - started, 1), actions.status_line)
