"""Where the watchdog's news comes from, each on its own thread, into one queue:

- `EventFeed`: the engine's event stream, reconnected with backoff. The stream ends silently
  when the daemon restarts and never re-sends what was missed, so every (re)connect is
  announced (`Connected`) and the loop re-reads the containers' state.
- `ProbePool`: HTTP probes run off the loop's thread, so a probe that hangs (the very thing
  we look for) never holds up an event; each result carries the epoch it was started in.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError
from agent.stack import EventStream, StackEvent

if TYPE_CHECKING:
    from agent.engine import DockerClient


@dataclass(frozen=True)
class Connected:
    at: float


@dataclass(frozen=True)
class Disconnected:
    at: float
    reason: str


@dataclass(frozen=True)
class ProbeDone:
    service: str
    name: str  # "health", "models", "load", "canary"
    epoch: int
    result: Any  # probes.Probe or probes.EngineLoad
    at: float


News = StackEvent | Connected | Disconnected | ProbeDone


class EventFeed(threading.Thread):
    """Reads the project's events forever; `stop()` ends it."""

    def __init__(
        self,
        connect: Callable[[], DockerClient],
        project: str,
        out: queue.Queue[News],
        *,
        clock: Callable[[], float] = time.monotonic,
        first_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__(name="docker-events", daemon=True)
        self.connect, self.project, self.out, self.clock = connect, project, out, clock
        self.first_backoff, self.max_backoff = first_backoff, max_backoff
        self._stop = threading.Event()
        self._stream: EventStream | None = None

    def run(self) -> None:
        backoff = self.first_backoff
        while not self._stop.is_set():
            reason = "the event stream ended (the engine restarted or the connection dropped)"
            try:
                self._stream = EventStream(self.connect(), self.project)
                self.out.put(Connected(self.clock()))
                for event in self._stream:
                    self.out.put(event)
                    backoff = self.first_backoff
            except AgentError as exc:
                reason = exc.message
            except Exception as exc:  # noqa: BLE001 - a reader thread must never die
                reason = f"{type(exc).__name__}: {exc}"
            if self._stop.is_set():
                break
            self.out.put(Disconnected(self.clock(), reason))
            self._stop.wait(backoff)
            backoff = min(self.max_backoff, backoff * 2)

    def stop(self) -> None:
        self._stop.set()
        if self._stream is not None:
            self._stream.close()


class ProbePool:
    """Runs probes on a few threads; at most one of each (service, name) at a time."""

    def __init__(
        self, out: queue.Queue[News], clock: Callable[[], float] = time.monotonic, workers: int = 4
    ) -> None:
        self.out, self.clock = out, clock
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe")
        self._busy: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def busy(self, service: str, name: str) -> bool:
        with self._lock:
            return (service, name) in self._busy

    def submit(self, service: str, name: str, epoch: int, fn: Callable[[], Any]) -> bool:
        key = (service, name)
        with self._lock:
            if key in self._busy:
                return False
            self._busy.add(key)

        def job() -> None:
            try:
                result = fn()
            finally:
                with self._lock:
                    self._busy.discard(key)
            self.out.put(ProbeDone(service, name, epoch, result, self.clock()))

        self._pool.submit(job)
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
