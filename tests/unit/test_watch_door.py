"""The watchdog and the front door: the proxy is one more watched service (its /health only),
and the certificate is read from Caddy's store now and then, for a MOTD notice and one journal
entry per change (a pending certificate restarts nothing). Real files, a real HTTP answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent import door, engine, probes, settings, stack, systemd_client
from agent.watchdog.actions import Actions
from agent.watchdog.certificate import CertificateWatch
from agent.watchdog.loop import Watch
from agent.watchdog.machine import Policy
from agent.watchdog.report import Reporter
from agent.watchdog.signals import ProbeDone
from agent.watchdog.stages import ApiKey
from tests.fakes import certs

LE = "acme-v02.api.letsencrypt.org-directory"
NAME = "chat.example.com"


@pytest.fixture
def door_settings(write_config, tmp_path: Path) -> Any:
    def make(**https: Any) -> settings.Settings:
        return settings.load(
            write_config(
                {
                    "project": "unit",
                    "https": {"domain": NAME, **https},
                    "ui": {"bind": "0.0.0.0"},
                    "watch": {"motd": str(tmp_path / "motd")},
                }
            )
        )

    return make


class Health(BaseHTTPRequestHandler):
    answer = 200

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(self.answer if self.path == "/health" else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def proxy_health() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def watch_of(s: settings.Settings, tmp_path: Path) -> Watch:
    nowhere = f"unix://{tmp_path}/no-engine.sock"
    return Watch(
        s,
        connect=lambda: engine.connect(nowhere, timeout=1),
        api_key=ApiKey(None),
        actions=Actions(s, Reporter(), systemd_client.Notifier.from_env({})),
        policy=Policy(),
    )


def test_the_proxy_is_watched_by_its_health_only(
    door_settings: Any, tmp_path: Path, proxy_health: ThreadingHTTPServer
) -> None:
    s = door_settings(health_port=proxy_health.server_address[1])
    w = watch_of(s, tmp_path)
    assert w.services == (stack.VLLM, stack.UI, stack.PROXY)
    assert set(w.stages[stack.PROXY]) == {"health"}
    assert w.stages[stack.PROXY]["health"].run(2).ok
    Health.answer = 503
    try:
        failed = w.stages[stack.PROXY]["health"].run(2)
    finally:
        Health.answer = 200
    assert not failed.ok and failed.status == 503
    w.start()  # no engine: the machines are made, the containers unknown
    machine = w.machines[stack.PROXY]
    w.containers[stack.PROXY] = stack.ServiceStatus(
        stack.PROXY, "unit-proxy-1", "running", "healthy", (), "caddy", 5.0
    )
    w._handle(ProbeDone(stack.PROXY, "health", machine.epoch, failed, 1.0))
    w._handle(
        ProbeDone(
            stack.PROXY,
            "health",
            machine.epoch,
            probes.Probe("proxy.health", True, 200, "ok", 0.01),
            2.0,
        )
    )
    events = [e["event"] for e in w.actions.report.sent]
    assert "watch_error" not in events, w.actions.report.sent
    assert machine.state == "healthy"
    w.close()


def test_with_the_door_closed_there_is_no_proxy_to_watch(write_config, tmp_path: Path) -> None:
    s = settings.load(write_config({"https": {"domain": "off"}, "ui": {"bind": "0.0.0.0"}}))
    assert stack.PROXY not in watch_of(s, tmp_path).services


def test_a_pending_certificate_is_a_motd_notice_until_it_is_issued(
    door_settings: Any, tmp_path: Path
) -> None:
    s = door_settings()
    actions = Actions(s, Reporter(), systemd_client.Notifier.from_env({}))
    watch = actions.certificate
    assert watch.check(0.0, actions.report) and watch.lines[0] == (
        f"https: no certificate yet for {NAME}; Caddy asks {LE} again by itself"
    )
    actions.write_motd()
    text = (tmp_path / "motd").read_text()
    assert text.startswith("sandbox-agent watchdog:\n  https: no certificate yet for")
    assert f"    fix: point the A record of {NAME} at this box and open ports 80 and 443" in text
    assert [e["event"] for e in actions.report.sent] == ["certificate_pending"]

    certs.place(door.store(s), LE, NAME, certs.pem(NAME, 90))
    assert not watch.check(30.0, actions.report)  # not due: the store is read every minute
    assert watch.check(61.0, actions.report) and watch.lines == []
    actions.write_motd()
    assert not (tmp_path / "motd").exists()  # nothing failed, nothing pending: no notice
    assert [e["event"] for e in actions.report.sent] == [
        "certificate_pending",
        "certificate_issued",
    ]
    assert actions.report.sent[-1]["name"] == NAME and actions.report.sent[-1]["expires"]
    assert not watch.check(200.0, actions.report)  # the same state: said once


def test_a_certificate_near_its_expiry_is_a_warning_on_the_motd(
    door_settings: Any, tmp_path: Path
) -> None:
    s = door_settings()
    certs.place(door.store(s), LE, NAME, certs.pem(NAME, 6))
    watch = CertificateWatch(s)
    report = Reporter()
    assert watch.check(0.0, report)
    assert watch.lines[0].startswith(f"https: the certificate of {NAME} expires ")
    assert watch.lines[0].endswith("days left): renewal fails")
    assert report.sent[0]["event"] == "certificate_near_expiry"
    assert report.sent[0]["level"] == "warning"


def test_no_door_no_certificate_watch(write_config) -> None:
    s = settings.load(write_config({"https": {"domain": "off"}, "ui": {"bind": "0.0.0.0"}}))
    watch = CertificateWatch(s)
    report = Reporter()
    assert not watch.check(0.0, report) and watch.lines == [] and report.sent == []


def test_systemd_is_told_the_loop_lives_while_a_change_holds_the_lock(
    write_config, tmp_path: Path
) -> None:
    """A model switch can fetch for half an hour: the watchdog stands back, but WATCHDOG=1
    goes on (WatchdogSec=30 would kill it, and again after each restart, meanwhile)."""
    import socket

    from agent import maintenance

    s = settings.load(write_config({"project": "unit", "ui": {"enabled": False}}))
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        actions = Actions(s, Reporter(), systemd_client.Notifier(str(path)), watchdog_every=0.0)
        w = Watch(
            s,
            connect=lambda: engine.connect(f"unix://{tmp_path}/no-engine.sock", timeout=1),
            api_key=ApiKey(None),
            actions=actions,
            policy=Policy(),
        )
        with maintenance.hold(s.paths.state, "switch-model acme/x"):
            w._periodic()
            assert w.maintenance == "switch-model acme/x"
        said = server.recv(4096).decode().splitlines()
    assert "WATCHDOG=1" in said and "STATUS=maintenance: switch-model acme/x" in said[0]
