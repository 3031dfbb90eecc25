"""What every command shares: --config/--json, loading settings, rendering, exit codes.

A command function takes the settings, calls one function of the agent and returns its
result; `render` prints it as text or JSON. Expected failures (AgentError) are printed on one
line without a traceback; anything else is written to a debug log whose path is printed.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from agent import log
from agent.errors import AgentError, BadInput

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def config_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Settings file (default: $SANDBOX_AGENT_CONFIG or /etc/sandbox-agent/config.yaml).",
    )(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(fn)


def load_settings(config_path: Path | None, flags: dict[str, Any] | None = None) -> Any:
    """The one place that hands the process environment to the settings."""
    from agent import settings

    if config_path is not None and not config_path.exists():
        raise BadInput("--config", f"{config_path} does not exist", fix="pass an existing file")
    return settings.load(config_path, env=os.environ, flags=flags)


def host_root() -> Path:
    """`/` on a box. SANDBOX_AGENT_ROOT points the host checks at a laid-out tree (tests)."""
    return Path(os.environ.get("SANDBOX_AGENT_ROOT") or "/")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(log.redact(data), indent=2, default=str))


def fail(exc: AgentError, as_json: bool) -> None:
    if as_json:
        emit_json(exc.as_dict())
    else:
        message = log.redact_text(exc.message)
        click.echo(f"error: {message}", err=True)
        if exc.fix:
            click.echo(f"  fix: {log.redact_text(exc.fix)}", err=True)
    sys.exit(exc.exit_code)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map AgentError to its exit code, and any crash to a one-line message + debug log."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except AgentError as exc:
            fail(exc, as_json)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            path = _write_debug_log()
            fail(
                AgentError(
                    f"internal error: {type(exc).__name__}: {exc}",
                    fix=f"the traceback is in {path}; please report it",
                ),
                as_json,
            )

    return wrapper


def _write_debug_log() -> Path:
    text = log.redact_text(traceback.format_exc())
    for folder in (Path("/var/log/sandbox-agent"), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "sandbox-agent-debug.log"
            with path.open("a") as fh:
                fh.write(text + "\n")
            return path
        except OSError:
            continue
    return Path("<unwritable>")
