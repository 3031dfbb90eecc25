"""The table of periodic probes per service (agent.watchdog.schedule): which probes a service
gets follows from its health stages' roles, never from its name, so the proxy (the front door)
is watched by its /health alone, like Open WebUI, and a new service needs no new branch."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import engine, probes, settings, stack, systemd_client
from agent.watchdog.actions import Actions
from agent.watchdog.loop import Watch
from agent.watchdog.machine import Policy
from agent.watchdog.report import Reporter
from agent.watchdog.schedule import DEFAULT_PERIODS, Periodic, Periods, needed, schedule
from agent.watchdog.signals import ProbeDone
from agent.watchdog.stages import ApiKey, stages

DOOR = {"project": "unit", "https": {"domain": "chat.example.com"}, "ui": {"bind": "0.0.0.0"}}


@pytest.fixture
def door_open(write_config) -> settings.Settings:
    return settings.load(write_config(DOOR))


def names(rows: tuple[Periodic, ...]) -> list[str]:
    return [row.name for row in rows]


def test_the_model_server_is_probed_closely_and_the_others_by_their_health(door_open) -> None:
    assert stack.wanted_services(door_open) == (stack.VLLM, stack.UI, stack.PROXY)
    rows = {
        s: schedule(stages(door_open, s, ApiKey(None))) for s in stack.wanted_services(door_open)
    }
    assert names(rows[stack.VLLM]) == ["health", "models", "load", "canary"]
    assert needed(rows[stack.VLLM]) == ("health", "models")
    for front in (stack.UI, stack.PROXY):
        assert rows[front] == (Periodic("health", DEFAULT_PERIODS.front, timeout=3.0, needed=True),)
        assert needed(rows[front]) == ("health",)


def test_the_periods_come_from_the_periods_given() -> None:
    p = Periods(health=1.0, models=7.0, load=2.0, canary=9.0, front=4.0)
    rows = {row.name: row for row in schedule(("health", "models", "canary"), p)}
    assert {name: row.every for name, row in rows.items()} == {
        "health": 1.0,
        "models": 1.0,  # quickly until the served name answered
        "load": 2.0,
        "canary": 9.0,
    }
    assert rows["models"].period(passed=True, state="healthy") == 7.0
    assert rows["models"].period(passed=True, state="suspect") == 1.0
    assert rows["models"].period(passed=False, state="healthy") == 1.0
    assert schedule(("health",), p)[0].every == 4.0
    assert schedule((), p) == ()  # no stage, no probe


@pytest.mark.parametrize(
    "name, state, idle, runs",
    [
        pytest.param("health", "starting", True, True, id="health while loading"),
        pytest.param("models", "starting", False, True, id="models while loading"),
        pytest.param("load", "starting", True, False, id="no load while loading"),
        pytest.param("canary", "starting", True, False, id="no completion while loading"),
        pytest.param("load", "suspect", False, True, id="load when busy"),
        pytest.param("canary", "healthy", True, True, id="completion when idle"),
        pytest.param("canary", "healthy", False, False, id="no completion when busy"),
    ],
)
def test_when_a_probe_runs_at_all(name: str, state: str, idle: bool, runs: bool) -> None:
    rows = {row.name: row for row in schedule(("health", "models", "canary"))}
    assert rows[name].runs(state=state, idle=idle) is runs


def test_a_healthy_proxy_health_makes_the_proxy_healthy(door_open, tmp_path: Path) -> None:
    nowhere = f"unix://{tmp_path}/no-engine.sock"  # nothing listens here: the engine is away
    w = Watch(
        door_open,
        connect=lambda: engine.connect(nowhere, timeout=1),
        api_key=ApiKey(None),
        actions=Actions(door_open, Reporter(), systemd_client.Notifier.from_env({})),
        policy=Policy(),
    )
    w.start()
    try:
        running = stack.ServiceStatus(
            service=stack.PROXY,
            container="unit-proxy-1",
            state="running",
            health="healthy",
            ports=(),
            image="caddy",
            uptime_s=5.0,
        )
        w.containers[stack.PROXY] = running
        machine = w.machines[stack.PROXY]
        ok = probes.Probe("proxy.health", True, 200, "ok", 0.01)
        w.news.put(ProbeDone(stack.PROXY, "health", machine.epoch, ok, w.clock()))
        w.step()
        assert machine.state == "healthy"
        events = [e["event"] for e in w.actions.report.sent]
        assert "watch_error" not in events and "service_healthy" in events, events
    finally:
        w.close()
