"""The backups folder and what is said about it: one backup or restore at a time (a flock of
its own: a backup never takes the maintenance lock, so the watchdog keeps the UI up while it
runs), the archives listed newest first, the last `backup.keep` kept, and the last run's
outcome for `status`, doctor and the login message (and its journal event).
"""

from __future__ import annotations

import calendar
import contextlib
import fcntl
import gzip
import json
import os
import shutil
import stat
import tarfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import log, systemd_client
from agent.backup import layout
from agent.errors import AgentError
from agent.files import atomic_write
from agent.results import Record, Result
from agent.settings import Settings

LOCK = "backup.lock"
RECORD = "backup.json"
NOTICE = "51-sandbox-agent-backup"  # beside the watchdog's notice in /run/motd.d
HEADER_MAX = 1 << 20


class BackupRunning(AgentError):
    pass


@contextlib.contextmanager
def exclusive(state_dir: Path, what: str) -> Iterator[None]:
    """`paths.state/backup.lock`, held while the block runs; BackupRunning naming the holder
    when another process has it. The kernel drops it when the holder dies (kill -9 too)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise BackupRunning(
                f"a backup or restore is already running: {log.safe_text(holder)}",
                fix="wait for it to finish (`sandbox-agent backup list` shows what it wrote), "
                "then run this again",
            ) from None
        os.ftruncate(fd, 0)
        since = time.strftime("%H:%M:%S", time.localtime())
        os.pwrite(fd, f"{what} (pid {os.getpid()}, since {since})".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Archive(Record):
    path: Path
    created: str  # UTC, from the name
    created_unix: float
    size: int
    reason: str | None = None  # manual | daily | before update (from its header)
    open_webui: str | None = None  # the version it came from
    schema: str | None = None
    with_secrets: bool | None = None
    readable: bool = True  # its header could be read (a damaged archive may not be)


def created_of(name: str) -> float | None:
    found = layout.ARCHIVE.match(name)
    if not found:
        return None
    return float(calendar.timegm(time.strptime(found.group(1), "%Y%m%dT%H%M%SZ")))


def archives(folder: Path) -> list[Path]:
    """The backups in `folder` (regular files named as the agent names them), newest first."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for name in names:
        match = layout.ARCHIVE.match(name)
        if match and stat.S_ISREG(os.lstat(folder / name).st_mode):
            found.append((match.group(1), int(match.group(2) or 0), folder / name))
    return [path for *_, path in sorted(found, reverse=True)]


def read_header(path: Path) -> dict[str, Any] | None:
    """The first member of an archive, its header; None when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with (
            os.fdopen(fd, "rb") as raw,
            gzip.GzipFile(fileobj=raw) as gz,
            tarfile.open(fileobj=gz, mode="r|") as tar,
        ):
            first = tar.next()
            if first is None or first.name != layout.HEADER or first.size > HEADER_MAX:
                return None
            handle = tar.extractfile(first)
            data = json.loads(handle.read()) if handle else None
    except (OSError, EOFError, tarfile.TarError, ValueError, zlib.error):
        return None
    return data if isinstance(data, dict) else None


def describe(path: Path) -> Archive:
    created = created_of(path.name) or 0.0
    size = os.lstat(path).st_size
    head = read_header(path)
    if head is None:
        return Archive(path, layout.iso(created), created, size, readable=False)
    ui = layout.section(head, "open_webui")
    return Archive(
        path,
        layout.iso(created),
        created,
        size,
        reason=str(head.get("reason") or ""),
        open_webui=ui.get("version"),
        schema=layout.schema_label(head),
        with_secrets=bool(head.get("with_secrets")),
    )


@dataclass(frozen=True)
class BackupList(Result):
    folder: Path
    keep: int
    backups: tuple[Archive, ...]
    failed: dict[str, Any] | None = None  # the last run, when it failed


def listing(settings: Settings) -> BackupList:
    """`backup list`: the backups in backup.dir, newest first, each with its header."""
    found = tuple(describe(path) for path in archives(settings.backup_dir))
    failed = read_record(settings.paths.state).get("failed")
    return BackupList(settings.backup_dir, settings.backup.keep, found, failed)


def prune(folder: Path, keep: int) -> list[Path]:
    """The oldest backups beyond the newest `keep`, removed; returns them."""
    old = archives(folder)[keep:]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def sweep_partials(folder: Path) -> None:
    """What a killed backup left in `folder` (its temp file, its staging folder). Call with
    the backup lock held: no other backup is writing one."""
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            if name.startswith(layout.PARTIAL_PREFIX) and name.endswith(layout.PARTIAL_SUFFIX):
                path = folder / name
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def last(settings: Settings) -> Archive | None:
    """The newest backup in backup.dir (its time from its name: no archive is opened)."""
    found = archives(settings.backup_dir)
    if not found:
        return None
    created = created_of(found[0].name) or 0.0
    return Archive(found[0], layout.iso(created), created, os.lstat(found[0]).st_size)


# --- what is said about the last run ------------------------------------------------------


def read_record(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((state_dir / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(
    settings: Settings, *, done: dict[str, Any] | None, failed: dict[str, Any] | None
) -> None:
    """The run's outcome in `paths.state/backup.json`, on the login message, in the journal
    (`journalctl SANDBOX_EVENT=backup_done`). Never raises: a backup stands without them."""
    now = time.time()
    kept = read_record(settings.paths.state)
    entry = {**(done or failed or {}), "at": layout.iso(now), "at_unix": now}
    if done is not None:
        kept = {"done": entry}
    else:
        kept["failed"] = entry
    with contextlib.suppress(OSError):
        atomic_write(settings.paths.state / RECORD, json.dumps(kept), mode=0o600)
    _notice(settings, kept)
    _event(done, failed)


def _notice(settings: Settings, kept: dict[str, Any]) -> None:
    lines = ["sandbox-agent backup:"]
    failed, done = kept.get("failed"), kept.get("done")
    if failed:
        lines += [f"  LAST BACKUP FAILED at {failed['at']}: {failed.get('error')}"]
        lines += [f"    fix: {failed.get('fix') or 'run `sandbox-agent backup`'}"]
    if done:
        size = human(int(done.get("size") or 0))
        lines += [f"  last backup {done['at']} ({size}): {done.get('path')}"]
    path = settings.watch.motd.parent / NOTICE
    with contextlib.suppress(OSError):
        if path.parent.is_dir():
            text = "\n".join(log.safe_text(line) for line in lines) + "\n"
            atomic_write(path, text, mode=0o644)


def _event(done: dict[str, Any] | None, failed: dict[str, Any] | None) -> None:
    journal = systemd_client.Journal()
    try:
        if done is not None:
            message = f"backup done: {done['path']} ({human(done['size'])} in {done['seconds']}s)"
            fields = {
                "SANDBOX_EVENT": "backup_done",
                "SANDBOX_PATH": done["path"],
                "SANDBOX_SIZE": done["size"],
                "SANDBOX_SECONDS": done["seconds"],
                "SANDBOX_REASON": done.get("reason"),
            }
            level = "info"
        else:
            error = (failed or {}).get("error", "")
            message = f"backup failed: {error}"
            fields = {"SANDBOX_EVENT": "backup_failed", "SANDBOX_ERROR": error}
            level = "error"
        if not journal.send(log.safe_text(message), level, **fields):
            getattr(log.get("backup"), level)(fields["SANDBOX_EVENT"].lower(), message=message)
    finally:
        journal.close()


def human(size: int | float) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
