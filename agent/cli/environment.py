"""What a verb reads of the world besides its arguments, in one object (httpie's
`Environment`): the process environment, the three streams, and whether they are terminals.

`main` hands the process's own to every verb through click's context object; a test hands
another (`main.main(args, obj=Environment(environ={...}, stdin=..., ...))`, or CliRunner's
`invoke(..., obj=...)`) and the verb sees that world, not the test runner's. Nothing else in
the agent reads `os.environ` or the standard streams for a verb (tests/unit/test_house.py).
Here too: the two things a change needs of its terminal, a confirmation and signals that
raise, so its rollback runs on every way out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import TextIO

import click

from agent.errors import BadInput


def _stdin() -> TextIO:
    return sys.stdin


def _stdout() -> TextIO:
    return sys.stdout


def _stderr() -> TextIO:
    return sys.stderr


@dataclass(frozen=True)
class Environment:
    """The process's own by default, read when made (CliRunner swaps the streams per call)."""

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    stdin: TextIO = field(default_factory=_stdin)
    stdout: TextIO = field(default_factory=_stdout)
    stderr: TextIO = field(default_factory=_stderr)

    @property
    def stdin_isatty(self) -> bool:
        return _isatty(self.stdin)

    @property
    def stdout_isatty(self) -> bool:
        return _isatty(self.stdout)

    def get(self, name: str) -> str | None:
        """A variable's value, None when unset or empty (an empty UDF means "not given")."""
        return self.environ.get(name) or None

    def echo(self, text: str, err: bool = False) -> None:
        click.echo(text, file=self.stderr if err else self.stdout)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or stand-in stream
        return False


def current() -> Environment:
    """The verb's environment: the one in click's context (`main` puts it there; a test may put
    another), else the process's own (a verb's function called outside click)."""
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(Environment) if ctx is not None else None
    return found if found is not None else Environment()


def confirm(yes: bool, question: str) -> None:
    """A change goes ahead with --yes, or when a person at a terminal says yes; otherwise it
    is refused (exit 2) and nothing was changed."""
    if yes:
        return
    env = current()
    if not env.stdin_isatty:
        raise BadInput("--yes", "this changes the running stack", fix="pass --yes to confirm")
    env.stdout.write(f"{question} [y/N]: ")
    env.stdout.flush()
    if env.stdin.readline().strip().lower() not in ("y", "yes"):
        raise BadInput("--yes", "not confirmed; nothing was changed")


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM (systemctl, kill) and SIGHUP (the ssh session closed) raise SystemExit while
    a change runs, as Ctrl-C raises KeyboardInterrupt: its rollback runs on every way out.
    A signal this process was started ignoring (`nohup`) stays ignored."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {
        sig: signal.signal(sig, stop)
        for sig in (signal.SIGTERM, signal.SIGHUP)
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
