"""Reading an archive back: unpacked into a staging folder and checked against its manifest
(the seal over the file's bytes, every member's sha256 and size, no member more or less, the
gzip stream's own CRC to its end) and every database against SQLite's `PRAGMA
integrity_check`, before anything uses it.

Nothing in an archive is trusted: a member's name must be one a backup writes (no `..`, no
absolute path, nothing under a link), only folders, files and links that stay inside are
made, nothing is ever opened through a link (O_NOFOLLOW, O_EXCL), and set-id bits are dropped.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from agent.backup import archive, layout, sealed
from agent.errors import AgentError, BadInput

CHUNK = 1 << 20
READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeError)
HEADER_KEYS = ("format", "created", "reason", "source", "open_webui", "schema", "with_secrets")


class Damaged(BadInput):
    """The archive is not what its backup wrote: refused, nothing changed (exit 2)."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(
            "FILE",
            f"{path} is damaged: {why}; nothing was changed",
            fix="restore another backup (`sandbox-agent backup list`)",
        )


class _Disk(Exception):
    def __init__(self, exc: OSError) -> None:
        self.exc = exc


@dataclass(frozen=True)
class Unpacked:
    folder: Path  # the data folder, as it was backed up
    manifest: dict[str, Any]
    databases: tuple[str, ...]


def _data_name(name: str) -> str | None:
    """`data/uploads/x` -> `uploads/x`; None for a name a backup never writes."""
    if "\0" in name or "\\" in name:
        return None
    parts = PurePosixPath(name).parts
    if len(parts) < 2 or parts[0] != layout.DATA or any(p in ("", ".", "..") for p in parts):
        return None
    return "/".join(parts[1:]) if not name.startswith("/") else None


def _open_new(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def _copy(source: IO[bytes], size: int, dest: int | None) -> str:
    """`size` bytes from `source` (to `dest` when given); their sha256."""
    digest, left = hashlib.sha256(), size
    while left:
        chunk = source.read(min(CHUNK, left))
        if not chunk:
            raise tarfile.ReadError("unexpected end of a member")
        digest.update(chunk)
        left -= len(chunk)
        if dest is not None:
            try:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dest, view) :]
            except OSError as exc:
                raise _Disk(exc) from None
    return digest.hexdigest()


class _Reader:
    def __init__(self, path: Path, into: Path) -> None:
        self.path, self.into = path, into
        self.header: dict[str, Any] | None = None
        self.manifest: dict[str, Any] | None = None
        self.seen: list[dict[str, Any]] = []
        self.dirs: list[tuple[Path, tarfile.TarInfo]] = [(into, _root_info())]
        self.files: list[tuple[Path, tarfile.TarInfo]] = []
        self.links: list[tuple[Path, str, tarfile.TarInfo]] = []
        self.made: set[str] = {""}  # folders made so far (relative)

    def damaged(self, why: str) -> Damaged:
        return Damaged(self.path, why)

    def member(self, tar: tarfile.TarFile, entry: tarfile.TarInfo) -> None:
        if self.manifest is not None:
            raise self.damaged(f"{entry.name!r} comes after the manifest")
        if self.header is None:
            if entry.name != layout.HEADER:
                raise self.damaged("it does not begin with a sandbox-agent backup header")
            self.header = self._json(tar, entry)
            return
        if entry.name == layout.MANIFEST:
            self.manifest = self._json(tar, entry)
            return
        if entry.name == layout.SETTINGS_MEMBER or _extra(entry.name):
            self._skip(tar, entry, "settings" if entry.name == layout.SETTINGS_MEMBER else "secret")
            return
        rel = _data_name(entry.name)
        if rel is None:
            raise self.damaged(f"it holds {entry.name[:80]!r}, a name no backup writes")
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        if parent not in self.made:
            raise self.damaged(
                f"{entry.name[:80]!r} comes before its folder (or lies under a link)"
            )
        target = self.into / rel
        if entry.isdir():
            try:
                os.mkdir(target, 0o700)
            except FileExistsError:
                raise self.damaged(f"{entry.name[:80]!r} appears twice") from None
            except OSError as exc:
                raise _Disk(exc) from None
            self.made.add(rel)
            self.dirs.append((target, entry))
            self.seen.append({"path": entry.name, "kind": "dir"})
        elif entry.isreg():
            try:
                fd = _open_new(target)
            except FileExistsError:
                raise self.damaged(f"{entry.name[:80]!r} appears twice") from None
            except OSError as exc:
                raise _Disk(exc) from None
            try:
                source = tar.extractfile(entry)
                assert source is not None
                digest = _copy(source, entry.size, fd)
            finally:
                os.close(fd)
            self.files.append((target, entry))
            self.seen.append(
                {"path": entry.name, "kind": "file", "size": entry.size, "sha256": digest}
            )
        elif entry.issym():
            if not archive._stays_inside(rel, entry.linkname):
                raise self.damaged(f"{entry.name[:80]!r} is a link out of the folder")
            self.links.append((target, entry.linkname, entry))
            self.seen.append({"path": entry.name, "kind": "link", "target": entry.linkname})
        else:
            raise self.damaged(f"{entry.name[:80]!r} is of a kind no backup writes")

    def _json(self, tar: tarfile.TarFile, entry: tarfile.TarInfo) -> dict[str, Any]:
        if not entry.isreg() or entry.size > 64 << 20:
            raise self.damaged(f"its {entry.name} is not a file of JSON")
        source = tar.extractfile(entry)
        assert source is not None
        raw = source.read(entry.size)
        try:
            data = json.loads(raw)
        except ValueError:
            raise self.damaged(f"its {entry.name} is not valid JSON") from None
        if not isinstance(data, dict):
            raise self.damaged(f"its {entry.name} is not a JSON object")
        return data

    def _skip(self, tar: tarfile.TarFile, entry: tarfile.TarInfo, kind: str) -> None:
        """A member a restore does not write (the settings, the secrets): hashed only."""
        if not entry.isreg():
            raise self.damaged(f"{entry.name[:80]!r} is not a file")
        source = tar.extractfile(entry)
        assert source is not None
        digest = _copy(source, entry.size, None)
        self.seen.append({"path": entry.name, "kind": kind, "size": entry.size, "sha256": digest})


def _extra(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return len(parts) == 2 and parts[0] == layout.SECRETS and parts[1] not in (".", "..")


def _root_info() -> tarfile.TarInfo:
    entry = tarfile.TarInfo(".")
    entry.type, entry.mode, entry.uid, entry.gid, entry.mtime = tarfile.DIRTYPE, 0o755, 0, 0, 0
    return entry


def read_archive(path: Path, into: Path) -> _Reader:
    """Every member of `path` unpacked under `into` (made here, 0700 until the end)."""
    reader = _Reader(path, into)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise BadInput("FILE", f"{path} cannot be opened: {exc.strerror}") from None
    try:
        os.mkdir(into, 0o700)
    except OSError as exc:
        os.close(fd)
        raise _Disk(exc) from None
    with os.fdopen(fd, "rb") as raw:
        try:
            verified = sealed.Verified(raw)
            with gzip.GzipFile(fileobj=verified, mode="rb") as gz:  # type: ignore[call-overload]
                with tarfile.open(fileobj=gz, mode="r|") as tar:
                    for entry in tar:
                        reader.member(tar, entry)
                while gz.read(CHUNK):  # to the end: the gzip trailer's CRC and length
                    pass
            verified.check()
        except sealed.SealBroken as exc:
            raise reader.damaged(str(exc)) from None
        except READ_ERRORS as exc:
            raise reader.damaged(
                f"it cannot be read to its end ({type(exc).__name__}: {exc})"
            ) from None
    return reader


def _compare(reader: _Reader) -> dict[str, Any]:
    header, manifest = reader.header, reader.manifest
    if header is None or manifest is None:
        raise reader.damaged("its manifest is missing (the archive was cut short)")
    for key in HEADER_KEYS:
        if header.get(key) != manifest.get(key):
            raise reader.damaged(f"its header and its manifest disagree on {key}")
    listed = manifest.get("files")
    if not isinstance(listed, list) or not all(isinstance(f, dict) for f in listed):
        raise reader.damaged("its manifest lists no files")
    for want, got in zip(listed, reader.seen, strict=False):
        if not _matches(want, got):
            what = "entry" if want.get("path") == got["path"] else "place"
            raise reader.damaged(f"{got['path'][:80]} does not match its {what} in the manifest")
    if len(listed) != len(reader.seen):
        raise reader.damaged("its members and its manifest's list differ in number")
    return manifest


FILE_KINDS = ("file", "sqlite", "settings", "secret")


def _matches(want: dict[str, Any], got: dict[str, Any]) -> bool:
    """A member as the manifest lists it: same path, kind, and size and sha256 (or target)."""
    if want.get("path") != got["path"]:
        return False
    if got["kind"] in ("dir", "link"):
        return want.get("kind") == got["kind"] and want.get("target") == got.get("target")
    return (
        want.get("kind") in FILE_KINDS
        and want.get("size") == got["size"]
        and want.get("sha256") == got["sha256"]
    )


def _finish(reader: _Reader) -> None:
    """Links made, then every file's and folder's mode (no set-id bits), owner and time."""
    try:
        for target, link, _ in reader.links:
            os.symlink(link, target)
        for target, entry in reader.files + reader.dirs[::-1]:
            os.chown(target, entry.uid, entry.gid, follow_symlinks=False)
            os.chmod(target, entry.mode & 0o777)
            os.utime(target, (entry.mtime, entry.mtime), follow_symlinks=False)
    except OSError as exc:
        raise _Disk(exc) from None


def unpack(path: Path, into: Path, say: Callable[[str], None]) -> Unpacked:
    """The archive's data folder at `into`, checked. Damaged (exit 2) when it is not what its
    backup wrote; an AgentError (exit 1) when the disk refuses it. `into` is left for the
    caller to remove on failure."""
    say(f"checking {path.name}: every file against its manifest")
    try:
        reader = read_archive(path, into)
        manifest = _compare(reader)
        _finish(reader)
    except _Disk as disk:
        exc = disk.exc
        raise AgentError(
            f"{path.name} could not be unpacked beside the data folder: {exc.strerror} "
            f"({exc.filename or into}); nothing was changed",
            fix="free space on that disk, then run the restore again",
        ) from None
    listed = {f["path"] for f in manifest["files"] if f.get("kind") == "sqlite"}
    found = {
        f"{layout.DATA}/{target.relative_to(into).as_posix()}"
        for target, _ in reader.files
        if layout.is_sqlite(target)
    }
    databases = tuple(sorted(listed | found))
    for name in databases:
        say(f"checking {name}: SQLite's integrity_check")
        verdict = archive.integrity(into / name[len(layout.DATA) + 1 :])
        if verdict != "ok":
            raise Damaged(path, f"its {name} fails SQLite's integrity_check ({verdict})")
    return Unpacked(into, manifest, databases)
