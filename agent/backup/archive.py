"""Writing an archive: one consistent snapshot of the data folder while the UI keeps running.

Every SQLite database (by name and header) is first copied with SQLite's online backup API in
one step (a read transaction: in WAL mode the UI's writers never wait for it) into a staging
folder, checked with `PRAGMA quick_check`, and archived from there; its `-wal`, `-shm` and
`-journal` never are. The rest goes in as it is, hashed while it streams into the archive; a
file that shrinks while it is read is padded (tar has announced its size) and marked
`changed`. Links stay links when they point inside the folder (the Hugging Face cache of
embedding models is made of them), and are left out otherwise, as sockets and devices are.
The gzip stream is sealed with the sha256 of its own bytes (agent.backup.sealed).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agent.backup import layout, sealed
from agent.errors import AgentError
from agent.results import Record
from agent.secrets import SecretStore
from agent.settings import Settings

CHUNK = 1 << 20
COMPRESSLEVEL = 1  # fast: chats compress well even so; uploads (PDFs, images) hardly at all
Counter = Callable[[int], None]


class SourceDamaged(AgentError):
    """A database in the data folder fails SQLite's own check: no backup of it is written."""


@dataclass(frozen=True)
class Member(Record):
    path: str  # in the archive: data/webui.db
    kind: str  # dir | file | sqlite | link | settings | secret
    size: int = 0
    sha256: str | None = None
    target: str | None = None  # a link's
    changed: bool = False  # shrank while it was read (padded with zeros)


@dataclass
class Walk:
    """What the data folder holds, in archive order."""

    dirs: list[tuple[str, os.stat_result]] = field(default_factory=list)
    files: list[tuple[str, Path, os.stat_result, bool]] = field(default_factory=list)  # sqlite?
    links: list[tuple[str, str, os.stat_result]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _raise(exc: OSError) -> None:
    raise exc


def walk(top: Path) -> Walk:
    """Every folder, file and link under `top`, sorted, nothing followed."""
    found = Walk()
    for dirpath, dirnames, filenames in os.walk(top, onerror=_raise):
        here = Path(dirpath)
        rel_here = here.relative_to(top)
        names = sorted(dirnames + filenames)
        dirnames.clear()
        databases = {n for n in names if layout.is_sqlite(here / n)}
        for name in names:
            path, rel = here / name, (rel_here / name).as_posix()
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode):
                found.dirs.append((rel, info))
                dirnames.append(name)
            elif stat.S_ISLNK(info.st_mode):
                target = os.readlink(path)
                if _stays_inside(rel, target):
                    found.links.append((rel, target, info))
                else:
                    found.skipped.append(f"{rel}: a link to {target}, outside the folder")
            elif stat.S_ISREG(info.st_mode):
                if not layout.sidecar_of(name, databases):
                    found.files.append((rel, path, info, name in databases))
            else:
                found.skipped.append(f"{rel}: not a file, folder or link")
    return found


def _stays_inside(rel: str, target: str) -> bool:
    if os.path.isabs(target):
        return False
    joined = os.path.normpath(os.path.join(os.path.dirname(rel), target))
    return not (joined == ".." or joined.startswith("../"))


def online_copy(source: Path, dest: Path) -> None:
    """`source` as one consistent snapshot at `dest`: SQLite's backup API, all pages in one
    step (a step-wise copy restarts on every write the UI makes). Opened read-write but
    query-only: a read-only connection to a WAL database leaves a `-wal` and `-shm` behind,
    which this one removes on close when it is the last (as the UI does)."""
    src = sqlite3.connect(layout.sqlite_uri(source, "rw"), uri=True, timeout=60)
    try:
        src.execute("PRAGMA query_only=1")
        out = sqlite3.connect(dest)
        try:
            src.backup(out, pages=-1)
        finally:
            out.close()
    finally:
        src.close()


def integrity(db: Path, pragma: str = "integrity_check") -> str:
    """`ok`, or what SQLite's own check says is wrong (its first lines)."""
    try:
        conn = sqlite3.connect(layout.sqlite_uri(db, "rw"), uri=True, timeout=10)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = conn.execute(f"PRAGMA {pragma}(5)").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    said = "; ".join(str(r[0]) for r in rows)
    return said[:300] if said else "no answer"


class _Exact:
    """Exactly `size` bytes of a file, hashed as they are read; padded if it shrank."""

    def __init__(self, fh: IO[bytes], size: int, count: Counter) -> None:
        self.fh, self.left, self.count = fh, size, count
        self.hash = hashlib.sha256()
        self.changed = False

    def read(self, n: int = CHUNK) -> bytes:
        want = min(n, self.left)
        data = self.fh.read(want) if want else b""
        if len(data) < want:
            self.changed = True
            data += b"\0" * (want - len(data))
        self.left -= len(data)
        self.hash.update(data)
        self.count(len(data))
        return data


def _info(name: str, info: os.stat_result, size: int = 0) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.size = size
    entry.mode = stat.S_IMODE(info.st_mode) & 0o777
    entry.uid, entry.gid = info.st_uid, info.st_gid
    entry.uname = entry.gname = ""
    entry.mtime = int(info.st_mtime)
    return entry


def _json_member(tar: tarfile.TarFile, name: str, data: dict[str, Any], mtime: float) -> None:
    raw = json.dumps(data, indent=1, sort_keys=True).encode()
    entry = tarfile.TarInfo(name)
    entry.size, entry.mode, entry.mtime = len(raw), 0o600, int(mtime)
    tar.addfile(entry, _Exact(_Bytes(raw), len(raw), lambda _: None))  # type: ignore[arg-type]


class _Bytes:
    def __init__(self, raw: bytes) -> None:
        self.raw, self.at = raw, 0

    def read(self, n: int) -> bytes:
        chunk = self.raw[self.at : self.at + n]
        self.at += len(chunk)
        return chunk


def _add_file(
    tar: tarfile.TarFile, name: str, path: Path, info: os.stat_result, kind: str, count: Counter
) -> Member:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fd).st_size if kind == "sqlite" else info.st_size
        reader = _Exact(fh, size, count)
        tar.addfile(_info(name, info, size), reader)
    return Member(name, kind, size, reader.hash.hexdigest(), changed=reader.changed)


def snapshot_databases(
    found: Walk, staging: Path, say: Callable[[str], None]
) -> tuple[dict[str, Path], layout.Schema]:
    """Each database of the walk copied into `staging` and checked; the schema of webui.db."""
    snaps: dict[str, Path] = {}
    for index, (rel, path, _, is_db) in enumerate(found.files):
        if not is_db:
            continue
        say(f"snapshot of {rel} (SQLite's online backup, the UI keeps running)")
        snap = staging / f"{index}.db"
        online_copy(path, snap)
        verdict = integrity(snap, "quick_check")
        if verdict != "ok":
            raise SourceDamaged(
                f"{rel} in the data folder is damaged (SQLite's quick_check: {verdict}); no "
                "backup was written, the earlier ones are kept",
                fix="see `sandbox-agent backup list` and restore the last good one with "
                "`sandbox-agent restore FILE`",
            )
        snaps[rel] = snap
    main = snaps.get(layout.MAIN_DB)
    return snaps, layout.read_schema(main) if main else layout.Schema(None)


def write(
    out: IO[bytes],
    settings: Settings,
    header: dict[str, Any],
    found: Walk,
    snaps: dict[str, Path],
    *,
    with_secrets: bool,
    count: Counter,
) -> dict[str, Any]:
    """The archive written to `out`; returns its manifest."""
    members: list[Member] = []
    mtime = float(header["created_unix"])
    gz = sealed.SealedWriter(out, COMPRESSLEVEL)
    with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        _json_member(tar, layout.HEADER, header, mtime)
        for rel, info in found.dirs:
            entry = _info(f"{layout.DATA}/{rel}", info)
            entry.type = tarfile.DIRTYPE
            tar.addfile(entry)
            members.append(Member(entry.name, "dir"))
        for rel, path, info, is_db in found.files:
            name, source = f"{layout.DATA}/{rel}", snaps.get(rel, path)
            members.append(_add_file(tar, name, source, info, "sqlite" if is_db else "file", count))
        for rel, target, info in found.links:
            entry = _info(f"{layout.DATA}/{rel}", info)
            entry.type, entry.linkname = tarfile.SYMTYPE, target
            tar.addfile(entry)
            members.append(Member(entry.name, "link", target=target))
        members += _extras(tar, settings, with_secrets, count)
        files = [m.as_dict() for m in members]
        manifest = {**header, "files": files, "skipped": found.skipped}
        _json_member(tar, layout.MANIFEST, manifest, mtime)
    gz.close()  # the seal: the sha256 of every other byte, in the gzip header
    return manifest


def _extras(
    tar: tarfile.TarFile, settings: Settings, with_secrets: bool, count: Counter
) -> list[Member]:
    """The settings file, and the secrets when asked for (never through a link)."""
    added: list[Member] = []
    if (
        settings.source is not None
        and settings.source.is_file()
        and not settings.source.is_symlink()
    ):
        info = os.lstat(settings.source)
        added.append(
            _add_file(tar, layout.SETTINGS_MEMBER, settings.source, info, "settings", count)
        )
    if with_secrets:
        folder = SecretStore(settings.paths.secrets).folder
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):
                name = f"{layout.SECRETS}/{path.name}"
                added.append(_add_file(tar, name, path, info, "secret", count))
    return added
