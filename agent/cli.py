"""sandbox-agent's commands: parse, call one function, render its result. Nothing else.

Exit codes: 0 ok, 1 a failed check or action, 2 bad input (nothing was changed).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from agent import __version__, log
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

MARKS = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sandbox-agent")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
def main(verbose: bool) -> None:
    """Turn a GPU box into a private vLLM + Open WebUI stack, and keep it healthy."""
    if verbose:
        log.configure(verbose=True)


@main.command()
@config_option
@json_option
@guarded
def doctor(config_path: Path | None, as_json: bool) -> None:
    """Check the box: every check with its status, reason and fix."""
    from agent import doctor as doctor_mod

    settings = load_settings(config_path)
    report = doctor_mod.run(settings, root=host_root())
    if as_json:
        emit_json(report.as_dict())
    else:
        render_doctor(report)
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)


def render_doctor(report: Any) -> None:
    width = max(len(c.id) for c in report.checks)
    for check in report.checks:
        click.echo(f"{MARKS[check.status]:>4}  {check.id:<{width}}  {check.summary}")
        if check.status in ("warn", "fail"):
            if check.detail:
                click.echo(f"{'':>4}  {'':<{width}}  why: {check.detail}")
            if check.fix:
                click.echo(f"{'':>4}  {'':<{width}}  fix: {check.fix}")
    for gpu in report.gpus:
        mem = gpu.get("memory_total") or 0
        state = "LOST" if gpu.get("lost") else f"{mem / 1024**3:.0f} GiB"
        click.echo(
            f"gpu {gpu.get('index')}: {gpu.get('name') or '?'} {gpu.get('uuid') or ''} {state}"
        )
    failed = sum(c.status == "fail" for c in report.checks)
    warned = sum(c.status == "warn" for c in report.checks)
    click.echo(f"\n{'healthy' if not failed else f'{failed} failed'}, {warned} warning(s)")


def _register() -> None:
    from agent.cli_model import model
    from agent.cli_stack import register

    main.add_command(model)
    register(main)


_register()

if __name__ == "__main__":
    main()
