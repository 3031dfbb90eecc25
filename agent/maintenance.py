"""The maintenance lock and the change journal: one change of the stack at a time
(switch-model, update, up's repair, the bootstrap's run), the watchdog stands back while one
runs, and a change killed half done is seen by everyone until it is repaired.

A changer holds `paths.state/maintenance.lock` with an exclusive flock while it changes the
stack (from the settings' save to the end of the health gate: never through a download); the
file says what it is doing. The kernel drops the lock when the holder dies (kill -9 included),
so a crashed change never blocks the next one. `paths.state/change.json` is that change's
journal, from its first write to its end: the file from before it, and where it lives. A
journal with nobody holding the lock is a change that was killed half done: `status`, doctor,
the watchdog and its login message say so, and the next `up` (or change) repairs it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.files import atomic_write

LOCK = "maintenance.lock"
JOURNAL = "change.json"
HALF_DONE = ("saved", "starting")  # the journal's phases: the settings may be the new ones
RETRY_SECONDS = 0.5  # a probe (`current`) holds the lock shared for microseconds


class ChangeInProgress(AgentError):
    pass


@dataclass(frozen=True)
class Maintenance:
    what: str  # "switch-model org/name", "update", ...
    pid: int
    started: float  # wall-clock seconds, for people; never used for timing

    def describe(self) -> str:
        since = time.strftime("%H:%M:%S", time.localtime(self.started))
        return f"{self.what} (pid {self.pid}, since {since})"


def _read(fd: int) -> Maintenance | None:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        data = json.loads(os.read(fd, 4096).decode() or "null")
        return Maintenance(str(data["what"]), int(data["pid"]), float(data["started"]))
    except (ValueError, KeyError, TypeError):
        return None


def _lock(fd: int, sleep: Callable[[float], None], clock: Callable[[], float]) -> bool:
    """The exclusive lock, retried briefly: `current` takes it shared for an instant, and a
    change must not be refused for a probe. False when someone really holds it."""
    deadline = clock() + RETRY_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if clock() >= deadline:
                return False
            sleep(0.005)


@contextlib.contextmanager
def hold(
    state_dir: Path,
    what: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Maintenance]:
    """Hold the lock while the block runs; ChangeInProgress naming the running change when
    another process holds it."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if not _lock(fd, sleep, clock):
            running = _read(fd)
            raise ChangeInProgress(
                f"another change is running: {running.describe() if running else 'unknown'}",
                fix="wait for it to finish (`sandbox-agent status` shows it), then try again",
            )
        me = Maintenance(what, os.getpid(), time.time())
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(vars(me)).encode(), 0)
        try:
            yield me
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the flock


def current(state_dir: Path) -> Maintenance | None:
    """The change running now, or None. Never blocks, never takes the lock from anyone."""
    try:
        fd = os.open(state_dir / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or Maintenance("a change", 0, 0.0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# --- the change journal -------------------------------------------------------------------


@dataclass(frozen=True)
class Journal:
    """`paths.state/change.json`: written by the change holding the lock, read by anyone."""

    path: Path

    def write(
        self,
        kind: str,
        phase: str,
        config: Path,
        before: str | None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """`data`: the data folders a change moves (agent.backup.swap), for the repair."""
        # absolute: a repair may run from another folder than the change did
        record: dict[str, Any] = {
            "kind": kind,
            "phase": phase,
            "config": os.path.abspath(config),
            "before": before,
        }
        if data is not None:
            record["data"] = data
        atomic_write(self.path, json.dumps(record), mode=0o600)

    def read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def journal(state_dir: Path) -> Journal:
    return Journal(state_dir / JOURNAL)


@dataclass(frozen=True)
class PendingChange:
    """A change killed half done: its journal is there, and nobody holds the lock."""

    kind: str  # switch-model | update | restore
    config: str

    @property
    def summary(self) -> str:
        if self.kind == "restore":
            return "an interrupted restore left Open WebUI's data folder half swapped"
        return (
            f"an interrupted {self.kind} left the settings half changed: {self.config} may name "
            "what did not come up"
        )

    @property
    def fix(self) -> str:
        if self.kind == "restore":
            return (
                "run `sandbox-agent up`: it puts the data folder from before the restore back "
                "and starts the UI on it (then restore again)"
            )
        return (
            f"run `sandbox-agent up`: it puts the settings from before the {self.kind} back "
            "and brings the stack back to them"
        )


def pending(state_dir: Path) -> PendingChange | None:
    """The change that was killed half done, if any (None while one runs: it is not done)."""
    found = journal(state_dir)
    first = found.read()
    if first is None or first.get("phase") not in HALF_DONE or current(state_dir) is not None:
        return None
    if found.read() != first:  # a change ended (or began) between the two reads
        return None
    return PendingChange(str(first.get("kind") or "change"), str(first.get("config") or "?"))
