"""`sandbox-agent watch` while a change holds the maintenance lock (switch-model, update, up):
it stands back, says so, `status` shows the change, and once the lock is released it acts
again on a failure that went on meanwhile."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from agent import maintenance
from tests.integration.watch_support import Stack, Watcher, stamp

pytestmark = pytest.mark.docker
GRACE = 10  # watch.start_grace: short, so the test sees where the grace runs from


def status(st: Stack) -> dict:
    ran = st.run("status", "--json")
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def test_a_held_lock_keeps_the_watchdog_away_and_it_acts_again_once_released(
    tmp_path: Path,
) -> None:
    st = Stack(tmp_path / "stack", watch={"start_grace": GRACE})
    w = Watcher(st.config)
    try:
        w.wait_for("service_healthy", 30, service="vllm")
        container = st.container()
        with maintenance.hold(st.folder / "state", "switch-model acme/x"):
            started = w.wait_for("maintenance_started", 10)
            assert started["what"] == "switch-model acme/x", started
            st.mode(health="fail")  # vLLM's /health answers 503 from now on
            failing = time.monotonic()
            # status names the change from the lock itself, and the watchdog's view of it
            deadline = time.monotonic() + 10
            while (shown := status(st))["watchdog"]["maintenance"] is None:
                assert time.monotonic() < deadline, shown
                time.sleep(0.3)
            assert shown["watchdog"]["maintenance"] == "switch-model acme/x"
            assert shown["maintenance"].startswith(f"switch-model acme/x (pid {os.getpid()}, ")
            text = st.run("status").stdout
            assert f"change running: switch-model acme/x (pid {os.getpid()}, since " in text
            assert "; maintenance: switch-model acme/x" in text
            # long past a sustained failure (3 s) and past the container's start grace
            while time.monotonic() - failing < 8 or _uptime(st) <= GRACE + 1:
                time.sleep(0.5)
            for name in ("service_suspect", "service_unhealthy", "service_restarted"):
                assert w.named(name) == [], w.dump()  # nothing judged, nothing restarted
            now = st.container()
            assert now.id == container.id
            assert now.attrs["State"]["StartedAt"] == container.attrs["State"]["StartedAt"]
        ended = w.wait_for("maintenance_ended", 10)
        assert stamp(ended) > stamp(started)
        restarted = w.wait_for("service_restarted", 20, service="vllm")
        # its container ran long before the change ended: judged at once, not given a new grace
        assert stamp(restarted) - stamp(ended) < GRACE - 4, w.dump()
        assert "/health" in restarted["reason"] and restarted["attempt"] == 1, restarted
        w.wait_for("service_healthy", 30, service="vllm", where=lambda e: stamp(e) > stamp(ended))
        assert st.container().id == container.id  # restarted in place, Compose's labels kept
        shown = status(st)
        assert shown["maintenance"] is None and shown["watchdog"]["maintenance"] is None
        assert "change running" not in st.run("status").stdout
    finally:
        w.stop()
        st.remove()


def _uptime(st: Stack) -> float:
    from agent.stack.observe import uptime

    return uptime(st.container().attrs["State"]["StartedAt"]) or 0.0


def test_a_change_killed_half_done_is_shown_everywhere_and_the_watchdog_leaves_it_alone(
    tmp_path: Path,
) -> None:
    """The journal of a switch-model killed after its save (nobody holds the lock): the
    watchdog reports it once with its fix, puts it on the login message and restarts nothing;
    `status` and doctor say it with the fix; `up` repairs it and the watchdog acts again."""
    st = Stack(tmp_path / "stack", watch={"start_grace": GRACE})
    w = Watcher(st.config)
    try:
        w.wait_for("service_healthy", 30, service="vllm")
        container = st.container()
        before = st.config.read_text()
        journal = maintenance.journal(st.folder / "state")
        journal.write("switch-model", "starting", st.config, before)  # as kill -9 leaves it
        said = w.wait_for("change_interrupted", 10)
        assert said["level"] == "error" and said["kind"] == "switch-model", said
        assert said["fix"].startswith("run `sandbox-agent up`: it puts the settings from before")
        motd = Path(st.folder / "motd").read_text()
        assert "CHANGE HALF DONE: an interrupted switch-model left the settings half changed" in (
            motd
        )
        assert "    fix: run `sandbox-agent up`" in motd
        st.mode(health="fail")
        failing = time.monotonic()
        shown = status(st)
        assert shown["maintenance"] is None  # nobody runs it: it is half done, not running
        assert shown["pending_change"]["fix"] == said["fix"]
        text = st.run("status").stdout
        assert "CHANGE HALF DONE: an interrupted switch-model left the settings half changed: " in (
            text
        )
        assert f"{st.config} may name what did not come up" in text
        assert (
            "  fix: run `sandbox-agent up`: it puts the settings from before the switch-model"
            in (text)
        )
        doctor = st.run("doctor", "--json")
        checks = {c["id"]: c for c in json.loads(doctor.stdout)["checks"]}
        assert doctor.returncode == 1 and checks["stack.change"]["status"] == "fail"
        assert checks["stack.change"]["fix"] == said["fix"]
        while time.monotonic() - failing < 8 or _uptime(st) <= GRACE + 1:
            time.sleep(0.5)
        for name in ("service_suspect", "service_unhealthy", "service_restarted"):
            assert w.named(name) == [], w.dump()  # the services are left alone
        assert st.container().id == container.id
        assert len(w.named("change_interrupted")) == 1  # said once, not every 2 s
        st.mode(health="ok")
        repaired = st.run("up")
        assert repaired.returncode == 0, repaired.stderr[-2000:]
        assert "an interrupted switch-model is repaired first" in repaired.stdout
        w.wait_for("maintenance_ended", 30)
        assert not (st.folder / "motd").exists()  # nothing left to say at login
        assert status(st)["pending_change"] is None and st.config.read_text() == before
        checks = {c["id"]: c for c in json.loads(st.run("doctor", "--json").stdout)["checks"]}
        assert checks["stack.change"]["status"] == "ok"
    finally:
        w.stop()
        st.remove()


def test_after_up_brings_other_settings_the_watchdog_watches_what_runs_now(
    tmp_path: Path,
) -> None:
    """`up` serves the model under another name: the watchdog started on the old settings
    reads the new ones and probes the name now served, so it restarts nothing (on the old
    view, the served-name probe fails and vLLM is restarted after its start grace)."""
    st = Stack(tmp_path / "stack", watch={"start_grace": GRACE})
    w = Watcher(st.config)
    try:
        w.wait_for("service_healthy", 30, service="vllm")
        data = yaml.safe_load(st.config.read_text())
        data["model"]["served_name"] = "renamed"
        st.config.write_text(yaml.safe_dump(data))
        st.up()  # vLLM recreated with --served-model-name renamed
        reloaded = w.wait_for("settings_reloaded", 20)
        w.wait_for("service_healthy", 30, where=lambda e: stamp(e) > stamp(reloaded))
        time.sleep(GRACE + 6)  # past the new container's grace: the old view would restart it
        for name in ("service_unhealthy", "service_restarted"):
            assert w.named(name) == [], w.dump()
        assert w.proc.poll() is None
    finally:
        w.stop()
        st.remove()
