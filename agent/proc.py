"""The one way the agent runs a program.

argv only (never a shell); a timeout kills the child's whole process group; a failure raises
`CommandFailed` carrying the command, exit code, stdout and stderr. Tests swap the runner
(`set_runner`) for a table of canned answers where no real peer can exist (apt on Ubuntu,
systemctl, reboot), and an autouse guard makes any other real command fail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agent import log
from agent.errors import AgentError


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float = 0.0


class CommandFailed(AgentError):
    def __init__(self, result: Completed, *, fix: str | None = None) -> None:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        super().__init__(
            f"`{_show(result.argv)}` exited with {result.returncode}: " + " | ".join(tail),
            fix=fix,
        )
        self.result = result
        self.argv = result.argv
        self.returncode = result.returncode
        self.stdout = result.stdout
        self.stderr = result.stderr


class CommandTimeout(AgentError):
    def __init__(self, argv: Sequence[str], timeout: float, stdout: str, stderr: str) -> None:
        super().__init__(f"`{_show(argv)}` did not finish within {timeout:g}s and was killed")
        self.argv = tuple(argv)
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr


class CommandNotFound(AgentError):
    def __init__(self, argv: Sequence[str]) -> None:
        super().__init__(f"`{argv[0]}` is not installed on this machine")
        self.argv = tuple(argv)


Runner = Callable[..., Completed]


def _real_run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    cwd: str | None = None,
) -> Completed:
    start = time.monotonic()
    try:
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,  # its own process group, so a timeout kills grandchildren too
        )
    except FileNotFoundError:
        raise CommandNotFound(argv) from None
    try:
        out, err = child.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        raise CommandTimeout(argv, timeout, out, err) from None
    return Completed(tuple(argv), child.returncode, out, err, time.monotonic() - start)


_runner: Runner = _real_run


def set_runner(runner: Runner | None) -> Runner:
    """Replace the runner (tests only); None restores the real one. Returns the previous."""
    global _runner
    previous = _runner
    _runner = runner or _real_run
    return previous


def run(
    argv: Sequence[str],
    *,
    timeout: float = 60,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    cwd: str | None = None,
    fix: str | None = None,
) -> Completed:
    if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
        raise TypeError("proc.run takes a non-empty list of strings, never a shell line")
    logger = log.get("proc")
    logger.debug("command.start", argv=list(argv), timeout=timeout)
    result = _runner(argv, timeout=timeout, env=env, input=input, cwd=cwd)
    logger.debug(
        "command.end", argv=list(argv), rc=result.returncode, seconds=round(result.seconds, 3)
    )
    if check and result.returncode != 0:
        raise CommandFailed(result, fix=fix)
    return result


def _show(argv: Sequence[str]) -> str:
    return log.redact_text(" ".join(argv))
