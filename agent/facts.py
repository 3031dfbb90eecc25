"""Facts read once per command, whoever asks first: the doctor's checks and the bootstrap's
steps run side by side and share what each reads of the box (the GPU inventory, the OS
release, the engine's version).

One lock per fact: a slow read (NVML, an engine that does not answer) holds up only those who
wait for that fact, and it is read once even when several ask at the same moment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Facts:
    def __init__(self) -> None:
        self._found: dict[str, Any] = {}
        self._lock = threading.Lock()  # guards the two dicts, never held while reading
        self._locks: dict[str, threading.Lock] = {}

    def once(self, name: str, compute: Callable[[], T]) -> T:
        """`compute()` the first time anyone asks for `name`; the same answer after. A read
        that raises is not kept: the next to ask reads again."""
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            with self._lock:
                if name in self._found:
                    kept: T = self._found[name]
                    return kept
            found = compute()
            with self._lock:
                self._found[name] = found
            return found

    def known(self, name: str) -> Any | None:
        """A fact already read, or None: a report shows it, never reads it anew."""
        with self._lock:
            return self._found.get(name)

    def forget(self, name: str) -> None:
        """The next to ask reads `name` again (the box changed under it)."""
        with self._lock:
            self._found.pop(name, None)
