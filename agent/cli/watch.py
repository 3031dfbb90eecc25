"""`sandbox-agent watch`: the watchdog (a systemd Type=notify service); `--install` installs
and enables its unit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.cli.options import (
    config_file,
    config_option,
    host_root,
    json_option,
    load_settings,
    systemd_env,
)
from agent.cli.render import guarded, render

if TYPE_CHECKING:
    from agent.watchdog import InstallResult, WatchResult


@click.command()
@config_option
@json_option
@click.option(
    "--install",
    is_flag=True,
    help="Install the systemd unit (ExecStart: this sandbox-agent), enable and start it.",
)
@guarded
def watch(config_path: Path | None, as_json: bool, install: bool) -> None:
    """Keep the stack healthy: restart what hangs or fails, stop crash loops, report."""
    from agent import watchdog

    settings = load_settings(config_path)  # bad settings are refused before anything moves
    if install:
        from agent.settings import DEFAULT_CONFIG

        # the file these settings came from (--config or $SANDBOX_AGENT_CONFIG): the service
        # has neither, so a file other than the default is named in its ExecStart
        config = config_file(config_path).resolve()
        result = watchdog.install_unit(config=None if config == DEFAULT_CONFIG else config)
        render(result, as_json, install_text)
    else:  # DOCKER_HOST arrives as docker.host
        # `up` may bring the stack to other settings meanwhile: the file is read again then
        watched = watchdog.watch(
            settings, systemd_env(), root=host_root(), reload=lambda: load_settings(config_path)
        )
        render(watched, as_json, watch_text)


def install_text(result: InstallResult) -> Iterator[str]:
    yield f"installed {result.unit} (ExecStart={result.exec_start}); enabled and started"
    if result.timers:
        yield f"and the daily backup: {', '.join(result.timers)} (enabled)"


def watch_text(result: WatchResult) -> Iterator[str]:
    yield f"stopped watching {result.project} after {result.seconds:.0f}s: {result.status}"
