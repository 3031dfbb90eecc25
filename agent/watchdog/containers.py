"""The engine's facts and events about a service's container, turned into its machine's inputs.

Pure: nothing here reads the engine, a clock or a file. `read_container` compares two readings of
the container (agent.stack.status), `read_event` takes one engine event; the times of our own
restarts and stops come in as an `OwnWindow`, so what we did ourselves is no news.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent.stack import ServiceStatus, StackEvent
from agent.watchdog.machine import Verdict

STOPPED = ("missing", "exited", "dead", "created")  # left to `sandbox-agent up`
PROBED = ("running", "paused")  # a paused container is hung with its port open
UNHEALTHY = "Docker's healthcheck reports unhealthy"
SLACK = 1.0  # seconds: Docker's StartedAt is read to the second

Change = Literal["none", "stopped", "reset", "crashed", "started_again"]


@dataclass(frozen=True)
class OwnWindow:
    """The wall-clock span around a restart or stop the watchdog made: the engine's news in it
    is our own doing."""

    start: float
    end: float

    def covers(self, at: float, slack: float = 0.0) -> bool:
        return self.start - slack <= at <= self.end + slack


@dataclass(frozen=True)
class Reading:
    """What a new reading of the container means for the machine.

    change: stopped (say so: the watchdog leaves it to `up`), reset (a new container, or a
    failed one running again: a new start), crashed (Docker's policy restarted it `crashes`
    times), started_again (a new run in the same container that neither we nor its restart
    policy made; `was` its state before), none.
    """

    change: Change = "none"
    running_since: float | None = None  # the watchdog (re)started: the container's start
    crashes: int = 0
    was: str = ""


def read_container(
    old: ServiceStatus | None,
    new: ServiceStatus,
    *,
    failed: bool,
    first: bool,
    maintenance: bool,
    now: float,
    wall: float,
    ours: OwnWindow | None,
) -> Reading:
    """`new` against `old` (None: never read before); `failed`: the machine is; `first`: the
    watchdog's own first look; `maintenance`: a change stands in; `now` monotonic, `wall` the
    wall clock, `ours` the span of our last restart or stop of it."""
    if new.state in STOPPED:
        return Reading("none" if failed else "stopped")
    if failed:
        # running again although we stopped it: `up` (or a person) started it
        back = (
            new.state == "running"
            and bool(new.container_id)
            and (old is None or old.state != "running")
            and not first
        )
        return Reading("reset" if back else "none")
    since = None
    if first and new.uptime_s is not None:  # the watchdog restarted, not the service
        since = now - new.uptime_s
    if old is None or maintenance:
        return Reading(running_since=since)
    if old.container_id != new.container_id:  # recreated by `up`: a new container, a new start
        return Reading("reset", running_since=since)
    if new.restart_count > old.restart_count:
        crashes = new.restart_count - old.restart_count
        return Reading("crashed", running_since=since, crashes=crashes)
    if new.state == "running" and new.started_at != old.started_at:
        # a new run: the engine restarted (it stops every container and starts them again),
        # or a person started it; unless it is our own restart
        began = wall - (new.uptime_s or 0.0)
        if ours is None or not ours.covers(began, SLACK):
            return Reading("started_again", running_since=since, was=old.state)
    return Reading(running_since=since)


@dataclass(frozen=True)
class Heard:
    """What one engine event means: the machine's input, a crash to tell, and how soon the
    containers are read again (None: at their period)."""

    verdict: Verdict | None = None
    died: bool = False  # an exit not made on purpose
    oom: bool = False  # the kernel's OOM killer struck (its die event follows)
    reread: float | None = None


def read_event(event: StackEvent, *, ours: OwnWindow | None) -> Heard:
    """`event` of a watched service; `ours` the span of our last restart or stop of it."""
    if ours is not None and ours.covers(event.time):
        return Heard()
    if event.kind == "oom":
        return Heard(oom=True)
    if event.kind == "die":
        # exit code 0: stopped on purpose (`down`); Docker's policy restarts it in 100 ms
        return Heard(died=event.attributes.get("exitCode") != "0", reread=0.5)
    if event.kind == "health_status" and event.detail == "unhealthy":
        return Heard(verdict=Verdict(False, UNHEALTHY, sustained=True))
    if event.kind in ("start", "stop", "restart"):
        return Heard(reread=0.2)
    return Heard()
