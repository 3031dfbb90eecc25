"""The stack's verbs: `up`, `down`, `status`, `logs`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from agent.cli.environment import current
from agent.cli.options import (
    config_file,
    config_option,
    json_option,
    load_settings,
    progress_printer,
    reloader,
    up_options,
)
from agent.cli.render import guarded, render
from agent.errors import BadInput

if TYPE_CHECKING:
    from agent.deploy import DeployResult, DownResult
    from agent.stack import StackStatus
    from agent.stack.observe import DoorStatus


@click.command()
@config_option
@json_option
@click.option(
    "--template",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A compose template to render instead of the one shipped with the agent.",
)
@guarded
def up(config_path: Path | None, as_json: bool, template: Path | None) -> None:
    """Render the stack, start what is missing or changed, and wait until it answers."""
    from agent import switch

    settings = load_settings(config_path)
    options = up_options(settings, as_json, template)
    result = switch.up(settings, config_file(config_path), reloader(config_path), options)
    render(result, as_json, up_text)


def up_text(result: DeployResult) -> Iterator[str]:
    yield f"\nready in {result.seconds:.0f}s"
    yield f"  API:  {result.api_url}  model {result.model!r}; key in {result.key_file}"
    if result.ui_url:
        yield f"  chat: {result.ui_url}  admin sign-in in {result.admin_login_file}"
    if any(url.startswith("https://") for url in (result.api_url, result.ui_url or "")):
        yield "  https: Caddy obtains the certificate by itself; `sandbox-agent status` shows it"
    yield f"  compose file: {result.compose_file}"


@click.command()
@config_option
@json_option
@guarded
def down(config_path: Path | None, as_json: bool) -> None:
    """Stop and remove the stack's containers and network. Models and chat history stay."""
    from agent import deploy

    result = deploy.down(load_settings(config_path), progress=progress_printer(as_json))
    render(result, as_json, down_text)


def down_text(result: DownResult) -> Iterator[str]:
    if not result.removed:
        yield f"the stack {result.project} was not running"
    else:
        yield (
            f"removed {len(result.removed)} object(s); data under "
            f"{' and '.join(str(p) for p in result.kept)} is untouched"
        )


@click.command()
@config_option
@json_option
@guarded
def status(config_path: Path | None, as_json: bool) -> None:
    """Each service: state, health, ports, image, uptime."""

    from agent import overview

    render(overview.status(load_settings(config_path)), as_json, status_text)


def status_text(result: StackStatus) -> Iterator[str]:
    yield f"{'SERVICE':<12} {'STATE':<11} {'HEALTH':<10} {'UPTIME':>8}  PORTS / IMAGE"
    for s in result.services:
        yield (
            f"{s.service:<12} {s.state:<11} {s.health:<10} {_age(s.uptime_s):>8}  "
            f"{', '.join(s.ports) or '-'}  {s.image or ''}"
        )
    yield from door_text(result.door)
    if result.maintenance:
        yield f"change running: {result.maintenance} (the watchdog stands back meanwhile)"
    if result.pending_change:
        yield f"CHANGE HALF DONE: {result.pending_change['summary']}"
        yield f"  fix: {result.pending_change['fix']}"
    yield from watchdog_text(result.watchdog)
    yield from backup_text(result.backup)
    yield f"API key: {result.key_file}"
    if result.admin_login_file:
        yield f"Open WebUI admin sign-in: {result.admin_login_file}"


@click.command()
@config_option
@click.argument("service")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", default="all", show_default=True, help="Lines from the end, or 'all'.")
@guarded
def logs(config_path: Path | None, service: str, follow: bool, tail: str) -> None:
    """A service's log (vllm, open-webui, or proxy: Caddy's JSON lines)."""
    from agent import deploy
    from agent.validate import shown, whole_number

    lines = whole_number(tail)
    if tail != "all" and lines is None:
        raise BadInput(
            "--tail", f"{shown(tail)} is not a number of lines", fix="pass a number or 'all'"
        )
    count: int | Literal["all"] = "all" if lines is None else lines
    out = current().stdout.buffer
    for chunk in deploy.logs(load_settings(config_path), service, follow=follow, tail=count):
        out.write(chunk)
        out.flush()


def door_text(found: DoorStatus | None) -> Iterator[str]:
    """The front door: its name, URLs and the certificate's state."""
    from agent.stack.certificate import expiring

    if found is None:
        return
    if found.name is None:
        yield "door: no proxy runs (doctor's https.door says what faces the network)"
        return
    urls = [f"chat {found.ui_url}"] if found.ui_url else []
    urls += [f"API {found.api_url}"] if found.api_url else []
    yield f"door: {found.name}: {', '.join(urls)}"
    cert = found.certificate
    if cert is None:
        return
    if cert.state == "issued":
        failing = ": its renewal is failing" if cert.near_expiry else ""
        yield f"  certificate: from {cert.issuer}, {expiring(cert)}{failing}"
    elif cert.state == "pending":
        yield f"  certificate: none yet, Caddy is asking {cert.issuer} (it retries by itself)"
    else:
        yield f"  certificate: {cert.path} cannot be read: {cert.error}"
    if cert.error and cert.state != "unreadable":
        yield f"    Caddy's last error ({cert.error_at or 'time unknown'}): {cert.error}"
    if found.fix:
        yield f"    fix: {found.fix}"


def watchdog_text(found: dict[str, Any] | None) -> Iterator[str]:
    if found is None:
        yield "watchdog: never ran (`sandbox-agent watch --install` installs it)"
        return
    head = f"watchdog: pid {found['pid']}, last seen {_age(found['updated_s_ago'])} ago"
    if found.get("maintenance"):
        head += f"; maintenance: {found['maintenance']}"
    yield head
    for name, svc in found["services"].items():
        line = f"  {name}: {svc['state'].upper() if svc['state'] == 'failed' else svc['state']}"
        line += f", {svc['restarts_last_hour']} restart(s) in the last hour"
        if svc["reason"] and svc["state"] != "healthy":
            line += f" ({svc['reason']})"
        yield line
        if svc["state"] == "failed":
            yield f"    fix: see `sandbox-agent logs {name}`, fix the cause, then run " + (
                "`sandbox-agent up`"
            )
    for note in found.get("gpu") or []:
        yield f"  GPU: {note}"


def backup_text(found: dict[str, Any] | None) -> Iterator[str]:
    """The last backup of Open WebUI's data, and the last run when it failed."""
    if found is None:
        return
    newest, failed = found.get("last"), found.get("failed")
    if newest:
        age = _age(max(0.0, time.time() - float(newest["created_unix"])))
        yield f"last backup: {newest['created']} ({age} ago): {newest['path']}"
    else:
        yield "last backup: none yet (`sandbox-agent backup` makes one)"
    if failed and (not newest or float(failed.get("at_unix") or 0) > newest["created_unix"]):
        yield f"  LAST BACKUP FAILED at {failed.get('at')}: {failed.get('error')}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


COMMANDS = (up, down, status, logs)
