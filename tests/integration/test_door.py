"""The front door on the real engine, with the stand-ins and, for the proxy, door-standin (its
health answer where the rendered Caddyfile puts it, and Caddy 2.6.2's real log of a failing
certificate): `up`, `status` and doctor say where the door is and what the certificate waits
for; the watchdog restarts a hung proxy and puts the pending certificate on its MOTD notice;
a model switch and an image update of another service keep the proxy running.

One stack for the module; the tests run in order against it, like a person's session."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import probes
from tests.fakes import certs
from tests.fakes.hub_server import running_hub
from tests.integration.stack_support import TINY_CONFIG, free_port, http
from tests.integration.watch_support import Stack, Watcher, stamp

pytestmark = pytest.mark.docker
NAME = "fail.door.test"  # the name in Caddy's real log (tests/fakes/caddy/obtain-failed.log)
LE = "acme-v02.api.letsencrypt.org-directory"
CADDY_LOG = Path(__file__).resolve().parents[1] / "fakes" / "caddy" / "obtain-failed.log"


class DoorStack(Stack):
    """A stand-in stack whose UI faces the network through the proxy stand-in."""

    def __init__(self, folder: Path, hub_url: str) -> None:
        from tests.fakes.images import ensure_image

        self.proxy_image = ensure_image("door-standin")
        self.ports = {k: free_port() for k in ("http_port", "port", "api_port", "health_port")}
        store = folder / "state" / "proxy" / "data"
        store.mkdir(parents=True)
        shutil.copy(CADDY_LOG, store / "standin-stderr.log")  # the proxy prints it at start
        super().__init__(
            folder,
            https={"domain": NAME, **self.ports},
            ui={"bind": "0.0.0.0"},
            images={"proxy": self.proxy_image},
            hub={"endpoint": hub_url},
        )
        self.store = store
        self.health = f"http://127.0.0.1:{self.ports['health_port']}"

    def ids(self) -> dict[str, str]:
        return {s: self.container(s).id for s in ("vllm", "open-webui", "proxy")}

    def checks(self) -> dict[str, Any]:
        ran = self.run("doctor", "--json", timeout=120)
        return {c["id"]: c for c in json.loads(ran.stdout)["checks"]}


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DoorStack]:
    with running_hub() as hub:
        files = {"config.json": json.dumps(TINY_CONFIG).encode(), "tokenizer.json": b"{}"}
        hub.add_repo("acme/other", {**files, "model.safetensors": b"\x01" * 10_000})
        stack = DoorStack(tmp_path_factory.mktemp("door"), hub.url)
        try:
            yield stack
        finally:
            stack.remove()


def test_up_opens_the_door_and_status_says_the_certificate_waits(st: DoorStack) -> None:
    ran = st.up()  # again: nothing changes, and it says where the door is
    ui = f"https://{NAME}:{st.ports['port']}"
    assert f"  chat: {ui}  admin sign-in in " in ran.stdout, ran.stdout
    assert "  https: Caddy obtains the certificate by itself" in ran.stdout
    proxy = st.container("proxy")
    assert proxy.attrs["HostConfig"]["NetworkMode"] == "host"
    services = json.loads(st.run("status", "--json").stdout)["services"]
    published = [p for s in services if s["service"] != "proxy" for p in s["ports"]]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    text = st.run("status").stdout
    assert any(line.startswith("proxy ") and " running " in line for line in text.splitlines())
    assert f"door: {NAME}: chat {ui}\n" in text
    assert f"  certificate: none yet, Caddy is asking {LE} (it retries by itself)\n" in text
    assert (
        "    Caddy's last error (2026-12-01T21:51:58+00:00): http-01 challenge failed: Get "
        f'"https://{NAME}/.well-known/acme-challenge/' in text
    )
    assert f"    fix: point the A record of {NAME} at " in text
    door = json.loads(st.run("status", "--json").stdout)["door"]
    assert door["name"] == NAME and door["ui_url"] == ui and door["api_url"] is None
    assert door["certificate"]["state"] == "pending"
    assert door["certificate"]["path"] == str(
        st.store / "caddy/certificates" / LE / NAME / f"{NAME}.crt"
    )


def test_doctor_says_what_the_certificate_waits_for(st: DoorStack) -> None:
    checks = st.checks()
    assert checks["https.door"]["status"] == "ok"
    assert checks["https.proxy"]["status"] == "ok", checks["https.proxy"]
    assert checks["https.proxy"]["summary"] == f"the proxy runs and answers {st.health}/health"
    cert = checks["https.certificate"]
    assert cert["status"] == "fail"
    assert cert["summary"] == f"no certificate yet for {NAME}: Caddy's tries fail"
    assert cert["detail"].startswith(
        "Caddy's last error (2026-12-01T21:51:58+00:00): http-01 challenge failed: Get "
    )
    assert "connection refused" in cert["detail"]
    assert cert["fix"].endswith("Caddy retries by itself, no restart needed")
    assert checks["https.dns"]["status"] == "fail"  # .test has no records anywhere
    assert checks["https.dns"]["summary"] == f"{NAME} has no A or AAAA record"


def test_the_watchdog_restarts_a_hung_proxy_and_tells_of_the_pending_certificate(
    st: DoorStack,
) -> None:
    w = Watcher(st.config)
    try:
        w.wait_for("service_healthy", 40, service="proxy")
        pending = w.wait_for("certificate_pending", 10, where=lambda e: e.get("name") == NAME)
        assert pending["level"] == "info"  # notice: no ill health, nothing is restarted for it
        notice = (st.folder / "motd").read_text()
        assert f"  https: no certificate yet for {NAME}; Caddy asks {LE} again by itself" in notice
        ids = st.ids()
        hung = time.time()
        assert http(f"{st.health}/_standin/mode", body={"hang": True})[0] == 200
        ev = w.wait_for("service_restarted", 45, service="proxy")
        assert stamp(ev) - hung < 40, w.dump()
        assert "timed out" in ev["reason"] or "Docker's healthcheck" in ev["reason"], ev
        w.wait_for("service_healthy", 30, service="proxy", where=lambda e: stamp(e) > stamp(ev))
        assert st.ids() == ids  # restarted in its container; vLLM and the UI untouched
        assert w.named("service_restarted", service="vllm") == []
        assert w.named("service_restarted", service="open-webui") == []
        assert probes.proxy_health(f"{st.health}/health").ok
    finally:
        w.stop()


def test_an_issued_certificate_is_shown_with_its_expiry(st: DoorStack) -> None:
    data = certs.pem(NAME, 90)
    certs.place(st.store, LE, NAME, data)
    day = certs.not_after(data).date().isoformat()
    cert = st.checks()["https.certificate"]
    assert cert["status"] == "ok"
    assert cert["summary"] == f"the certificate of {NAME} from {LE} expires {day} (89 days left)"
    text = st.run("status").stdout
    assert f"  certificate: from {LE}, expires {day} (89 days left)\n" in text
    assert "Caddy's last error" not in text and "fix:" not in text


def test_a_model_switch_keeps_the_proxy_running(st: DoorStack) -> None:
    ids = st.ids()
    ran = st.run("switch-model", "acme/other", "--yes", "--json", timeout=240)
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(ran.stdout)
    assert result["actions"] == {"vllm": "recreated", "open-webui": "kept", "proxy": "kept"}
    after = st.ids()
    assert after["proxy"] == ids["proxy"] and after["open-webui"] == ids["open-webui"]
    assert after["vllm"] != ids["vllm"]


def test_update_of_the_proxy_image_recreates_the_proxy_only(st: DoorStack) -> None:
    second = f"sandbox-test/door-standin:second-{st.project}"
    assert st.client.images.get(st.proxy_image).tag(second)
    try:
        ids = st.ids()
        ran = st.run("update", "--proxy-image", second, "--yes", "--json", timeout=240)
        assert ran.returncode == 0, ran.stderr[-3000:]
        result = json.loads(ran.stdout)
        assert result["before"]["proxy"] == st.proxy_image
        assert result["after"]["proxy"] == second
        assert result["actions"] == {"vllm": "kept", "open-webui": "kept", "proxy": "recreated"}
        after = st.ids()
        assert after["vllm"] == ids["vllm"] and after["open-webui"] == ids["open-webui"]
        assert st.container("proxy").attrs["Config"]["Image"] == second
        assert probes.proxy_health(f"{st.health}/health").ok
        text = st.run("status").stdout
        assert f"door: {NAME}: chat https://{NAME}:{st.ports['port']}\n" in text
    finally:
        st.remove()  # the containers first: the tag cannot go while one uses it
        st.client.images.remove(second)


def test_a_proxy_that_cannot_bind_its_port_fails_up_with_its_log_and_the_fix(
    tmp_path: Path,
) -> None:
    import socket

    from tests.fakes.images import ensure_image
    from tests.integration.stack_support import (
        agent,
        docker_client,
        fake_snapshot,
        project_name,
        remove_project,
        standin_images,
        write_config,
    )

    project = project_name("door")
    fake_snapshot(tmp_path / "models", "acme/tiny-chat")
    with socket.socket() as taken:  # another program on the proxy's port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        others = {k: free_port() for k in ("http_port", "port", "api_port")}
        config = write_config(
            tmp_path,
            project,
            standin_images(),
            https={"domain": NAME, "health_port": port, **others},
            ui={"bind": "0.0.0.0"},
            images={"proxy": ensure_image("door-standin")},
            timeouts={"ready": 30},
        )
        try:
            ran = agent("up", "--config", str(config), timeout=180)
        finally:
            remove_project(docker_client(), project)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "error: proxy /health: " in ran.stderr, ran.stderr
    assert "Address already in use" in ran.stderr  # its own last log lines
    assert (
        "fix: see `sandbox-agent logs proxy`; another program may hold one of its ports "
        "(https.http_port, https.port, https.api_port, https.health_port); check images.proxy"
    ) in ran.stderr
