"""One way to end a verb: its result printed as text or JSON, and its exit code.

Exit codes: 0 ok, 1 a failed check or action, 2 bad input (nothing was changed). Expected
failures (AgentError) are printed on one line without a traceback; anything else is written
to a debug log whose path is printed.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from agent import log
from agent.cli.environment import current
from agent.errors import AgentError, ExitStatus

if TYPE_CHECKING:
    from agent.results import Result

R = TypeVar("R", bound="Result")
F = TypeVar("F", bound=Callable[..., Any])


class ToStderr(str):
    """A text line that goes to stderr (a fix under a refusal), not stdout."""


def render(result: R, as_json: bool, text: Callable[[R], Iterable[str]]) -> NoReturn:
    """Print `result` (`as_dict()` for --json, else the lines of `text`) and exit with its code."""
    if as_json:
        emit_json(result.as_dict())
    else:
        env = current()
        for line in text(result):
            env.echo(log.safe_text(line), err=isinstance(line, ToStderr))
    sys.exit(result.exit_code)


def emit_json(data: Any) -> None:
    current().echo(json.dumps(log.redact(data), indent=2, default=str))


def fail(exc: AgentError, as_json: bool) -> NoReturn:
    if as_json:
        emit_json(exc.as_dict())
    else:
        env = current()
        env.echo(f"error: {log.safe_text(exc.message)}", err=True)
        if exc.fix:
            env.echo(f"  fix: {log.safe_text(exc.fix)}", err=True)
    sys.exit(exc.exit_code)


def guarded(fn: F) -> F:
    """Map AgentError to its exit code, and any crash to a one-line message + debug log."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except AgentError as exc:
            fail(exc, as_json)
        except KeyboardInterrupt:
            current().echo("interrupted", err=True)
            sys.exit(ExitStatus.INTERRUPTED)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            path = _write_debug_log()
            fail(
                AgentError(
                    f"internal error: {type(exc).__name__}: {exc}",
                    fix=f"the traceback is in {path}; please report it",
                ),
                as_json,
            )

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature


CRASH_FOLDER = Path("/var/log/sandbox-agent")
CRASH_LOG_MAX = 1 << 20  # bytes: a crash log that grows past this starts over


def _write_debug_log() -> Path:
    """The traceback, redacted: /var/log/sandbox-agent/crash.log (0700 folder, 0600 file,
    never through a link, capped), else a private temp file of its own."""
    text = log.redact_text(traceback.format_exc()) + "\n"
    try:
        return _append_crash(CRASH_FOLDER, text)
    except OSError:
        fd, name = tempfile.mkstemp(prefix="sandbox-agent-crash-", suffix=".log")  # 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return Path(name)


def _append_crash(folder: Path, text: str) -> Path:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.is_symlink() or folder.stat().st_mode & 0o077:
        raise OSError(f"{folder} is a link or open to others")
    path = folder / "crash.log"
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if os.fstat(fd).st_size > CRASH_LOG_MAX:
            os.ftruncate(fd, 0)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return path
