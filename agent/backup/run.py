"""`sandbox-agent backup`: the data folder as one archive, taken while the UI keeps running.

The archive is written to a temp file in its own folder, fsync'd, and only then renamed to
its name: a full disk, a crash or Ctrl-C leaves no partial archive (what a killed run left is
swept by the next one). Every archive is 0600 in a 0700 folder: chats are private even when
the secrets stay out. Then the oldest beyond `backup.keep` go, and the run is recorded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import __version__
from agent.backup import archive, layout, store
from agent.errors import AgentError, BadInput
from agent.files import fsync_dir
from agent.results import INTERNAL, Progress, Result, quiet
from agent.settings import Settings

REPORT_EVERY = 2.0  # seconds between progress lines


@dataclass(frozen=True)
class BackupResult(Result):
    path: Path
    size: int
    seconds: float
    files: int
    databases: tuple[str, ...]
    open_webui: dict[str, Any]
    schema: dict[str, Any]
    with_secrets: bool
    reason: str
    removed: tuple[Path, ...] = ()  # older backups beyond backup.keep
    skipped: tuple[str, ...] = ()
    changed: tuple[str, ...] = field(default=(), metadata=INTERNAL)  # shrank while read


class Meter:
    """Bytes archived so far, said every few seconds."""

    def __init__(self, total: int, say: Progress, clock: Callable[[], float]) -> None:
        self.total, self.say, self.clock = max(total, 1), say, clock
        self.done, self.said = 0, clock()

    def __call__(self, n: int) -> None:
        self.done += n
        if self.clock() - self.said >= REPORT_EVERY:
            self.said = self.clock()
            pct = min(100, self.done * 100 // self.total)
            self.say(f"  {pct}% ({store.human(self.done)} of {store.human(self.total)})")


def check_output(settings: Settings, output: Path | None) -> Path | None:
    """--output: a file (not a folder) in an existing folder outside the data folder."""
    if output is None:
        return None
    path = Path(os.path.abspath(output))
    if path.is_dir():
        raise BadInput(
            "--output", f"{path} is a folder", fix="give a file name, e.g. backup.tar.gz"
        )
    if not path.parent.is_dir():
        raise BadInput("--output", f"{path.parent} is not an existing folder")
    data = Path(os.path.realpath(settings.paths.ui_data))
    if Path(os.path.realpath(path.parent)).is_relative_to(data):
        raise BadInput(
            "--output",
            f"{path} is inside the data folder {settings.paths.ui_data}, which it backs up",
            fix="write it elsewhere, e.g. into backup.dir",
        )
    return path


def backup(
    settings: Settings,
    *,
    output: Path | None = None,
    with_secrets: bool = False,
    reason: str = "manual",
    progress: Progress = quiet,
    clock: Callable[[], float] = time.monotonic,
) -> BackupResult:
    """One archive of paths.ui_data (+ the settings file, + the secrets when asked)."""
    target = check_output(settings, output)
    data = settings.paths.ui_data
    if not data.is_dir() or data.is_symlink():
        raise AgentError(
            f"there is nothing to back up: {data} (paths.ui_data) is not a folder",
            fix="run `sandbox-agent up` first: Open WebUI makes it",
        )
    started = clock()
    try:
        with store.exclusive(settings.paths.state, "backup"):
            result = _take(settings, target, with_secrets, reason, progress, clock, started)
    except AgentError as exc:
        if not isinstance(exc, (store.BackupRunning, BadInput)):
            store.record(settings, done=None, failed={"error": exc.message, "fix": exc.fix})
        raise
    store.record(
        settings,
        done={
            "path": str(result.path),
            "size": result.size,
            "seconds": result.seconds,
            "reason": reason,
        },
        failed=None,
    )
    return result


def _take(
    settings: Settings,
    target: Path | None,
    with_secrets: bool,
    reason: str,
    say: Progress,
    clock: Callable[[], float],
    started: float,
) -> BackupResult:
    folder = target.parent if target else settings.backup_dir
    if target is None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
    store.sweep_partials(folder)
    now = time.time()
    version, where = layout.ui_version(settings)
    staging: Path | None = None
    fd, tmp, total = -1, "", 0
    try:
        staging = Path(
            tempfile.mkdtemp(prefix=layout.PARTIAL_PREFIX, suffix=layout.PARTIAL_SUFFIX, dir=folder)
        )
        fd, tmp = tempfile.mkstemp(
            prefix=layout.PARTIAL_PREFIX, suffix=".tar.gz" + layout.PARTIAL_SUFFIX, dir=folder
        )
        os.fchmod(fd, 0o600)
        found = archive.walk(settings.paths.ui_data)
        snaps, schema = archive.snapshot_databases(found, staging, say)
        total = sum(
            os.stat(snaps[r]).st_size if r in snaps else i.st_size for r, _, i, _ in found.files
        )
        say(f"backing up {settings.paths.ui_data}: {len(found.files)} files, {store.human(total)}")
        header = {
            "format": layout.FORMAT,
            "created": layout.iso(now),
            "created_unix": now,
            "reason": reason,
            "source": str(settings.paths.ui_data),
            "open_webui": {"version": version, "read_from": where, "image": settings.images.webui},
            "schema": schema.as_dict(),
            "with_secrets": with_secrets,
            "bytes": total,
            "agent": __version__,
        }
        with os.fdopen(fd, "wb", buffering=archive.CHUNK) as out:
            fd = -1
            manifest = archive.write(
                out,
                settings,
                header,
                found,
                snaps,
                with_secrets=with_secrets,
                count=Meter(total, say, clock),
            )
            out.flush()
            os.fsync(out.fileno())
        final = target or _free_name(folder, now)
        os.replace(tmp, final)
        fsync_dir(folder)
    except OSError as exc:
        raise _failed(exc, folder, total) from None
    except sqlite3.Error as exc:  # the snapshot of a database, written into the folder
        full = "full" in str(exc)
        raise _failed(
            OSError(errno.ENOSPC if full else errno.EIO, str(exc)), folder, total
        ) from None
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    removed = tuple(store.prune(folder, settings.backup.keep)) if target is None else ()
    files = manifest["files"]
    return BackupResult(
        path=final,
        size=os.stat(final).st_size,
        seconds=round(clock() - started, 1),
        files=sum(1 for f in files if f["kind"] in ("file", "sqlite")),
        databases=tuple(f["path"] for f in files if f["kind"] == "sqlite"),
        open_webui=layout.section(header, "open_webui"),
        schema=layout.section(header, "schema"),
        with_secrets=with_secrets,
        reason=reason,
        removed=removed,
        skipped=tuple(found.skipped),
        changed=tuple(f["path"] for f in files if f.get("changed")),
    )


def _free_name(folder: Path, now: float) -> Path:
    """The archive's name: its time, and a serial above any already taken in that second
    (even one retention removed), so the newest always sorts first."""
    stamp = layout.stamp(now)
    taken = [
        int(found.group(2) or 0)
        for name in os.listdir(folder)
        if (found := layout.ARCHIVE.match(name)) and found.group(1) == stamp
    ]
    return folder / layout.archive_name(now, max(taken) + 1 if taken else 0)


def _failed(exc: OSError, folder: Path, total: int) -> AgentError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(folder).free
        return AgentError(
            f"the backup did not fit in {folder}: no space left on the device ({store.human(free)}"
            f" free; the data folder holds {store.human(total)}); no archive was written, the "
            "earlier backups are kept",
            fix="free space there, or set backup.dir (BACKUP_DIR) to a folder on a larger disk",
        )
    what = exc.strerror or str(exc)
    return AgentError(
        f"the backup failed: {what} ({exc.filename or folder}); no archive was written",
        fix="check the folder's permissions and disk, then run `sandbox-agent backup` again",
    )
