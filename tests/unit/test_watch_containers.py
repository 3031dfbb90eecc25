"""What the engine's facts and events about a container mean for its service's machine
(agent.watchdog.containers): a restarted engine starts the same container again (its restart
count unchanged, a new StartedAt), Docker's policy restarts a crashed one, `up` re-creates one,
and our own restarts are no news."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from agent.stack import ServiceStatus, StackEvent
from agent.watchdog.containers import (
    UNHEALTHY,
    Heard,
    OwnWindow,
    Reading,
    read_container,
    read_event,
)
from agent.watchdog.machine import Machine, Policy, Verdict

WALL = 1_800_000_000.0
RUNNING = ServiceStatus(
    service="vllm",
    container="p-vllm-1",
    state="running",
    health="healthy",
    ports=(),
    image="img",
    uptime_s=300.0,
    restart_count=0,
    container_id="c0ffee",
    started_at="2026-12-01T10:00:00.123456789Z",
)
AGAIN = dataclasses.replace(RUNNING, uptime_s=0.5, started_at="2026-12-01T10:05:00.5Z")
STOPPED = dataclasses.replace(RUNNING, state="exited", uptime_s=None, exit_code=0)


def read(old: ServiceStatus | None, new: ServiceStatus, **over: Any) -> Reading:
    """A watchdog that runs (not its first look), no change standing in, nothing of ours."""
    facts = {"failed": False, "first": False, "maintenance": False, "now": 20.0, "wall": WALL}
    return read_container(old, new, **{**facts, "ours": None, **over})


def test_the_same_container_started_again_by_a_restarted_engine_is_a_new_run() -> None:
    assert read(RUNNING, STOPPED) == Reading(change="stopped")  # the engine stops it
    again = read(STOPPED, AGAIN)  # and starts it again: loads under the grace, no restart
    assert again == Reading(change="started_again", was="exited")


def test_a_new_run_seen_without_the_stop_in_between_is_a_new_run_too() -> None:
    assert read(RUNNING, AGAIN) == Reading(change="started_again", was="running")


@pytest.mark.parametrize(
    "ours, change",
    [
        pytest.param(OwnWindow(start=WALL - 1.5, end=WALL - 0.2), "none", id="our restart"),
        pytest.param(OwnWindow(start=WALL - 4.0, end=WALL - 1.4), "none", id="within a second"),
        pytest.param(OwnWindow(start=WALL - 9.0, end=WALL - 3.0), "started_again", id="older"),
        pytest.param(None, "started_again", id="never ours"),
    ],
)
def test_our_own_restart_is_no_news(ours: OwnWindow | None, change: str) -> None:
    # AGAIN began half a second before WALL; StartedAt is read to the second
    assert read(RUNNING, AGAIN, ours=ours).change == change


def test_a_new_run_with_a_higher_restart_count_is_a_crash_not_a_start() -> None:
    crashed = dataclasses.replace(AGAIN, restart_count=2)
    assert read(RUNNING, crashed) == Reading(change="crashed", crashes=2)


def test_a_new_container_is_a_new_start() -> None:
    recreated = dataclasses.replace(AGAIN, container_id="beef")
    assert read(RUNNING, recreated).change == "reset"


def test_while_a_change_stands_in_a_new_container_is_no_news() -> None:
    recreated = dataclasses.replace(AGAIN, container_id="beef", restart_count=1)
    assert read(RUNNING, recreated, maintenance=True) == Reading()


@pytest.mark.parametrize(
    "old, new, first, change",
    [
        pytest.param(STOPPED, AGAIN, False, "reset", id="started by up"),
        pytest.param(None, AGAIN, False, "reset", id="first seen running"),
        pytest.param(None, RUNNING, True, "none", id="the watchdog's first look"),
        pytest.param(RUNNING, AGAIN, False, "none", id="still running"),
        pytest.param(RUNNING, STOPPED, False, "none", id="stopped: said once, when it failed"),
    ],
)
def test_a_failed_service_running_again_is_cleared(
    old: ServiceStatus | None, new: ServiceStatus, first: bool, change: str
) -> None:
    seen = read(old, new, failed=True, first=first)
    assert seen.change == change and seen.running_since is None


def test_a_watchdog_started_after_its_services_gives_no_new_grace() -> None:
    seen = read(None, RUNNING, first=True, now=1000.0)  # up for 300 s already
    assert seen == Reading(running_since=700.0)
    policy = Policy(start_grace=100)
    loaded = Machine.new("vllm", policy, 1000.0)  # the watchdog itself just (re)started
    loaded.running_since(seen.running_since or 0.0)
    out = loaded.observe(1001.0, Verdict(False, "/health: timed out"))
    assert [d.action for d in out] == ["unhealthy", "restart"]
    young = read(None, dataclasses.replace(RUNNING, uptime_s=20.0), first=True, now=1000.0)
    fresh = Machine.new("vllm", policy, 1000.0)
    fresh.running_since(young.running_since or 0.0)  # still loading: the grace holds
    assert fresh.observe(1001.0, Verdict(False, "/health: timed out")) == []


def event(action: str, at: float = WALL, **attributes: str) -> StackEvent:
    return StackEvent(
        action=action, service="vllm", container_id="c0ffee", attributes=attributes, time=at
    )


@pytest.mark.parametrize(
    "news, heard",
    [
        pytest.param(event("oom"), Heard(oom=True), id="oom"),
        pytest.param(event("die", exitCode="137"), Heard(died=True, reread=0.5), id="crash"),
        pytest.param(event("die", exitCode="0"), Heard(reread=0.5), id="stopped on purpose"),
        pytest.param(
            event("health_status: unhealthy"),
            Heard(verdict=Verdict(False, UNHEALTHY, sustained=True)),
            id="docker's healthcheck",
        ),
        pytest.param(event("health_status: healthy"), Heard(), id="healthy: no news"),
        pytest.param(event("start"), Heard(reread=0.2), id="start"),
        pytest.param(event("exec_start: sh"), Heard(), id="other"),
    ],
)
def test_what_an_engine_event_means(news: StackEvent, heard: Heard) -> None:
    assert read_event(news, ours=None) == heard


def test_events_of_our_own_restart_are_no_news() -> None:
    ours = OwnWindow(start=WALL - 2.0, end=WALL + 0.5)
    assert read_event(event("die", exitCode="143"), ours=ours) == Heard()
    later = event("die", at=WALL + 0.6, exitCode="143")
    assert read_event(later, ours=ours) == Heard(died=True, reread=0.5)


def offline_watch(write_config: Any, tmp_path: Any) -> Any:
    """A watch loop on real settings whose engine is away (the events come from the test)."""
    from agent import engine, settings, systemd_client
    from agent.watchdog.actions import Actions
    from agent.watchdog.loop import Watch
    from agent.watchdog.report import Reporter
    from agent.watchdog.stages import ApiKey

    s = settings.load(write_config({"project": "unit"}))
    nowhere = f"unix://{tmp_path}/no-engine.sock"  # nothing listens here
    return Watch(
        s,
        connect=lambda: engine.connect(nowhere, timeout=1),
        api_key=ApiKey(None),
        actions=Actions(s, Reporter(), systemd_client.Notifier.from_env({})),
        policy=Policy(),
    )


def crashes(w: Any) -> list[dict[str, Any]]:
    return [e for e in w.actions.report.sent if e["event"] == "service_crashed"]


@pytest.mark.parametrize("order", [("oom", "die"), ("die", "oom")], ids=["oom first", "die first"])
def test_a_kill_by_the_oom_killer_is_said_as_oom_whichever_event_comes_first(
    order: tuple[str, str], write_config: Any, tmp_path: Any
) -> None:
    """containerd reports the OOM and the exit apart: under load the `die` can come first."""
    w = offline_watch(write_config, tmp_path)
    w.start()
    try:
        for action in order:
            code = {"exitCode": "137"} if action == "die" else {}
            w.news.put(event(action, at=w.wall(), **code))
        w.step()
        assert [(e["reason"], e["oom"]) for e in crashes(w)] == [("oom", 1)]
    finally:
        w.close()


def test_a_kill_with_no_oom_event_is_said_as_an_exit_at_the_next_read(
    write_config: Any, tmp_path: Any
) -> None:
    w = offline_watch(write_config, tmp_path)
    w.start()
    try:
        w.news.put(event("die", at=w.wall(), exitCode="137"))
        w.step()
        assert crashes(w) == []  # its oom event may still come
        w._read_containers(w.clock())  # the reread the die asked for (0.5 s later)
        assert [(e["reason"], e["exit_code"]) for e in crashes(w)] == [("exit", "137")]
    finally:
        w.close()
