"""End to end: the REAL Open WebUI (0.12.4, built here from PyPI) keeps what a person did across
`backup`, a wiped data folder and `restore`: Chromium signs in, chats, a file is uploaded;
`sandbox-agent backup` runs while the UI serves; the data folder is deleted; `sandbox-agent
restore` puts it back; Chromium signs in again and finds the chat and the file.

Needs a running Docker engine, Debian's chromium and the `playwright` package (see
tests/e2e/test_webui_real.py); the first run builds the UI image (cached by content hash).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

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
REVISION = "0bd252b206fb"  # webui.db's alembic_version, as 0.12.4 migrates it


@dataclass(frozen=True)
class Stack:
    base_url: str
    email: str
    password: str
    config: Path
    data: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    client = docker_client()
    ui_image = ensure_webui_real_image()
    vllm_image = images.ensure_image("vllm-standin")
    folder = tmp_path_factory.mktemp("e2e-backup")
    project = f"e2e-bk-{uuid.uuid4().hex[:8]}"
    fake_snapshot(folder / "models", "acme/tiny-chat")
    (folder / "motd.d").mkdir()
    config = write_config(
        folder,
        project,
        (vllm_image, ui_image),
        model={"id": "acme/tiny-chat", "served_name": SERVED_NAME},
        timeouts={"ready": 300},
        watch={"motd": str(folder / "motd.d" / "50-sandbox-agent-watch")},
    )
    try:
        up = agent("up", "--config", str(config), timeout=360)
        assert up.returncode == 0, f"sandbox-agent up failed:\n{up.stdout}\n{up.stderr}"
        port = re.search(r"chat: http://127\.0\.0\.1:(\d+)", up.stdout)
        assert port, up.stdout
        email, password = (folder / "secrets" / "webui_admin").read_text().split("\n")[:2]
        yield Stack(
            f"http://127.0.0.1:{port.group(1)}", email, password, config, folder / "ui_data"
        )
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        label = {"label": f"com.docker.compose.project={project}"}
        for container in client.containers.list(all=True, filters=label):
            service = container.labels.get("com.docker.compose.service", container.name)
            (ARTIFACTS / f"backup-{service}.log").write_bytes(container.logs())
        remove_project(client, project)


def _token(stack: Stack) -> str:
    reply = requests.post(
        f"{stack.base_url}/api/v1/auths/signin",
        json={"email": stack.email, "password": stack.password},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text[:300]
    return str(reply.json()["token"])


def _upload(stack: Stack, name: str, content: bytes) -> str:
    reply = requests.post(
        f"{stack.base_url}/api/v1/files/?process=false",
        headers={"Authorization": f"Bearer {_token(stack)}"},
        files={"file": (name, content, "text/plain")},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text[:300]
    return str(reply.json()["id"])


def _alembic(data: Path) -> str:
    db = sqlite3.connect(f"file:{data / 'webui.db'}?mode=ro", uri=True)
    try:
        return str(db.execute("SELECT version_num FROM alembic_version").fetchone()[0])
    finally:
        db.close()


def test_chats_and_files_come_back_after_the_data_folder_is_lost(stack: Stack) -> None:
    prompt = f"Remember the backup tier {secrets.token_hex(3)}"
    note = f"a file worth keeping {secrets.token_hex(4)}\n".encode()
    with browser.launch() as chromium:
        page = browser.new_page(chromium)
        try:
            browser.sign_in(page, stack.base_url, stack.email, stack.password)
            browser.select_or_check_model(page, SERVED_NAME)
            answer = browser.send_message(page, prompt)
            assert prompt in answer, answer
            page.wait_for_url(re.compile(r".*/c/[0-9a-f-]+$"), timeout=30_000)
            chat_url = page.url
        finally:
            browser.screenshot(page, ARTIFACTS / "backup_before.png")
    file_id = _upload(stack, "keep-me.txt", note)

    ran = agent("backup", "--json", "--config", str(stack.config), timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    made = json.loads(ran.stdout)
    assert made["open_webui"]["version"] == OPEN_WEBUI_VERSION  # asked of the running UI
    assert made["schema"]["alembic"] == REVISION and _alembic(stack.data) == REVISION
    assert "data/webui.db" in made["databases"]
    assert "data/vector_db/chroma.sqlite3" in made["databases"]

    shutil.rmtree(stack.data)  # the disk lost it
    ran = agent("restore", made["path"], "--yes", "--config", str(stack.config), timeout=400)
    assert ran.returncode == 0, ran.stdout + ran.stderr[-3000:]
    assert "restored " in ran.stdout

    with browser.launch() as chromium:
        page = browser.new_page(chromium)
        try:
            browser.sign_in(page, stack.base_url, stack.email, stack.password)
            page.goto(chat_url)
            browser.dismiss_dialogs(page)
            expect(page.get_by_text(prompt).first, "the chat is not back").to_be_visible(
                timeout=30_000
            )
            expect(page.locator(".chat-assistant").first, "the answer is not back").to_contain_text(
                f"stand-in reply from {SERVED_NAME}"
            )
            browser.screenshot(page, ARTIFACTS / "backup_restored_chat.png")
            page.goto(f"{stack.base_url}/api/v1/files/{file_id}/content")  # signed in: its cookie
            assert note.decode().strip() in page.inner_text("body")
        finally:
            browser.screenshot(page, ARTIFACTS / "backup_restored_file.png")
