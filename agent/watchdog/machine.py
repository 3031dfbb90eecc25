"""One service's life as the watchdog sees it: a pure state machine on an injected clock.

starting -> healthy -> suspect -> unhealthy -> restarting -> starting ...; failed when the
restart budget is spent (or restarting cannot help). Nothing here touches a container, the
clock or a file: `observe`, `crashed` and `restarted` take `now` (monotonic seconds) and
return the decisions the caller acts on, so a test runs hundreds of ticks in milliseconds.

Layers (STYLE.md 10): Docker's restart policy restarts a container that exits; those restarts
count against the same budget, so a crash loop ends in `failed` and the caller stops the
container (Docker's policy would otherwise loop it forever).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

State = Literal["starting", "healthy", "suspect", "unhealthy", "restarting", "failed"]
STATES: tuple[State, ...] = ("starting", "healthy", "suspect", "unhealthy", "restarting", "failed")
Action = Literal["healthy", "suspect", "unhealthy", "restart", "failed", "crashed", "recovered"]


@dataclass(frozen=True)
class Policy:
    start_grace: float = 1800.0  # failures while loading do not count (a 70B model: 20+ min)
    fail_after: float = 3.0  # a failure sustained this long, seen twice, is unhealthy
    backoff_first: float = 10.0  # wait before the 2nd restart in the window; doubles
    backoff_cap: float = 300.0
    budget: int = 5  # restarts (ours and Docker's) per window, then failed
    window: float = 3600.0

    def backoff(self, restarts: int) -> float:
        """Seconds to wait after the last restart when `restarts` happened in the window."""
        if restarts <= 0:
            return 0.0
        return min(self.backoff_cap, self.backoff_first * 2.0 ** (restarts - 1))


@dataclass(frozen=True)
class Verdict:
    """What the signals say about the service now."""

    ok: bool
    reason: str = ""
    # Docker's own `unhealthy` (already sustained: its retries), a container gone or exited,
    # a stuck engine: no need to wait `fail_after` again.
    sustained: bool = False
    # nothing a restart can heal (a lost GPU, an XID that needs a reset): report, never loop
    hopeless: bool = False
    fix: str = ""


@dataclass(frozen=True)
class Decision:
    action: Action
    service: str
    reason: str
    attempt: int = 0  # restarts in the window, this one included (restart) or spent (failed)
    state: State = "starting"
    fix: str = ""  # for a failure no restart can heal: what the person does instead


@dataclass
class Machine:
    service: str
    policy: Policy = field(default_factory=Policy)
    state: State = "starting"
    since: float = 0.0  # when the current state began
    started: float = 0.0  # when the service last (re)started: the grace runs from here
    first_failure: float | None = None
    failures: int = 0
    reason: str = ""
    restarts: deque[float] = field(default_factory=deque)  # times of restarts in the window
    epoch: int = 0  # bumped on each restart: probes started before it are stale

    @classmethod
    def new(cls, service: str, policy: Policy, now: float) -> Machine:
        return cls(service, policy, since=now, started=now)

    # --- inputs -------------------------------------------------------------------------

    def observe(self, now: float, verdict: Verdict) -> list[Decision]:
        if self.state in ("failed", "restarting"):
            return []
        if verdict.ok:
            return self._ok(now)
        if verdict.hopeless:
            return self._fail(now, verdict.reason, verdict.fix)
        if self.first_failure is None:
            self.first_failure = now
        self.failures += 1
        self.reason = verdict.reason
        if self.state == "starting":
            if not verdict.sustained and now - self.started < self.policy.start_grace:
                return []
            return self._unhealthy(now, verdict.reason or "not healthy within the start grace")
        if self.state == "healthy":
            if verdict.sustained:
                return self._unhealthy(now, verdict.reason)
            self._enter("suspect", now)
            return [self._say("suspect", verdict.reason)]
        if self.state == "suspect":
            sustained = now - self.first_failure >= self.policy.fail_after and self.failures >= 2
            if verdict.sustained or sustained:
                return self._unhealthy(now, verdict.reason)
            return []
        return self._maybe_restart(now)  # unhealthy: waiting out the backoff

    def tick(self, now: float) -> list[Decision]:
        """Time passing without a new verdict: an unhealthy service whose backoff ended."""
        return self._maybe_restart(now) if self.state == "unhealthy" else []

    def crashed(self, now: float, reason: str, count: int = 1) -> list[Decision]:
        """Docker restarted the container `count` time(s) (its restart policy): they count."""
        if self.state == "failed":
            return []
        out = [self._say("crashed", reason)]
        for _ in range(count):
            self._count_restart(now)
        if self._spent(now):
            return out + self._fail(now, f"{reason}; {len(self.restarts)} restarts in an hour")
        self._restart_began(now)
        self._enter("starting", now)
        return out

    def restarted(self, now: float) -> None:
        """The caller restarted the container: loading again, under the start grace."""
        if self.state == "restarting":
            self._enter("starting", now)

    def started_again(self, now: float) -> None:
        """The same container began a new run that no crash caused (a restarted engine stops
        every container and starts them again): loading again, under the start grace; the
        budget stays."""
        if self.state != "failed":
            self._restart_began(now)
            self._enter("starting", now)

    def running_since(self, at: float) -> None:
        """The container has run since `at`, from before the watchdog started: its start
        grace runs from then, not from the watchdog's own (re)start."""
        if self.state == "starting":
            self.started = min(self.started, at)

    def reset(self, now: float, started: float | None = None) -> list[Decision]:
        """`sandbox-agent up` or a change of settings: forget the failure and the budget.
        The start grace runs from `started` (when the container's run began) if given."""
        was = self.state
        self.restarts.clear()
        self._restart_began(now)
        if started is not None:
            self.started = min(now, started)
        self._enter("starting", now)
        return [self._say("recovered", "reset")] if was == "failed" else []

    # --- queries ------------------------------------------------------------------------

    def restarts_in_window(self, now: float) -> int:
        self._trim(now)
        return len(self.restarts)

    def next_restart_at(self) -> float:
        last = self.restarts[-1] if self.restarts else float("-inf")
        return last + self.policy.backoff(len(self.restarts))

    # --- transitions --------------------------------------------------------------------

    def _ok(self, now: float) -> list[Decision]:
        self.first_failure, self.failures = None, 0
        if self.state == "healthy":
            return []
        was = self.state
        self._enter("healthy", now)
        self.reason = ""
        return [self._say("recovered" if was in ("suspect", "unhealthy") else "healthy", was)]

    def _unhealthy(self, now: float, reason: str) -> list[Decision]:
        out: list[Decision] = []
        self.reason = reason
        if self.state != "unhealthy":
            self._enter("unhealthy", now)
            out.append(self._say("unhealthy", reason))
        return out + self._maybe_restart(now)

    def _maybe_restart(self, now: float) -> list[Decision]:
        if self._spent(now):
            return self._fail(now, f"{self.reason}; {len(self.restarts)} restarts in an hour")
        if now < self.next_restart_at():
            return []
        self._count_restart(now)
        self._restart_began(now)
        self._enter("restarting", now)
        return [self._say("restart", self.reason, attempt=len(self.restarts))]

    def _fail(self, now: float, reason: str, fix: str = "") -> list[Decision]:
        self.reason = reason
        self._enter("failed", now)
        return [Decision("failed", self.service, reason, len(self.restarts), "failed", fix)]

    def _spent(self, now: float) -> bool:
        self._trim(now)
        return len(self.restarts) >= self.policy.budget

    def _count_restart(self, now: float) -> None:
        self._trim(now)
        self.restarts.append(now)

    def _restart_began(self, now: float) -> None:
        self.epoch += 1
        self.started = now
        self.first_failure, self.failures = None, 0

    def _trim(self, now: float) -> None:
        while self.restarts and now - self.restarts[0] >= self.policy.window:
            self.restarts.popleft()

    def _enter(self, state: State, now: float) -> None:
        self.state, self.since = state, now

    def _say(self, action: Action, reason: str, attempt: int = 0) -> Decision:
        return Decision(action, self.service, reason, attempt, self.state)
