"""Files written so that a crash never leaves half of one behind, and never through a link.

Every write goes to a temp file of a random name created in the target's folder (O_EXCL: a
link planted there is never opened), then is renamed over the target: a link at the target
itself is replaced, its own target untouched. The backup of the previous file is made the same
way, from the old file opened without following a link.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

MAX_BACKUP = 16 << 20  # bytes: the files we back up are settings, never this large
PACKAGE = Path(__file__).resolve().parent  # agent/


def packaged(folder: str, name: str) -> Path | None:
    """A data file shipped with the agent: `folder/name` inside the installed package (the
    wheel maps the top-level compose/ and systemd/ to agent/compose/ and agent/systemd/),
    else beside agent/ in a checkout; None when neither has it."""
    for place in (PACKAGE / folder, PACKAGE.parent / folder):
        if (place / name).is_file():
            return place / name
    return None


def atomic_write(
    path: Path, data: bytes | str, *, mode: int = 0o644, keep_backup: bool = False
) -> None:
    """Write `data` to `path`: temp file in the same folder, fsync, rename.

    With `keep_backup`, the previous file is kept as `<path>.bak` first (written the same
    way, mode no wider than either the old file's or `mode`). A previous `path` that is not a
    regular file (a link, a FIFO) is not read: no backup is made of it, and it is replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    if keep_backup:
        old = _read_regular(path)
        if old is not None:
            content, old_mode = old
            _replace(path.with_name(path.name + ".bak"), content, mode & old_mode)
    _replace(path, raw, mode)


def _replace(path: Path, raw: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _read_regular(path: Path) -> tuple[bytes, int] | None:
    """The content and permission bits of `path` when it is a regular file; None when it is
    missing, a link (never followed) or anything else (a FIFO would block a plain open)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None  # missing, or a link (ELOOP)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BACKUP:
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks), stat.S_IMODE(info.st_mode)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """A folder's entries made durable (after a rename in it)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
