"""The maintenance lock: one change of the stack at a time (switch-model, update, the
bootstrap's stack step), and the watchdog stands back while one runs.

A changer holds `paths.state/maintenance.lock` with an exclusive flock for as long as it
works; the file says what it is doing. The kernel drops the lock when the holder dies (kill -9
included), so a crashed change never blocks the next one: the next changer repairs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError

LOCK = "maintenance.lock"


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


@contextlib.contextmanager
def hold(state_dir: Path, what: str) -> Iterator[Maintenance]:
    """Hold the lock while the block runs; ChangeInProgress naming the running change when
    another process holds it."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            running = _read(fd)
            raise ChangeInProgress(
                f"another change is running: {running.describe() if running else 'unknown'}",
                fix="wait for it to finish (`sandbox-agent status` shows it), then try again",
            ) from None
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
