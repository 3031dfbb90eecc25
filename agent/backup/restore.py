"""`sandbox-agent restore FILE`: Open WebUI's data folder replaced by a backup's, behind the
same gate as `up`, undone when the UI does not come up on it.

First, while the UI keeps serving: the archive's Open WebUI must not be newer than the one
running (its schema would not be read), and the archive is unpacked beside the data folder
and checked in full (agent.backup.unpack). Then, under the maintenance lock (the watchdog
leaves the UI alone): only the UI stops, the folders are swapped by rename (the one from
before stays aside, `<ui_data>.before-restore-<time>`), and `deploy.up` starts the UI and
gates it. Every step is in the change journal, so a restore killed at any point is put back
by the next `up` (agent.switch.recover) with nothing lost.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import deploy, maintenance
from agent.backup import layout, store, swap, unpack
from agent.errors import AgentError, BadInput
from agent.maintenance import ChangeInProgress
from agent.results import Progress, Result
from agent.settings import Settings

MARGIN = 64 << 20  # bytes left free after unpacking, beyond what the archive holds


class RestoreFailed(AgentError):
    """The UI did not come up on the restored data; the data from before was put back."""


@dataclass(frozen=True)
class RestoreResult(Result):
    archive: Path
    data: Path
    kept_aside: Path | None  # the data folder from before the restore
    open_webui: str | None  # the version the backup came from
    running: str | None  # the version it was restored into
    schema: dict[str, Any]
    databases: tuple[str, ...]
    files: int
    seconds: float
    actions: dict[str, str] = field(default_factory=dict)


def resolve(settings: Settings, given: Path) -> Path:
    """FILE as given, else a name `backup list` shows, in backup.dir."""
    candidates = [Path(os.path.abspath(given))]
    if "/" not in str(given):
        candidates.append(settings.backup_dir / given)
    for path in candidates:
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.stat(path).st_mode):
                return path
    raise BadInput(
        "FILE",
        f"{given} is not a backup file here (nor in {settings.backup_dir})",
        fix="see `sandbox-agent backup list`",
    )


def check_version(
    settings: Settings, path: Path, header: dict[str, Any]
) -> tuple[str | None, str | None]:
    """The archive's Open WebUI and the running one; refused when the archive's is newer."""
    if not isinstance(header.get("format"), int) or header["format"] > layout.FORMAT:
        raise BadInput(
            "FILE",
            f"{path.name} was written by a newer sandbox-agent (format {header.get('format')!r})",
            fix="update sandbox-agent, then restore",
        )
    ui = layout.section(header, "open_webui")
    theirs = ui.get("version") if isinstance(ui.get("version"), str) else None
    label = layout.schema_label(header)
    running, where = layout.ui_version(settings)
    if layout.newer(theirs, running):
        raise BadInput(
            "FILE",
            f"{path.name} is from Open WebUI {theirs} (schema {label}), newer than the "
            f"{running} running here (read from {where}): it would not read that schema; "
            "nothing was changed",
            fix=f"move Open WebUI to {theirs} or newer first (`sandbox-agent update "
            f"--webui-image ghcr.io/open-webui/open-webui:v{theirs}`), then restore",
        )
    return theirs, running


def _room(settings: Settings, header: dict[str, Any]) -> None:
    folder = settings.paths.ui_data.parent
    need = int(header.get("bytes") or 0) + MARGIN
    free = shutil.disk_usage(folder).free
    if free < need:
        raise AgentError(
            f"there is no room to unpack the backup beside the data folder: {store.human(free)} "
            f"free in {folder}, it needs {store.human(need)}; nothing was changed",
            fix="free space on that disk, then run the restore again",
        )


def sweep_unpacked(settings: Settings) -> None:
    """Unpacked folders a killed restore left (their archives are there). Call with the
    backup lock held."""
    live = settings.paths.ui_data
    prefix = f"{live.name}.restoring-"
    with contextlib.suppress(OSError):
        for name in os.listdir(live.parent):
            if name.startswith(prefix):
                shutil.rmtree(live.parent / name, ignore_errors=True)


def restore(
    settings: Settings,
    archive: Path,
    config: Path,
    up: deploy.UpOptions | None = None,
) -> RestoreResult:
    """The data folder from `archive`, gated; the one from before kept aside."""
    path = resolve(settings, archive)
    if not settings.ui.enabled:
        raise BadInput("ui.enabled", "is false: there is no Open WebUI to restore into")
    swap.check_swappable(settings)
    up = up or deploy.UpOptions()
    progress, started = up.progress, up.clock()
    with store.exclusive(settings.paths.state, f"restore {path.name}"):
        header = store.read_header(path)
        if header is None:
            raise unpack.Damaged(path, "its header cannot be read (not a sandbox-agent backup?)")
        theirs, running = check_version(settings, path, header)
        sweep_unpacked(settings)
        _room(settings, header)
        staging = layout.aside(settings.paths.ui_data, "restoring", time.time())
        try:
            found = unpack.unpack(path, staging, progress)
            with maintenance.hold(settings.paths.state, f"restore {path.name}"):
                pending = maintenance.journal(settings.paths.state).read()
                if pending is not None:
                    raise ChangeInProgress(
                        f"an interrupted {pending.get('kind', 'change')} is not repaired yet; "
                        "nothing was changed",
                        fix="run `sandbox-agent up` (it repairs it), then restore again",
                    )
                data, actions = _swap_and_gate(settings, staging, config, progress, up)
        finally:
            if os.path.lexists(staging):
                shutil.rmtree(staging, ignore_errors=True)
    aside = Path(str(data["aside"]))
    return RestoreResult(
        archive=path,
        data=settings.paths.ui_data,
        kept_aside=aside if os.path.lexists(aside) else None,
        open_webui=theirs,
        running=running,
        schema=layout.section(header, "schema"),
        databases=found.databases,
        files=sum(1 for f in found.manifest["files"] if f.get("kind") in ("file", "sqlite")),
        seconds=round(up.clock() - started, 1),
        actions=actions,
    )


def _said(progress: Progress) -> Progress:
    def say(line: str) -> None:
        with contextlib.suppress(OSError):
            progress(line)

    return say


def _swap_and_gate(
    settings: Settings, staging: Path, config: Path, progress: Progress, up: deploy.UpOptions
) -> tuple[dict[str, Any], dict[str, str]]:
    """Under the lock: swap, gate; every way out of the gate but its end puts it back."""
    journal = maintenance.journal(settings.paths.state)
    before = config.read_text() if config.is_file() else None

    def record(data: dict[str, Any]) -> None:
        journal.write("restore", "saved", config, before, data)

    try:
        data = swap.swap_in(settings, staging, record, progress)
    except BaseException:  # the UI would not stop, a rename failed: what moved goes back
        recorded = journal.read() or {}
        if isinstance(recorded.get("data"), dict):
            swap.put_back(settings, recorded["data"], _said(progress))
        journal.clear()
        raise
    journal.write("restore", "starting", config, before, data)
    try:
        result = deploy.up(settings, up)
    except BaseException as exc:
        say = _said(progress)
        what = exc.message if isinstance(exc, AgentError) else "interrupted"
        say("the UI did not come up on the restored data: putting the data from before back")
        kept = swap.put_back(settings, {**data, "discard": "restore-failed"}, say)
        try:
            deploy.up(settings, up.saying(say))
        except AgentError as again:
            journal.clear()
            raise RestoreFailed(
                f"{what}\nand the UI did not come back on the data from before either: "
                f"{again.message}",
                fix=again.fix,
            ) from None
        journal.clear()
        undone = "the restore was undone: the data from before serves again" + (
            f" (the restored copy is kept at {kept})" if kept else ""
        )
        if isinstance(exc, AgentError):
            raise RestoreFailed(f"{what}\n{undone}", fix=exc.fix) from None
        say(undone)
        raise
    journal.clear()
    return data, result.actions
