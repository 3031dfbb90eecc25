"""`sandbox-agent watch` while a change holds the maintenance lock (switch-model, update, up):
it stands back, says so, `status` shows the change, and once the lock is released it acts
again on a failure that went on meanwhile."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

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
