"""`backup`, `backup list` and `restore`: Open WebUI's data archived while it runs, listed, and
put back behind the same gate as `up`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.cli.environment import confirm, signals_raise
from agent.cli.options import (
    config_file,
    config_option,
    json_option,
    load_settings,
    progress_printer,
    up_options,
)
from agent.cli.render import guarded, render
from agent.cli.switch import yes_option

if TYPE_CHECKING:
    from agent.backup import BackupList, BackupResult, RestoreResult


@click.group(invoke_without_command=True)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the archive here instead of into backup.dir (no retention there).",
)
@click.option(
    "--with-secrets",
    is_flag=True,
    help="Put the secrets in too (API key, admin login, session key); the archive is 0600.",
)
@click.option("--daily", is_flag=True, hidden=True, help="Marks the timer's run.")
@config_option
@json_option
@click.pass_context
@guarded
def backup(
    ctx: click.Context,
    output: Path | None,
    with_secrets: bool,
    daily: bool,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Archive Open WebUI's data (chats, uploads, its databases as consistent snapshots) and
    the settings, while the UI keeps running. `backup list` shows what is kept."""
    ctx.obj = config_path  # `backup --config X list` lists X's backups
    if ctx.invoked_subcommand:
        return
    from agent import backup as backups

    settings = load_settings(config_path)
    result = backups.backup(
        settings,
        output=output,
        with_secrets=with_secrets,
        reason="daily" if daily else "manual",
        progress=progress_printer(as_json),
    )
    render(result, as_json, backup_text)


def backup_text(result: BackupResult) -> Iterator[str]:
    from agent.backup.store import human

    databases = ", ".join(d.removeprefix("data/") for d in result.databases) or "none"
    yield f"backup written: {result.path} ({human(result.size)}) in {result.seconds:.0f}s"
    version = result.open_webui.get("version") or "unknown"
    alembic = result.schema.get("alembic") or "unknown"
    yield f"  {result.files} files; databases (online snapshots): {databases}"
    yield f"  from Open WebUI {version}, schema alembic {alembic}; the archive is 0600"
    if result.with_secrets:
        yield "  it HOLDS THE SECRETS (API key, admin login, session key): keep it private"
    if result.removed:
        yield f"  removed {len(result.removed)} older backup(s) beyond backup.keep"
    for line in result.skipped:
        yield f"  left out: {line}"
    for name in result.changed:
        yield f"  changed while it was read (archived as it was at the start): {name}"


@backup.command(name="list")
@config_option
@json_option
@click.pass_context
@guarded
def list_backups(ctx: click.Context, config_path: Path | None, as_json: bool) -> None:
    """The backups in backup.dir, newest first."""
    from agent import backup as backups

    settings = load_settings(config_path or ctx.obj)
    render(backups.listing(settings), as_json, list_text)


def list_text(result: BackupList) -> Iterator[str]:
    from agent.backup.store import human

    if not result.backups:
        yield f"no backup in {result.folder} yet (`sandbox-agent backup` makes one)"
    else:
        yield f"{'CREATED (UTC)':<21} {'SIZE':>9}  {'OPEN WEBUI':<11} {'WHY':<14} FILE"
        for item in result.backups:
            why = item.reason or "-"
            if item.with_secrets:
                why += " +secrets"
            version = item.open_webui or "?" if item.readable else "UNREADABLE"
            yield (
                f"{item.created:<21} {human(item.size):>9}  {version:<11} {why:<14} "
                f"{item.path.name}"
            )
        yield f"in {result.folder}; the newest {result.keep} are kept"
    if result.failed:
        yield f"LAST BACKUP FAILED at {result.failed.get('at')}: {result.failed.get('error')}"


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@yes_option
@config_option
@json_option
@guarded
def restore(file: Path, yes: bool, config_path: Path | None, as_json: bool) -> None:
    """Put a backup's data folder in place of Open WebUI's: the archive checked first (every
    file's sha256, each database's integrity), only the UI stopped, the folder from before
    kept aside, the UI gated as `up` gates it, and the old folder back if it does not come up.
    FILE: a path, or a name `backup list` shows."""
    from agent import backup as backups

    settings = load_settings(config_path)
    confirm(yes, f"Replace the data in {settings.paths.ui_data} with the backup {file}?")
    with signals_raise():
        result = backups.restore(
            settings, file, config_file(config_path), up_options(settings, as_json)
        )
    render(result, as_json, restore_text)


def restore_text(result: RestoreResult) -> Iterator[str]:
    yield f"restored {result.archive.name} into {result.data} in {result.seconds:.0f}s"
    yield f"  from Open WebUI {result.open_webui or '?'}, running {result.running or '?'}"
    if result.kept_aside:
        yield f"  the data from before is kept at {result.kept_aside} (remove it when done)"


COMMANDS = (backup, restore)
