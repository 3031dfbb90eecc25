"""End to end: `sandbox-agent up` starts the REAL Open WebUI (built here from PyPI) in front of
the vLLM stand-in; a real browser signs in with the credentials the agent stored and chats.

The stack is the agent's own: its rendered compose file, its secrets, its readiness gate. The
tests override only the image names and the GPU request, as TESTING.md asks.

Needs a running Docker engine, Debian's chromium (`tests/e2e/setup_browser.sh`) and the
`playwright` package; the first run builds the UI image (about 3 min of pip and 1.5 min of
docker build, then cached by content hash: see `tests/fakes/webui_real.py`).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.e2e import browser
from tests.fakes import images
from tests.fakes.webui_real import OPEN_WEBUI_VERSION, ensure_webui_real_image
from tests.integration.stack_support import (
    agent,
    docker_client,
    fake_snapshot,
    remove_project,
    write_config,
)

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SERVED_NAME = "tiny-chat"


@dataclass(frozen=True)
class Stack:
    base_url: str  # the UI as published on the host
    admin_email: str
    admin_password: str
    served_name: str
    config: Path
    secrets: Path


def _stored_admin(folder: Path) -> tuple[str, str]:
    email, password = (folder / "webui_admin").read_text().split("\n")[:2]
    return email, password


@pytest.fixture(scope="module")
def webui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`sandbox-agent up` with the real Open WebUI image and the vLLM stand-in."""
    client = docker_client()
    ui_image = ensure_webui_real_image()
    vllm_image = images.ensure_image("vllm-standin")
    folder = tmp_path_factory.mktemp("e2e")
    project = f"e2e-{uuid.uuid4().hex[:8]}"
    fake_snapshot(folder / "models", "acme/tiny-chat")
    config = write_config(
        folder,
        project,
        (vllm_image, ui_image),
        model={"id": "acme/tiny-chat", "served_name": SERVED_NAME},
        timeouts={"ready": 300},
    )
    try:
        up = agent("up", "--config", str(config), timeout=360)
        assert up.returncode == 0, f"sandbox-agent up failed:\n{up.stdout}\n{up.stderr}"
        assert "ready in" in up.stdout
        port = next(
            line.split("http://127.0.0.1:")[1].split()[0]
            for line in up.stdout.splitlines()
            if line.strip().startswith("chat:")
        )
        email, password = _stored_admin(folder / "secrets")
        yield Stack(
            f"http://127.0.0.1:{port}", email, password, SERVED_NAME, config, folder / "secrets"
        )
    finally:
        _save_logs(client, project)
        remove_project(client, project)


def _save_logs(client, project: str) -> None:  # noqa: ANN001
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    label = {"label": f"com.docker.compose.project={project}"}
    for container in client.containers.list(all=True, filters=label):
        service = container.labels.get("com.docker.compose.service", container.name)
        (ARTIFACTS / f"{service}.log").write_bytes(container.logs())


def _ui_models(stack: Stack) -> list[str]:
    token = requests.post(
        f"{stack.base_url}/api/v1/auths/signin",
        json={"email": stack.admin_email, "password": stack.admin_password},
        timeout=10,
    ).json()["token"]
    reply = requests.get(
        f"{stack.base_url}/api/models", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert reply.status_code == 200, reply.text[:300]
    return [m["id"] for m in reply.json()["data"]]


# --- the tests --------------------------------------------------------------------------------


def test_admin_comes_from_env(webui_stack: Stack) -> None:
    reply = requests.post(
        f"{webui_stack.base_url}/api/v1/auths/signin",
        json={"email": webui_stack.admin_email, "password": webui_stack.admin_password},
        timeout=10,
    )
    assert reply.status_code == 200, (
        f"admin sign-in refused: HTTP {reply.status_code} {reply.text[:300]}"
    )
    body = reply.json()
    assert body["role"] == "admin", (
        f"the user from WEBUI_ADMIN_EMAIL has role {body['role']!r}, not admin"
    )
    version = requests.get(f"{webui_stack.base_url}/api/version", timeout=10).json()["version"]
    assert version == OPEN_WEBUI_VERSION, (
        f"the image runs Open WebUI {version}, pinned {OPEN_WEBUI_VERSION}"
    )


def test_stranger_cannot_sign_up(webui_stack: Stack) -> None:
    reply = requests.post(
        f"{webui_stack.base_url}/api/v1/auths/signup",
        json={"name": "Eve", "email": "eve@example.com", "password": "Eve-" + secrets.token_hex(8)},
        timeout=10,
    )
    # Open WebUI 0.12.4 answers 403 {"detail": "You do not have permission to access this
    # resource. Please contact your administrator for assistance."}
    assert reply.status_code == 403, (
        f"a stranger's signup got HTTP {reply.status_code}, expected 403: {reply.text[:300]}"
    )
    assert "token" not in reply.json(), (
        f"a refused signup still handed out a token: {reply.text[:300]}"
    )
    signin = requests.post(
        f"{webui_stack.base_url}/api/v1/auths/signin",
        json={"email": "eve@example.com", "password": "anything"},
        timeout=10,
    )
    assert signin.status_code != 200, "the stranger can sign in after a refused signup"


def test_admin_chats_in_the_browser(webui_stack: Stack) -> None:
    prompt = f"Hello from the e2e tier {secrets.token_hex(3)}"
    with browser.launch() as chromium:
        page = browser.new_page(chromium)
        try:
            browser.sign_in(
                page, webui_stack.base_url, webui_stack.admin_email, webui_stack.admin_password
            )
            browser.select_or_check_model(page, webui_stack.served_name)
            answer = browser.send_message(page, prompt)
        finally:
            shot = browser.screenshot(page, ARTIFACTS / "webui_real_chat.png")
            print(f"\n[e2e] screenshot: {shot}")
    expected = f"stand-in reply from {webui_stack.served_name}"
    assert expected in answer, (
        f"the answer in the browser is {answer!r}; expected it to contain {expected!r}"
    )
    assert prompt in answer, (
        f"the stand-in echoes the prompt, but the answer {answer!r} lacks {prompt!r}"
    )


def test_a_new_api_key_reaches_the_ui(webui_stack: Stack) -> None:
    # Open WebUI keeps its OpenAI connection in its database after the first start; the
    # agent's compose file makes it read the environment on every start instead, so a new
    # key (here: the old one deleted, `up` generates another) must still let it list models.
    assert _ui_models(webui_stack) == [webui_stack.served_name]
    old = (webui_stack.secrets / "api_key").read_text()
    (webui_stack.secrets / "api_key").unlink()
    up = agent("up", "--config", str(webui_stack.config), timeout=360)
    assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
    assert (webui_stack.secrets / "api_key").read_text() != old
    assert _ui_models(webui_stack) == [webui_stack.served_name]
