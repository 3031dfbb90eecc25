"""Every decision of the watchdog as one structured event: native journal fields under
systemd (`journalctl -u sandbox-agent SANDBOX_EVENT=service_restarted`), JSON lines (or
terminal lines) otherwise. The same warning is not repeated: `once` speaks on a change only.
"""

from __future__ import annotations

from typing import Any

from agent import log
from agent.systemd_client import Journal

LEVELS = {"crit": "critical", "error": "error", "warning": "warning", "notice": "info"}


class Reporter:
    def __init__(self, journal: Journal | None = None) -> None:
        self.journal = journal
        self._said: dict[str, str] = {}
        self.sent: list[dict[str, Any]] = []  # the last events, for STATUS and tests
        self._log: Any = None

    def event(self, event: str, level: str, message: str, **fields: Any) -> None:
        clean = {k: log.redact(v, k) for k, v in fields.items() if v is not None}
        message = log.safe_text(message)
        self.sent = [*self.sent[-49:], {"event": event, "level": level, **clean}]
        if self.journal is not None:
            extra = {f"SANDBOX_{k.upper()}": v for k, v in clean.items()}
            if self.journal.send(message, level, SANDBOX_EVENT=event, **extra):
                return
        if self._log is None:
            self._log = log.get("watch")
        method = getattr(self._log, LEVELS.get(level, level), self._log.info)
        method(event, message=message, **clean)

    def once(self, topic: str, key: str, event: str, level: str, message: str, **f: Any) -> None:
        """Speak only when `key` differs from what was last said about `topic`."""
        if self._said.get(topic) == key:
            return
        self._said[topic] = key
        self.event(event, level, message, **f)

    def forget(self, topic: str) -> None:
        self._said.pop(topic, None)
