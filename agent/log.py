"""structlog, configured once.

On a terminal: readable console lines. Otherwise one JSON object per line on stderr, which
journald stores verbatim when we run under systemd (JOURNAL_STREAM), so `journalctl -o cat`
piped to `jq` reads every event; the watchdog adds native journal fields through
agent.systemd_client. JSON lines need no library and read the same in CI, in a container log and
in the journal.

A processor redacts secrets wherever they appear: values of secret-looking keys, every value
registered with `register_secret`, and token shapes (hf_..., Bearer ...) in any text.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

REDACTED = "[REDACTED]"
_SECRET_KEYS = re.compile(
    r"(token|secret|password|passwd|api[_-]?key|authorization|credential)", re.I
)
_SECRET_SHAPES = re.compile(
    r"(hf_[A-Za-z0-9]{20,})|((?<=Bearer )[A-Za-z0-9._~+/=-]{8,})|((?<=--api-key[ =])\S+)"
)
_known: set[str] = set()
_lock = threading.Lock()
_configured = False


def register_secret(value: str | None) -> None:
    """Every later log line has this value replaced, wherever it appears."""
    if value and len(value) >= 6:
        with _lock:
            _known.add(value)


def redact_text(text: str) -> str:
    for value in sorted(_known, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    return _SECRET_SHAPES.sub(REDACTED, text)


# A terminal escape sequence whole (CSI `ESC [ ... final`, OSC/DCS/APC/PM `ESC ] ... BEL|ST`,
# two-byte `ESC x`), then any control character left: C0 but tab and newline, DEL, C1, and
# the Unicode controls that reorder or hide text (bidi overrides, zero-width characters).
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b[\]PX^_][^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)


def safe_text(text: object) -> str:
    """What may be shown to people: the MOTD, the console, the StackScript's log, a status
    file. Every secret redacted and every control character or escape sequence removed
    (a registry's error can carry `ESC ] 0 ; ... BEL`); tabs and newlines stay."""
    return redact_text(_ESCAPES.sub("", str(text)))  # a secret split by an escape is found


def redact_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """A byte stream (a container's log) redacted line by line: a secret split across two
    chunks is still found. What follows the last newline comes out when the stream ends."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if lines:
            text = "\n".join(redact_text(line.decode(errors="replace")) for line in lines)
            yield (text + "\n").encode()
        if len(pending) > 1 << 20:  # no newline for a MiB: a line is not a file
            yield redact_text(pending.decode(errors="replace")).encode()
            pending = b""
    if pending:
        yield redact_text(pending.decode(errors="replace")).encode()


def redact(value: Any, key: str = "") -> Any:
    if key and _SECRET_KEYS.search(key) and value not in (None, "", False):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        # An argv: the item after a secret-looking flag (--api-key KEY) is a secret too.
        out = []
        for i, item in enumerate(value):
            prev = value[i - 1] if i else None
            flag = isinstance(prev, str) and prev.startswith("-") and _SECRET_KEYS.search(prev)
            out.append(REDACTED if flag and isinstance(item, str) else redact(item))
        return type(value)(out)
    return value


def _redact_processor(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> Mapping[str, Any]:
    return {k: (v if k in ("level", "timestamp") else _shown(v, k)) for k, v in event.items()}


def _shown(value: Any, key: str) -> Any:
    """An event's value redacted; a text value also loses its escape sequences (a terminal
    prints the console renderer's lines as they are)."""
    found = redact(value, key)
    return _ESCAPES.sub("", found) if isinstance(found, str) else found


def configure(*, verbose: bool = False, stream: Any = None) -> None:
    """Set up structlog for this process. Later calls change the level only."""
    global _configured
    import structlog  # here, not at import: `--help` need not pay for it (and asyncio)

    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    # A person at a terminal reads the command's own progress lines; info events are for the
    # journal and pipes. -v shows everything.
    level = logging.DEBUG if verbose else logging.WARNING if tty else logging.INFO
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if tty else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get(name: str = "agent") -> Any:
    if not _configured:
        configure()
    import structlog

    return structlog.get_logger(name)
