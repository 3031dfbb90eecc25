"""What the backup tests share: a data folder laid out as Open WebUI 0.12.4 leaves it (webui.db
in WAL mode with its alembic revision, uploads, Chroma's SQLite, a cache of links), settings on
a closed UI port, and a digest of a folder's bytes."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any

from agent import settings

REVISION = "0bd252b206fb"  # the real 0.12.4's alembic_version


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(write_config: Any, tmp_path: Path, **over: Any) -> settings.Settings:
    base = {
        "ui": {"port": closed_port()},
        "watch": {"motd": str(tmp_path / "motd.d" / "50-sandbox-agent-watch")},
    }
    for key, value in over.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    (tmp_path / "motd.d").mkdir(exist_ok=True)
    return settings.load(write_config(base))


def lay_out_ui_data(folder: Path, chats: int = 200) -> sqlite3.Connection:
    """The folder as the real UI leaves it; returns webui.db's connection, left open (its -wal
    and -shm beside it, as while the UI runs)."""
    (folder / "uploads").mkdir(parents=True)
    (folder / "vector_db").mkdir()
    (folder / "cache" / "embedding" / "models" / "blobs").mkdir(parents=True)
    db = sqlite3.connect(folder / "webui.db")
    db.execute("PRAGMA journal_mode=wal")
    db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    db.execute("INSERT INTO alembic_version VALUES (?)", (REVISION,))
    db.execute("CREATE TABLE chat (id INTEGER PRIMARY KEY, title TEXT, body TEXT)")
    for i in range(chats):
        db.execute("INSERT INTO chat (title, body) VALUES (?, ?)", (f"chat {i}", "words " * 40))
    db.commit()
    chroma = sqlite3.connect(folder / "vector_db" / "chroma.sqlite3")
    chroma.execute("CREATE TABLE embeddings (id INTEGER PRIMARY KEY, v BLOB)")
    chroma.execute("INSERT INTO embeddings (v) VALUES (?)", (os.urandom(512),))
    chroma.commit()
    chroma.close()
    (folder / "uploads" / "9201b691_note.txt").write_text("hello backup file\n")
    (folder / "uploads" / "photo.bin").write_bytes(os.urandom(50_000))
    blob = folder / "cache" / "embedding" / "models" / "blobs" / "abc"
    blob.write_text("weights")
    (folder / "cache" / "embedding" / "models" / "model.safetensors").symlink_to("blobs/abc")
    (folder / "cache" / "escape").symlink_to("/etc/passwd")
    return db


def tree(folder: Path) -> dict[str, str]:
    """Every file's sha256 and every link's target, by relative path."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def rows(db: Path, query: str = "SELECT id, title, body FROM chat ORDER BY id") -> list[Any]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()
