"""What a backup of Open WebUI's data is made of: the archive's names and members, which files
are SQLite databases, what identifies the UI's schema, and how two Open WebUI versions compare.

An archive is one gzip'd tar, read and written as a stream:

- `sandbox-backup.json` first: when, why, from which Open WebUI (version, image, schema),
  with or without secrets. `backup list` reads only this member.
- `data/...`: the data folder, every SQLite database as a snapshot taken with SQLite's online
  backup API (never the live file with its `-wal`), the rest as it is.
- `settings/config.yaml`, and `secrets/...` only when asked for.
- `manifest.json` last: the header again and every member with its size and sha256.

Open WebUI 0.12.4 keeps its schema version in `webui.db`'s `alembic_version` table (one
revision, `0bd252b206fb` for 0.12.4; seen on the real image); releases before 0.4 used peewee's
`migratehistory`. Both are recorded when present; the version is what a restore compares.
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import probes, service_health
from agent.results import Record
from agent.settings import Settings

FORMAT = 1
HEADER = "sandbox-backup.json"
MANIFEST = "manifest.json"
DATA = "data"
SETTINGS_MEMBER = "settings/config.yaml"
SECRETS = "secrets"
ARCHIVE = re.compile(r"^open-webui-(\d{8}T\d{6}Z)(?:-(\d{1,4}))?\.tar\.gz$")
PARTIAL_PREFIX = ".open-webui-"  # a backup's temp file and staging folder, until renamed
PARTIAL_SUFFIX = ".partial"
SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_SUFFIXES = (".db", ".sqlite3", ".sqlite")
SIDECARS = ("-wal", "-shm", "-journal")  # a database's own files, folded into its snapshot
MAIN_DB = "webui.db"
VERSION = re.compile(r"^v?(\d{1,6}(?:\.\d{1,6}){1,3})(?![0-9])")


def stamp(now: float) -> str:
    """A UTC time as archive names and aside folders carry it: 20261201T030000Z."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def iso(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def archive_name(now: float, serial: int = 0) -> str:
    return f"open-webui-{stamp(now)}{f'-{serial}' if serial else ''}.tar.gz"


def is_sqlite(path: Path) -> bool:
    """A file named like a database whose first 16 bytes are SQLite's header (never read
    through a link)."""
    if not path.name.endswith(SQLITE_SUFFIXES):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, 16) == SQLITE_MAGIC
    finally:
        os.close(fd)


def sidecar_of(name: str, databases: set[str]) -> bool:
    """`webui.db-wal` beside the database `webui.db`: never archived as it is."""
    return any(name.endswith(s) and name[: -len(s)] in databases for s in SIDECARS)


def sqlite_uri(path: Path, mode: str = "ro") -> str:
    return f"file:{urllib.parse.quote(str(path))}?mode={mode}"


@dataclass(frozen=True)
class Schema(Record):
    alembic: str | None  # alembic_version.version_num of webui.db
    migratehistory: str | None = None  # the last peewee migration (Open WebUI before 0.4)

    @property
    def label(self) -> str:
        if self.alembic:
            return f"alembic {self.alembic}"
        return f"peewee {self.migratehistory}" if self.migratehistory else "unknown"


def section(data: dict[str, Any], key: str) -> dict[str, Any]:
    """A header's sub-object (`open_webui`, `schema`), {} when it is not one."""
    found = data.get(key)
    return found if isinstance(found, dict) else {}


def schema_label(header: dict[str, Any]) -> str:
    schema = section(header, "schema")
    return Schema(schema.get("alembic"), schema.get("migratehistory")).label


def read_schema(db: Path) -> Schema:
    """The schema a database says it is at; `Schema(None)` when it says nothing."""
    try:
        conn = sqlite3.connect(sqlite_uri(db), uri=True, timeout=10)
    except sqlite3.Error:
        return Schema(None)
    try:
        alembic = _one(conn, "SELECT version_num FROM alembic_version LIMIT 1")
        peewee = _one(conn, "SELECT name FROM migratehistory ORDER BY id DESC LIMIT 1")
        return Schema(alembic, peewee)
    finally:
        conn.close()


def _one(conn: sqlite3.Connection, query: str) -> str | None:
    try:
        row = conn.execute(query).fetchone()
    except sqlite3.Error:
        return None  # no such table: that kind of schema record is not there
    return str(row[0]) if row and row[0] is not None else None


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """0.12.4, v0.12.4, 0.12.4+local -> (0, 12, 4); anything else -> None."""
    found = VERSION.match(text.strip()) if isinstance(text, str) else None
    return tuple(int(p) for p in found.group(1).split(".")) if found else None


def image_version(image: str) -> str | None:
    """The release an image's tag names (`...open-webui:v0.12.4` -> 0.12.4), else None."""
    name = image.split("@", 1)[0]
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
    found = VERSION.match(tag)
    return found.group(1) if found and found.end() == len(tag) else None


def ui_version(settings: Settings, timeout: float = 3.0) -> tuple[str | None, str]:
    """The running Open WebUI's version and where it was read: its `/api/version`, else the
    tag of the configured image; (None, why) when neither says."""
    status, payload, _ = probes.request(
        service_health.ui_url(settings) + "/api/version", timeout=timeout
    )
    if status == 200 and isinstance(payload, dict) and isinstance(payload.get("version"), str):
        return payload["version"][:64], "its /api/version"
    tagged = image_version(settings.images.webui)
    if tagged:
        return tagged, f"the tag of {settings.images.webui}"
    return None, f"neither its /api/version nor the tag of {settings.images.webui}"


def newer(a: str | None, b: str | None) -> bool:
    """Whether version `a` is known to be newer than `b` (False when either is unknown)."""
    pa, pb = parse_version(a), parse_version(b)
    if pa is None or pb is None:
        return False
    width = max(len(pa), len(pb))
    return pa + (0,) * (width - len(pa)) > pb + (0,) * (width - len(pb))


def aside(ui_data: Path, why: str, now: float) -> Path:
    """A folder beside the data folder (same file system: a rename moves it), e.g.
    /opt/open-webui.before-restore-20261201T030000Z; a number is added if that is taken."""
    base = ui_data.with_name(f"{ui_data.name}.{why}-{stamp(now)}")
    found, serial = base, 1
    while os.path.lexists(found):
        found, serial = base.with_name(f"{base.name}-{serial}"), serial + 1
    return found
