"""The loop between two reads of the containers around a restart of the Docker engine: a
restarted engine stops every container and starts the same ones again (Docker's restart
policy; the restart count unchanged, a new StartedAt), and its event stream ends."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from agent import engine, sd, settings
from agent.stack import ServiceStatus
from agent.watchdog.actions import Actions
from agent.watchdog.loop import Watch
from agent.watchdog.machine import Machine, Policy, Verdict
from agent.watchdog.report import Reporter
from agent.watchdog.stages import ApiKey

RUNNING = ServiceStatus(
    "vllm", "p-vllm-1", "running", "healthy", (), "img", 300.0, 0, "c0ffee", None, False,
    "2026-12-01T10:00:00.123456789Z",
)  # fmt: skip
AGAIN = dataclasses.replace(RUNNING, uptime_s=0.5, started_at="2026-12-01T10:05:00.5Z")


def healthy_watch(write_config, tmp_path: Path) -> Watch:
    s = settings.load(write_config({"project": "unit", "ui": {"enabled": False}}))
    nowhere = f"unix://{tmp_path}/no-engine.sock"  # nothing listens here: the engine is away
    w = Watch(
        s,
        connect=lambda: engine.connect(nowhere, timeout=1),
        api_key=ApiKey(None),
        actions=Actions(s, Reporter(), sd.Notifier.from_env({})),
        policy=Policy(),
    )
    w.machines["vllm"] = Machine.new("vllm", Policy(), 0.0)
    w.machines["vllm"].observe(1.0, Verdict(True))
    w.containers["vllm"] = RUNNING
    return w


def said(w: Watch) -> list[str]:
    return [e["event"] for e in w.actions.report.sent]


def test_the_same_container_started_again_by_a_restarted_engine_loads_under_the_grace(
    write_config, tmp_path: Path
) -> None:
    w = healthy_watch(write_config, tmp_path)
    machine, epoch = w.machines["vllm"], w.machines["vllm"].epoch
    stopped = dataclasses.replace(RUNNING, state="exited", uptime_s=None, exit_code=0)
    w._container_seen(machine, RUNNING, stopped, 10.0, first=False)  # the engine stops it
    assert said(w) == ["service_stopped"] and machine.state == "healthy"
    w._container_seen(machine, stopped, AGAIN, 20.0, first=False)  # and starts it again
    assert said(w) == ["service_stopped", "service_started"]
    assert w.actions.report.sent[-1]["was"] == "exited"
    assert machine.state == "starting" and machine.epoch == epoch + 1 and machine.started == 20
    assert machine.restarts_in_window(20.0) == 0  # no restart was counted


def test_a_new_run_seen_without_the_stop_in_between_is_a_new_run_too(
    write_config, tmp_path: Path
) -> None:
    w = healthy_watch(write_config, tmp_path)
    w._container_seen(w.machines["vllm"], RUNNING, AGAIN, 20.0, first=False)
    assert said(w) == ["service_started"] and w.machines["vllm"].state == "starting"


def test_our_own_restart_is_no_news(write_config, tmp_path: Path) -> None:
    w = healthy_watch(write_config, tmp_path)
    machine = w.machines["vllm"]
    w.actions._own["vllm"] = (time.time() - 1.5, time.time() - 0.2)  # as `_restart` marks it
    machine.observe(2.0, Verdict(False, "Docker's healthcheck reports unhealthy", sustained=True))
    machine.restarted(3.0)
    epoch = machine.epoch
    w._container_seen(machine, RUNNING, AGAIN, 3.2, first=False)
    assert "service_started" not in said(w) and machine.epoch == epoch


def test_a_new_run_with_a_higher_restart_count_is_a_crash_not_a_start(
    write_config, tmp_path: Path
) -> None:
    w = healthy_watch(write_config, tmp_path)
    crashed = dataclasses.replace(AGAIN, restart_count=1)
    w._container_seen(w.machines["vllm"], RUNNING, crashed, 20.0, first=False)
    assert said(w) == ["service_crashed"] and w.machines["vllm"].restarts_in_window(20) == 1


def test_every_outage_of_the_engine_is_said_even_when_worded_alike(
    write_config, tmp_path: Path, monkeypatch
) -> None:
    from agent.watchdog.signals import Connected, Disconnected

    w = healthy_watch(write_config, tmp_path)
    monkeypatch.setattr(w, "_read_containers", lambda now, first=False: None)  # no engine here
    for at in (1.0, 2.0):
        w._handle(Disconnected(at, "the event stream ended"))
        w._handle(Disconnected(at + 0.1, "the event stream ended"))  # the same outage: once
        w._handle(Connected(at + 0.5))
    assert said(w) == ["engine_disconnected", "engine_connected"] * 2


def test_a_watchdog_started_after_its_services_gives_no_new_grace(
    write_config, tmp_path: Path
) -> None:
    w = healthy_watch(write_config, tmp_path)
    policy = Policy(start_grace=100)
    loaded = Machine.new("vllm", policy, 1000.0)  # the watchdog itself just (re)started
    w._container_seen(loaded, None, RUNNING, 1000.0, first=True)  # up for 300 s already
    assert loaded.started == 700.0
    out = loaded.observe(1001.0, Verdict(False, "/health: timed out"))
    assert [d.action for d in out] == ["unhealthy", "restart"]
    fresh = Machine.new("vllm", policy, 1000.0)
    young = dataclasses.replace(RUNNING, uptime_s=20.0)  # still loading: the grace holds
    w._container_seen(fresh, None, young, 1000.0, first=True)
    assert fresh.observe(1001.0, Verdict(False, "/health: timed out")) == []
