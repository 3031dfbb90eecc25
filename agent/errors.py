"""The one family of expected failures.

Every message says what happened and what to do next; the CLI prints it on one line and
exits with `exit_code` (1: a failed check or action, 2: bad input).
"""

from __future__ import annotations


class AgentError(Exception):
    """An expected failure: printed without a traceback."""

    exit_code = 1

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

    exit_code = 2

    def __init__(self, key: str, message: str, *, fix: str | None = None) -> None:
        super().__init__(f"{key}: {message}", fix=fix)
        self.key = key
