"""`sandbox-agent watch` while a real Docker daemon restarts: a private dockerd of this module's
own (tests/integration/dockerd_support.py), stopped with SIGTERM and started again with the
same flags, the way `systemctl restart docker` (or an upgrade of docker.io) does it.

What a daemon restart does to the stack here (Docker 20.10, no live-restore): stopping the
daemon stops every container (SIGTERM, the stand-ins exit 0) and ends the event stream;
starting it again starts the same containers again (restart: unless-stopped) with the same id,
the restart count unchanged and a new StartedAt. So the watchdog must see a new run of each
service (a real vLLM loads its model again: under the start grace, never "unhealthy"), not a
crash, and nothing to restart itself.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dockerd_support import PrivateEngine
from tests.integration.stack_support import docker_client, http, standin_images
from tests.integration.watch_support import Stack, Watcher, stamp

pytestmark = pytest.mark.docker

LOAD_SECONDS = 12  # vLLM's next start loads this long, as a real one loads its weights
SERVICES = ("vllm", "open-webui")
# The event feed tries again 0.5 s after the stream ends, then waits 1, 2, 4, 8 s... between
# tries (agent/watchdog/signals.py): 0.5, 1.5, 3.5, 7.5, 15.5 s after. A daemon back 1 s after
# the try at 7.5 s leaves the watch away for about 6 s more: a crash in that window is one the
# event stream never tells, and vLLM is still loading when the watch comes back.
BACK_AFTER = 7.5 + 1.0


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateEngine]:
    eng = PrivateEngine(tmp_path_factory.mktemp("dockerd"))
    main_bridge = Path("/sys/class/net/docker0")
    had_docker0 = main_bridge.exists()
    try:
        eng.start()
        eng.load(standin_images(), docker_client())
        yield eng
    finally:
        forced = eng.close()
    assert forced == [], f"the private dockerd left these behind (now cleaned up): {forced}"
    # the main engine's bridge is not the private daemon's to touch
    assert main_bridge.exists() or not had_docker0, "the private dockerd removed docker0"


def after(t: float) -> Any:
    return lambda e: stamp(e) > t


def test_a_docker_daemon_restart_is_a_new_run_of_each_service_and_a_crash_right_after_is_seen(
    engine: PrivateEngine, tmp_path: Path
) -> None:
    st = Stack(tmp_path / "stack", docker_host=engine.url)
    w = Watcher(st.config, {"DOCKER_HOST": engine.url})
    try:
        for service in SERVICES:
            w.wait_for("service_healthy", 30, service=service)
        before = {s: st.container(s).attrs for s in SERVICES}
        (st.snapshot / "standin.json").write_text(json.dumps({"load_seconds": LOAD_SECONDS}))

        stopped = time.time()
        engine.stop()
        gone = w.wait_for("engine_disconnected", 10, where=after(stopped))
        time.sleep(max(0.0, stamp(gone) + BACK_AFTER - time.time()))
        engine.start()
        back = time.time()
        # Open WebUI crashes right after the restart, while the watch is still away
        _answers(f"{st.ui}/health", 15)
        assert http(f"{st.ui}/_standin/mode", body={"crash": True})[0] == 200

        connected = w.wait_for("engine_connected", 20, where=after(stopped))
        crash = w.wait_for("service_crashed", 20, service="open-webui", where=after(back))
        started = w.wait_for("service_started", 5, service="vllm", where=after(back))
        healthy = w.wait_for("service_healthy", 30, service="vllm", where=after(back))
        w.wait_for("service_healthy", 30, service="open-webui", where=after(stamp(crash)))
        time.sleep(1)  # anything the watch would do next, it does now

        # what the daemon restart did to the containers: the same ones, each in a new run
        now = {s: st.container(s).attrs for s in SERVICES}
        for s in SERVICES:
            assert now[s]["Id"] == before[s]["Id"] and now[s]["State"]["Status"] == "running"
            assert now[s]["State"]["StartedAt"] > before[s]["State"]["StartedAt"]
        assert now["vllm"]["RestartCount"] == before["vllm"]["RestartCount"] == 0
        assert now["open-webui"]["RestartCount"] == 1  # the crash, by Docker's restart policy

        # the watch saw the restart: away, back, the state read again
        assert stamp(connected) > back and connected["message"] == "reading Docker's events"
        # the daemon's stop is seen only if the re-read after the die events beat its exit
        seen_stopped = [e for e in w.named("service_stopped", service="vllm") if stamp(e) > stopped]
        assert started["was"] == ("exited" if seen_stopped else "running"), w.dump()
        # vLLM loaded again under the start grace and was healthy once it really answered
        assert healthy["was"] == "starting"
        loaded = _seconds(now["vllm"]["State"]["StartedAt"]) + LOAD_SECONDS
        assert stamp(healthy) >= loaded, (loaded, healthy)
        # the crash while it was away is caught from the restart count, and said once
        crashed_at = _seconds(now["open-webui"]["State"]["FinishedAt"])
        assert crashed_at < stamp(connected), (crashed_at, connected, w.dump())
        assert crash["message"] == "open-webui exited (seen in its restart count)", crash
        assert [e["service"] for e in w.named("service_crashed")] == ["open-webui"], w.dump()
        # and nothing needless: the daemon's own stop is no crash, a loading vLLM no failure
        for name in ("service_restarted", "service_suspect", "service_unhealthy", "service_failed"):
            assert w.named(name) == [], w.dump()
        shown = json.loads(st.run("status", "--json").stdout)["watchdog"]["services"]
        assert {s: shown[s]["state"] for s in SERVICES} == dict.fromkeys(SERVICES, "healthy")
    finally:
        w.stop()
        if engine.running:
            st.remove()


def _answers(url: str, timeout: float) -> None:
    """Wait for 200 (docker-proxy accepts and drops connections until the server listens)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if http(url)[0] == 200:
                return
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout}s"
        time.sleep(0.1)


def _seconds(text: str) -> float:
    """Docker's StartedAt/FinishedAt (RFC 3339, nanoseconds, UTC) as epoch seconds."""
    from datetime import datetime, timezone

    whole, _, frac = text.rstrip("Z").partition(".")
    base = datetime.fromisoformat(whole).replace(tzinfo=timezone.utc).timestamp()
    return base + float(f"0.{frac or 0}")
