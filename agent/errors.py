"""The one family of expected failures.

Every message says what happened and what to do next; the CLI prints it on one line and
exits with `exit_code` (1: a failed check or action, 2: bad input).
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Every exit code of sandbox-agent (httpie's ExitStatus, in our words)."""

    OK = 0
    FAILED = 1  # a failed check or action: the message says what to do next
    BAD_INPUT = 2  # the field is named; nothing was changed
    INTERRUPTED = 130  # Ctrl-C (SIGTERM during a change: 143, after its rollback)


class AgentError(Exception):
    """An expected failure: printed without a traceback."""

    exit_code: ExitStatus = ExitStatus.FAILED

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} ({self.fix})" if self.fix else self.message

    def as_dict(self) -> dict[str, object]:
        return {"error": self.message, "fix": self.fix, "kind": type(self).__name__}


class BadInput(AgentError):
    """Input that cannot be accepted; nothing was changed."""

    exit_code = ExitStatus.BAD_INPUT

    def __init__(self, key: str, message: str, *, fix: str | None = None) -> None:
        super().__init__(f"{key}: {message}", fix=fix)
        self.key = key
