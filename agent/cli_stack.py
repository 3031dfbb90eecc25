"""The stack's commands: `up`, `down`, `status`, `logs`. Registered by cli.py (`register`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from agent.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    config_option,
    emit_json,
    guarded,
    host_root,
    json_option,
    load_settings,
)


def _progress(as_json: bool) -> Any:
    # Progress lines go to stdout for a person, to stderr when stdout carries the JSON.
    return lambda line: click.echo(line, err=as_json)


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
    from agent import deploy

    settings = load_settings(config_path)
    result = deploy.up(settings, root=host_root(), template=template, progress=_progress(as_json))
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(f"\nready in {result.seconds:.0f}s")
    click.echo(f"  API:  {result.api_url}  model {result.model!r}; key in {result.key_file}")
    if result.ui_url:
        click.echo(f"  chat: {result.ui_url}  admin sign-in in {result.admin_login_file}")
    click.echo(f"  compose file: {result.compose_file}")


@click.command()
@config_option
@json_option
@guarded
def down(config_path: Path | None, as_json: bool) -> None:
    """Stop and remove the stack's containers and network. Models and chat history stay."""
    from agent import engine, stack

    settings = load_settings(config_path)
    removed = stack.down(engine.connect(), settings.project, progress=_progress(as_json))
    if as_json:
        emit_json({"project": settings.project, "removed": removed})
    elif not removed:
        click.echo(f"the stack {settings.project} was not running")
    else:
        click.echo(
            f"removed {len(removed)} object(s); data under {settings.paths.ui_data} "
            f"and {settings.paths.models} is untouched"
        )


@click.command()
@config_option
@json_option
@guarded
def status(config_path: Path | None, as_json: bool) -> None:
    """Each service: state, health, ports, image, uptime."""
    from agent import engine, secrets, stack

    settings = load_settings(config_path)
    wanted = (stack.VLLM, stack.UI) if settings.ui.enabled else (stack.VLLM,)
    services = stack.status(engine.connect(), settings.project, wanted)
    store = secrets.SecretStore(settings.paths.secrets)
    credentials = store.path(secrets.WEBUI_ADMIN) if settings.ui.enabled else None
    running = all(s.state == "running" for s in services if s.service in wanted)
    if as_json:
        emit_json(
            {
                "project": settings.project,
                "running": running,
                "services": [s.as_dict() for s in services],
                "key_file": str(store.path(secrets.API_KEY)),
                "admin_login_file": str(credentials) if credentials else None,
            }
        )
    else:
        click.echo(f"{'SERVICE':<12} {'STATE':<11} {'HEALTH':<10} {'UPTIME':>8}  PORTS / IMAGE")
        for s in services:
            click.echo(
                f"{s.service:<12} {s.state:<11} {s.health:<10} {_age(s.uptime_s):>8}  "
                f"{', '.join(s.ports) or '-'}  {s.image or ''}"
            )
        click.echo(f"API key: {store.path(secrets.API_KEY)}")
        if credentials:
            click.echo(f"Open WebUI admin sign-in: {credentials}")
    sys.exit(EXIT_OK if running else EXIT_FAILED)


@click.command()
@config_option
@click.argument("service")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", default="all", show_default=True, help="Lines from the end, or 'all'.")
@guarded
def logs(config_path: Path | None, service: str, follow: bool, tail: str) -> None:
    """A service's log (vllm or open-webui)."""
    from agent import engine, log, stack
    from agent.errors import BadInput

    if tail != "all" and not tail.isdigit():
        raise BadInput("--tail", f"{tail!r} is not a number of lines", fix="pass a number or 'all'")
    settings = load_settings(config_path)
    count: int | str = int(tail) if tail.isdigit() else "all"
    out = sys.stdout.buffer
    for chunk in stack.logs(engine.connect(), settings.project, service, follow=follow, tail=count):
        out.write(log.redact_text(chunk.decode(errors="replace")).encode())
        out.flush()


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def register(main: click.Group) -> None:
    for command in (up, down, status, logs):
        main.add_command(command)
