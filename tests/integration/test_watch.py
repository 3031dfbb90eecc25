"""`sandbox-agent watch` on the real engine with stand-ins that hang, get stuck, stay busy,
crash in a loop, get OOM-killed, and lose the engine for a while."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack_support import http
from tests.integration.watch_support import (
    EngineLink,
    Stack,
    Watcher,
    fast_healthcheck_template,
    stamp,
)

pytestmark = pytest.mark.docker


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[Any]:
    made: list[Stack] = []

    def make(**kw: Any) -> Stack:
        made.append(Stack(tmp_path / f"stack{len(made)}", **kw))
        return made[-1]

    yield make
    for st in made:
        st.remove()


@pytest.fixture
def watchers() -> Iterator[Any]:
    made: list[Watcher] = []

    def start(config: Path, env: dict[str, str] | None = None) -> Watcher:
        made.append(Watcher(config, env))
        return made[-1]

    yield start
    for w in made:
        w.stop()


def healthy_after(w: Watcher, when: float, timeout: float = 30, service: str = "vllm") -> Any:
    return w.wait_for("service_healthy", timeout, service=service, where=lambda e: stamp(e) > when)


def test_a_vllm_hung_with_its_port_open_is_restarted_within_15s(stacks: Any, watchers: Any) -> None:
    st = stacks()
    w = watchers(st.config)
    healthy_after(w, 0)
    before = st.container().id
    hung = time.time()
    st.container().kill(signal="SIGSTOP")  # the port stays open; nothing answers
    ev = w.wait_for("service_restarted", 20, service="vllm")
    assert stamp(ev) - hung < 15, w.dump()
    # /health and /v1/models both time out now; whichever was in flight at the SIGSTOP
    # may be the one the verdict names first
    assert ev["attempt"] == 1 and "timed out" in ev["reason"], ev
    assert ev["reason"].startswith(("/health:", "/v1/models:")), ev
    healthy_after(w, stamp(ev), 20)
    time.sleep(3)
    assert len(w.named("service_restarted")) == 1
    assert w.named("service_started") == [], w.dump()  # our own restart is no news
    assert st.container().id == before  # restarted, not re-created
    assert http(f"{st.api}/health")[0] == 200


def test_the_api_key_is_read_again_when_missing_at_start_and_when_up_makes_a_new_one(
    stacks: Any, watchers: Any
) -> None:
    st = stacks()
    keyfile = st.folder / "secrets" / "api_key"
    first = keyfile.read_text()
    keyfile.unlink()  # as before the first `up`: watch starts with no key to send
    w = watchers(st.config)
    w.wait_for("watch_started", 30)
    time.sleep(4)  # /v1/models is refused meanwhile (401): vLLM cannot be healthy yet
    assert w.named("service_healthy", service="vllm") == []
    keyfile.write_text(first)
    keyfile.chmod(0o600)
    healthy_after(w, 0, 20)
    keyfile.unlink()
    changed = time.time()
    st.up()  # a new key, and vLLM re-created with it
    assert st.key() != first.strip()
    healthy_after(w, changed, 20)  # the new container, probed with the new key
    time.sleep(3)
    assert w.named("service_restarted") == [] and w.named("service_unhealthy") == [], w.dump()
    assert w.named("service_suspect") == [], w.dump()


def test_an_engine_stuck_while_health_answers_is_restarted_within_60s(
    stacks: Any, watchers: Any
) -> None:
    st = stacks()
    w = watchers(st.config)
    healthy_after(w, 0)
    st.mode(hang="engine")
    hung = time.time()
    assert http(f"{st.api}/health")[0] == 200  # vllm #39863: /health cannot see it
    ev = w.wait_for("service_restarted", 60, service="vllm")
    assert stamp(ev) - hung < 60, w.dump()
    assert "no token generated" in ev["reason"] or "1-token completion" in ev["reason"]
    healthy_after(w, stamp(ev), 20)
    assert st.mode()[1]["hang"] is False  # a new engine


def test_a_busy_engine_with_16_slow_requests_for_a_minute_is_never_restarted(
    stacks: Any, watchers: Any
) -> None:
    st = stacks()
    w = watchers(st.config)
    healthy_after(w, 0)
    st.mode(token_seconds=0.4)
    results: list[tuple[int, float]] = []
    until = time.monotonic() + 60

    def client() -> None:
        while time.monotonic() < until:
            results.append(st.chat(words=10))

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) >= 32 and all(code == 200 for code, _ in results)
    assert min(seconds for _, seconds in results) > 4  # slow: every answer took its time
    for name in ("service_restarted", "service_unhealthy", "service_suspect"):
        assert w.named(name) == [], w.dump()
    assert st.mode()[1]["tokens"] > 16 * 60 / 0.4 * 0.8  # and the tokens flowed


def test_dockers_unhealthy_event_restarts_vllm_within_a_second(
    tmp_path: Path, stacks: Any, watchers: Any
) -> None:
    st = stacks(template=fast_healthcheck_template(tmp_path))
    w = watchers(st.config)
    healthy_after(w, 0)
    since = time.time()
    st.mark_unhealthy()  # our probes still see it healthy
    ev = w.wait_for("service_restarted", 20, service="vllm")
    assert ev["reason"] == "Docker's healthcheck reports unhealthy"
    unhealthy, started = _engine_events(st, since)
    assert started - unhealthy < 1.0, (unhealthy, started)


def _engine_events(st: Stack, since: float) -> tuple[float, float]:
    """When Docker said `unhealthy`, and when the container started again after it."""
    raw = st.client.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        decode=True,
        filters={"container": st.container().id, "event": ["health_status", "start"]},
    )
    unhealthy = started = None
    for e in raw:
        t = e["timeNano"] / 1e9
        if e["Action"] == "health_status: unhealthy" and unhealthy is None and t >= since:
            unhealthy = t
        elif e["Action"] == "start" and unhealthy is not None and started is None:
            started = t
    assert unhealthy is not None and started is not None
    return unhealthy, started


def test_a_crash_loop_stops_at_the_budget_is_failed_in_status_and_up_clears_it(
    stacks: Any, watchers: Any
) -> None:
    st = stacks(watch={"restarts_per_hour": 3})
    w = watchers(st.config)
    healthy_after(w, 0)
    knobs = st.snapshot / "standin.json"
    knobs.write_text(json.dumps({"crash_after": 0.5}))  # every start crashes
    st.mode(crash=True)
    ev = w.wait_for("service_failed", 60, service="vllm")
    assert ev["level"] == "critical"
    assert "3 restarts in an hour" in ev["reason"]
    assert ev["fix"] == "see `sandbox-agent logs vllm`, fix the cause, then run `sandbox-agent up`"
    container = st.container()
    count = container.attrs["RestartCount"]
    time.sleep(4)
    container.reload()
    assert container.status == "exited" and container.attrs["RestartCount"] == count
    assert len(w.named("service_failed")) == 1 and len(w.named("service_crashed")) >= 3
    shown = st.run("status", "--json")
    assert json.loads(shown.stdout)["watchdog"]["services"]["vllm"]["state"] == "failed"
    text = st.run("status").stdout
    assert "vllm: FAILED" in text and "then run `sandbox-agent up`" in text
    assert "vllm FAILED" in (st.folder / "motd").read_text()

    knobs.unlink()
    cleared = time.time()
    st.up()
    w.wait_for("service_cleared", 20, service="vllm")
    healthy_after(w, cleared, 30)
    shown = json.loads(st.run("status", "--json").stdout)
    assert shown["watchdog"]["services"]["vllm"]["state"] != "failed"
    assert not (st.folder / "motd").exists()


def test_an_oom_killed_vllm_is_reported_and_comes_back(stacks: Any, watchers: Any) -> None:
    st = stacks()
    w = watchers(st.config)
    healthy_after(w, 0)
    st.container().update(mem_limit="64m", memswap_limit="64m")
    with contextlib.suppress(OSError):  # the kernel kills it mid-answer
        st.mode(allocate_mb=256)
    ev = w.wait_for("service_crashed", 30, service="vllm")
    assert ev["reason"] == "oom" and ev["oom"] == 1, ev
    healthy_after(w, stamp(ev), 30)
    assert w.named("service_failed") == []


def test_events_missed_while_the_engine_was_away_are_caught_on_reconnect(
    tmp_path: Path, stacks: Any, watchers: Any
) -> None:
    st = stacks()
    link = EngineLink(tmp_path / "docker.sock")
    try:
        w = watchers(st.config, {"DOCKER_HOST": link.url})
        healthy_after(w, 0)
        link.cut()
        w.wait_for("engine_disconnected", 10)
        st.mode(crash=True)  # Docker restarts it; its die event reaches nobody
        container = st.container()
        deadline = time.monotonic() + 15
        while container.attrs["RestartCount"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
            container.reload()
        assert w.named("service_crashed") == []
        link.restore()
        ev = w.wait_for("service_crashed", 30, service="vllm")
        assert "seen in its restart count" in ev["message"]
        # the stream reads again: the next exit arrives as an event, with its exit code
        healthy_after(w, stamp(ev), 30)
        st.mode(crash=3)
        again = w.wait_for("service_crashed", 20, where=lambda e: e.get("exit_code") == "3")
        assert again["reason"] == "exit"
    finally:
        link.close()


def test_a_gpu_fallen_off_the_bus_fails_vllm_with_its_fix_and_is_not_looped(
    tmp_path: Path, stacks: Any, watchers: Any, fake_nvml_dir: Path
) -> None:
    from tests.fakes import nvml

    st = stacks()
    root = tmp_path / "root"
    nvml.add_pci_device(root)
    xids = tmp_path / "xids"
    xids.write_text("")
    scenario = nvml.Scenario((nvml.FakeGpu(util=50, power_mw=300_000),)).write(tmp_path / "sc")
    env = nvml.fake_env(fake_nvml_dir, scenario, xids=xids)
    w = watchers(st.config, {**env, "GPUS": "auto", "SANDBOX_AGENT_ROOT": str(root)})
    healthy_after(w, 0)
    assert w.wait_for("gpu_events", 30)["message"] == "XID events: watching"
    xids.write_text("0 79\n")
    xid = w.wait_for("gpu_xid", 30)
    assert (xid["level"], xid["xid"], xid["gpu"]) == ("critical", 79, 0)
    failed = w.wait_for("service_failed", 10, service="vllm")
    assert failed["reason"] == "GPU 0 reported XID 79 (reboot)"
    assert failed["fix"] == "the GPU fell off the bus: reboot the box (`sudo reboot`)"
    time.sleep(2)
    assert st.container().status == "running" and w.named("service_restarted") == []
    with urllib.request.urlopen(st.metrics, timeout=5) as resp:
        metrics = resp.read().decode()
    assert (
        'sandbox_agent_gpu_xid_events_total{gpu="0",uuid="GPU-00000000-0000-0000-0000-000000000000",xid="79"} 1.0'
        in metrics
    )
    assert 'sandbox_agent_service_state{service="vllm",state="failed"} 1.0' in metrics
    assert (
        'sandbox_agent_gpu_power_watts{gpu="0",uuid="GPU-00000000-0000-0000-0000-000000000000"} 300.0'
        in metrics
    )


def test_every_outage_of_the_engine_is_said_even_when_worded_alike(write_config) -> None:
    """The loop in this process on the real engine: the stream's end reads alike each time,
    and each outage is said once, however often the feed reports it."""
    from agent import engine, settings, systemd_client
    from agent.watchdog.actions import Actions
    from agent.watchdog.loop import Watch
    from agent.watchdog.machine import Policy
    from agent.watchdog.report import Reporter
    from agent.watchdog.signals import Connected, Disconnected
    from agent.watchdog.stages import ApiKey
    from tests.integration.stack_support import project_name

    s = settings.load(write_config({"project": project_name("wd"), "ui": {"enabled": False}}))
    w = Watch(
        s,
        connect=lambda: engine.connect(s.docker.host, timeout=10),
        api_key=ApiKey(None),
        actions=Actions(s, Reporter(), systemd_client.Notifier.from_env({})),
        policy=Policy(),
    )
    try:
        for at in (1.0, 2.0):
            w.news.put(Disconnected(at, "the event stream ended"))
            w.news.put(Disconnected(at + 0.1, "the event stream ended"))  # the same outage
            w.news.put(Connected(at + 0.5))  # the containers are read again: no word of it
            w.step()
    finally:
        w.close()
    said = [e["event"] for e in w.actions.report.sent]
    assert said == ["engine_disconnected", "engine_connected"] * 2, w.actions.report.sent
