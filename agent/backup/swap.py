"""The data folder changed only by rename, each step written in the change journal first, so a
change killed at any point (kill -9 included) is put back by the next `up` with nothing lost.

- `restore` unpacks beside the data folder, then, with only the UI stopped, renames the data
  folder aside (`<ui_data>.before-restore-<time>`: it stays there) and the unpacked one in.
- `update`, before a new Open WebUI may migrate the database, copies the quiet folder (the UI
  stopped) to `<ui_data>.before-update-<time>`: the very bytes a rollback renames back, so the
  old image finds its own schema; the copy goes once the update is done.
- `put_back` undoes either: the folder in use is renamed aside (`.failed-update-<time>`,
  `.restore-interrupted-<time>`: never deleted) and the one from before renamed back.

A journal's `data` names the folders: live (paths.ui_data), aside (the one from before, once
it is there), staged (restore's unpacked folder), discard (what the live one is renamed to).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import engine, log, stack
from agent.backup import layout
from agent.errors import AgentError
from agent.files import fsync_dir
from agent.results import Progress, quiet
from agent.settings import Settings

Record = Callable[[dict[str, Any]], None]  # writes the journal with these folders
COPYING = ".copying"  # suffix of keep_copy's folder until it is whole
MARGIN = 64 << 20  # bytes left free beyond the copy


def check_swappable(settings: Settings) -> None:
    """The data folder can be renamed: not a mount point (a volume mounted there cannot be)."""
    live = settings.paths.ui_data
    if live.is_dir() and os.path.ismount(live):
        raise AgentError(
            f"{live} (paths.ui_data) is a mount point, which cannot be renamed aside; nothing "
            "was changed",
            fix=f"keep the data in a folder inside the volume (e.g. {live}/open-webui as "
            "UI_DATA_DIR, its content moved there), then run this again",
        )


def stop_ui(settings: Settings) -> None:
    """Only the UI stops (its container kept); nothing writes the folder after this."""
    client = engine.connect(settings.docker.host)
    stack.stop(client, settings.project, stack.UI)


def swap_in(
    settings: Settings, staged: Path, record: Record, progress: Progress = quiet
) -> dict[str, Any]:
    """The unpacked folder becomes the data folder; the one from before goes aside."""
    live = settings.paths.ui_data
    aside = layout.aside(live, "before-restore", time.time())
    data = {
        "live": str(live),
        "aside": str(aside),
        "staged": str(staged),
        "discard": "restore-interrupted",
    }
    record(data)
    stop_ui(settings)
    if os.path.lexists(live):
        progress(f"the data folder from before goes aside: {aside}")
        os.rename(live, aside)
    os.rename(staged, live)
    fsync_dir(live.parent)
    return data


def check_room_for_copy(settings: Settings) -> None:
    """An update copies the data folder beside it: refused before anything changes when the
    disk has no room for the copy."""
    live = settings.paths.ui_data
    size = sum(os.lstat(Path(d) / f).st_size for d, _, files in os.walk(live) for f in files)
    free = shutil.disk_usage(live.parent).free
    if free < size + MARGIN:
        raise AgentError(
            f"there is no room beside {live} for the copy an update keeps of it until the new "
            f"Open WebUI is up ({free // 1_000_000} MB free, the folder holds "
            f"{size // 1_000_000} MB); nothing was changed",
            fix=f"free space on the disk of {live.parent}, then run the update again",
        )


def _sweep_copies(live: Path) -> None:
    """Copies an update left when it was killed after its end (the journal cleared, the copy
    not yet removed). Call under the maintenance lock, after the repair: none is in use."""
    prefix = f"{live.name}.before-update-"
    with contextlib.suppress(OSError):
        for name in os.listdir(live.parent):
            if name.startswith(prefix):
                shutil.rmtree(live.parent / name, ignore_errors=True)


def keep_copy(settings: Settings, record: Record, progress: Progress = quiet) -> dict[str, Any]:
    """A copy of the quiet data folder (the UI stopped) beside it, for a rollback to rename
    back. The journal names it before the copy begins; it is only there once it is whole."""
    live = settings.paths.ui_data
    _sweep_copies(live)
    aside = layout.aside(live, "before-update", time.time())
    data = {"live": str(live), "aside": str(aside), "discard": "failed-update"}
    record(data)
    stop_ui(settings)
    partial = aside.with_name(aside.name + COPYING)
    progress(f"copying the data folder while the UI is stopped: {aside}")
    try:
        copy_tree(live, partial)
        os.rename(partial, aside)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise AgentError(
            f"the data folder could not be copied aside before the new Open WebUI starts: "
            f"{exc.strerror} ({exc.filename or partial})",
            fix=f"free space beside {live} (the copy needs as much as the folder holds), "
            "then run the update again",
        ) from None
    fsync_dir(live.parent)
    return data


def put_back(settings: Settings, data: dict[str, Any], progress: Progress = quiet) -> Path | None:
    """The data folder from before the change that wrote `data`, back in place (the UI
    stopped first). The folder that was in use is renamed aside, never deleted: returns
    where it went (None: nothing was swapped yet, the data folder is the one from before)."""
    live, aside = Path(str(data["live"])), Path(str(data["aside"]))
    staged = Path(str(data["staged"])) if data.get("staged") else None
    kept = None
    if os.path.lexists(aside):
        stop_ui(settings)
        if os.path.lexists(live):
            kept = layout.aside(live, str(data.get("discard") or "replaced"), time.time())
            os.rename(live, kept)
            progress(f"the data folder in use goes aside: {kept}")
        os.rename(aside, live)
        fsync_dir(live.parent)
        progress(f"the data folder from before is back: {live}")
        log.get("backup").warning("data.put_back", live=str(live), aside=str(aside))
    # what never got in: restore's unpacked copy (its archive is there), a half copy
    for left in (staged, aside.with_name(aside.name + COPYING)):
        if left is not None and os.path.lexists(left):
            shutil.rmtree(left, ignore_errors=True)
    return kept


def drop_copy(data: dict[str, Any]) -> None:
    """The update went through: its copy from before goes (the backup taken before it
    stays). Call after the journal is cleared: a journal naming a missing copy would make a
    repair leave the migrated folder in place under the old image."""
    shutil.rmtree(Path(str(data["aside"])), ignore_errors=True)


def copy_tree(source: Path, dest: Path) -> None:
    """`source` copied to `dest` (which must not exist): files fsync'd, links as links, modes,
    owners and times kept (folders' last, deepest first); nothing followed."""
    os.mkdir(dest, 0o700)
    folders: list[tuple[Path, os.stat_result]] = [(dest, os.lstat(source))]
    for dirpath, dirnames, filenames in os.walk(source):
        here = Path(dirpath)
        there = dest / here.relative_to(source)
        for name in sorted(dirnames + filenames):
            src, dst = here / name, there / name
            info = os.lstat(src)
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(src), dst)
                if name in dirnames:
                    dirnames.remove(name)
                _copy_meta(dst, info)
            elif stat.S_ISDIR(info.st_mode):
                os.mkdir(dst, 0o700)
                folders.append((dst, info))
            elif stat.S_ISREG(info.st_mode):
                _copy_file(src, dst)
                _copy_meta(dst, info)
    for folder, info in reversed(folders):
        fsync_dir(folder)
        _copy_meta(folder, info)


def _copy_file(src: Path, dst: Path) -> None:
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fout = os.open(dst, flags, 0o600)
        try:
            while chunk := os.read(fin, 1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fout, view) :]
            os.fsync(fout)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _copy_meta(path: Path, info: os.stat_result) -> None:
    os.chown(path, info.st_uid, info.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(info.st_mode):
        os.chmod(path, stat.S_IMODE(info.st_mode))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
