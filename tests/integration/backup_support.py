"""What the backup tests on the real engine share: a stand-in stack on ephemeral ports whose
data folder holds what a week of use leaves (chats in a WAL database with its alembic
revision, an upload), and what must not change when a change is refused or undone."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import AGENT, agent_env
from tests.integration.stack_support import (
    agent,
    docker_client,
    fake_snapshot,
    http,
    project_name,
    remove_project,
    standin_images,
    tree_digest,
    write_config,
)

REVISION = "standin-1"


class Box:
    def __init__(self, folder: Path) -> None:
        self.folder, self.client = folder, docker_client()
        self.project = project_name("bk")
        self.images = standin_images()
        self.config = write_config(
            folder,
            self.project,
            self.images,
            timeouts={"ready": 20},
            watch={"motd": str(folder / "motd.d" / "50-sandbox-agent-watch")},
        )
        (folder / "motd.d").mkdir()
        data = yaml.safe_load(self.config.read_text())
        self.ui = f"http://127.0.0.1:{data['ui']['port']}"
        self.data = folder / "ui_data"
        self.backups = folder / "state" / "backups"
        self.journal = folder / "state" / "change.json"

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Any:
        return agent(*args, "--config", str(self.config), env=env, timeout=timeout)

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        """The agent started in the background on this box (a test kills it midway)."""
        return subprocess.Popen(
            [AGENT, *args, "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=agent_env(),
        )

    def ids(self) -> dict[str, tuple[str, str]]:
        found = self.client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={self.project}"}
        )
        return {
            c.labels["com.docker.compose.service"]: (c.id, c.attrs["State"]["StartedAt"])
            for c in found
        }

    def ui_ok(self) -> bool:
        return http(f"{self.ui}/health")[0] == 200

    def chats(self, folder: Path | None = None) -> list[Any]:
        db = sqlite3.connect((folder or self.data) / "webui.db")
        try:
            return db.execute("SELECT id, title FROM chat ORDER BY id").fetchall()
        finally:
            db.close()

    def backup(self, *more: str) -> Path:
        ran = self.run("backup", "--json", *more)
        assert ran.returncode == 0, ran.stderr[-3000:]
        return Path(json.loads(ran.stdout)["path"])


def seed(folder: Path) -> None:
    """What a week of use leaves: chats in a WAL database, an upload."""
    db = sqlite3.connect(folder / "webui.db")
    db.execute("PRAGMA journal_mode=wal")
    db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    db.execute("INSERT INTO alembic_version VALUES (?)", (REVISION,))
    db.execute("CREATE TABLE chat (id INTEGER PRIMARY KEY, title TEXT)")
    db.executemany("INSERT INTO chat (title) VALUES (?)", [(f"chat {i}",) for i in range(300)])
    db.commit()
    db.close()
    (folder / "uploads").mkdir()
    (folder / "uploads" / "note.txt").write_text("the file a person uploaded\n")


def running_box(folder: Path) -> Iterator[Box]:
    b = Box(folder)
    fake_snapshot(folder / "models", "acme/tiny-chat")
    ran = b.run("up")
    assert ran.returncode == 0, ran.stderr[-3000:]
    seed(b.data)
    try:
        yield b
    finally:
        remove_project(b.client, b.project)


def alembic(folder: Path) -> str:
    db = sqlite3.connect(folder / "webui.db")
    try:
        return str(db.execute("SELECT version_num FROM alembic_version").fetchone()[0])
    finally:
        db.close()


def state(box: Box) -> tuple[str, dict[str, str]]:
    return box.config.read_text(), tree_digest(box.data)
