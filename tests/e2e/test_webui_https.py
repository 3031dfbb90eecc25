"""End to end through the front door: the REAL Open WebUI behind the real proxy (Caddy, with a
certificate from a real ACME server, pebble), and a real browser that reaches it only by its
https name: it signs in, its websocket (/ws/socket.io) opens over wss through the proxy, and it
chats with the served model.

The browser is told the name's address (`--host-resolver-rules`) and, since pebble's root is
not in Chromium's store, to accept the chain; the chain itself is verified in Python against
pebble's root first.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e import browser
from tests.fakes import acme, images
from tests.fakes.webui_real import ensure_webui_real_image
from tests.integration.caddy_support import NAME, https
from tests.integration.stack_support import (
    agent,
    docker_client,
    fake_snapshot,
    free_port,
    remove_project,
    write_config,
)

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SERVED_NAME = "tiny-chat"
URL = f"https://{NAME}:{acme.TLS_PORT}"


@dataclass(frozen=True)
class Stack:
    email: str
    password: str
    root: Path


@pytest.fixture(scope="module")
def https_stack(pebble: acme.Pebble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    client = docker_client()
    folder = tmp_path_factory.mktemp("e2e-https")
    project = f"e2e-https-{uuid.uuid4().hex[:8]}"
    fake_snapshot(folder / "models", "acme/tiny-chat")
    config = write_config(
        folder,
        project,
        (images.ensure_image("vllm-standin"), ensure_webui_real_image()),
        model={"id": "acme/tiny-chat", "served_name": SERVED_NAME},
        ui={"bind": "0.0.0.0"},
        images={"proxy": images.ensure_image("caddy-standin")},
        https={
            "domain": NAME,
            "http_port": acme.HTTP_PORT,
            "port": acme.TLS_PORT,
            "api_port": free_port(),
            "health_port": free_port(),
            "acme_ca": pebble.directory_url,
            "acme_ca_root": str(pebble.listener_cert),
        },
        timeouts={"ready": 300},
    )
    before = pebble.issued()
    try:
        up = agent("up", "--config", str(config), timeout=360)
        assert up.returncode == 0, f"sandbox-agent up failed:\n{up.stdout}\n{up.stderr}"
        assert f"chat: {URL}" in up.stdout
        pebble.wait_issued(before + 1, timeout=60)
        root = folder / "pebble-root.pem"
        root.write_text(pebble.root_pem())
        email, password = (folder / "secrets" / "webui_admin").read_text().split("\n")[:2]
        yield Stack(email, password, root)
    finally:
        remove_project(client, project)


def test_the_ui_signs_in_and_chats_over_https_with_its_websocket(https_stack: Stack) -> None:
    for _ in range(60):  # Caddy serves the certificate a moment after it is issued
        try:
            assert https("/health", cafile=https_stack.root).status == 200
            break
        except OSError:
            time.sleep(0.5)
    config = https("/api/config", cafile=https_stack.root).json()
    assert config["features"]["enable_signup"] is False
    sockets: list[str] = []
    frames: list[str] = []
    prompt = f"Hello over https {secrets.token_hex(3)}"
    with browser.launch(extra_args=(f"--host-resolver-rules=MAP {NAME} 127.0.0.1",)) as chromium:
        page = browser.new_page(chromium, ignore_https_errors=True)

        def watch(ws) -> None:  # noqa: ANN001
            sockets.append(ws.url)
            ws.on("framereceived", lambda payload: frames.append(str(payload)[:80]))

        page.on("websocket", watch)
        try:
            browser.sign_in(page, URL, https_stack.email, https_stack.password)
            browser.select_or_check_model(page, SERVED_NAME)
            answer = browser.send_message(page, prompt)
            cookies = page.context.cookies(URL)
        finally:
            browser.screenshot(page, ARTIFACTS / "webui_https_chat.png")
    assert page.url.startswith(URL)
    assert f"stand-in reply from {SERVED_NAME}" in answer and prompt in answer
    ws = [u for u in sockets if u.startswith(f"wss://{NAME}:{acme.TLS_PORT}/ws/socket.io")]
    assert ws, f"no websocket through the door: {sockets}"
    assert frames, "the UI's websocket opened but carried nothing"
    token = [c for c in cookies if c["name"] == "token"]
    assert token and token[0]["secure"] is True
