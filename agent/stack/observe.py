"""The stack as the engine shows it: each service's container, state, health, ports and log.

Read-only: nothing here changes a container. `up`'s gate, doctor, `status` and the watchdog
read the same facts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agent import door, log, maintenance
from agent.engine import engine_errors
from agent.errors import AgentError, ExitStatus
from agent.results import Record, Result
from agent.secrets import API_KEY, WEBUI_ADMIN, SecretStore
from agent.settings import Settings
from agent.stack.project import L_PROJECT, L_SERVICE
from agent.stack.render import PROXY, UI, VLLM

if TYPE_CHECKING:
    from agent.engine import Container, DockerClient

L_ONEOFF = "com.docker.compose.oneoff"


def labelled(client: DockerClient, project: str) -> list[Container]:
    """Every container of the project, `docker compose run` one-offs left out."""
    found = client.containers.list(all=True, filters={"label": f"{L_PROJECT}={project}"})
    return [c for c in found if c.labels.get(L_ONEOFF) != "True"]


def by_service(project: str, containers: list[Container]) -> dict[str, Container]:
    """service -> its container; where two claim a service, the one with Compose's name."""
    chosen: dict[str, Container] = {}
    for c in containers:
        service = str(c.labels.get(L_SERVICE) or c.name)
        if service not in chosen or c.name == f"{project}-{service}-1":
            chosen[service] = c
    return chosen


def project_containers(client: DockerClient, project: str) -> dict[str, Container]:
    """service name -> container, for every service of the project (running or not)."""
    with engine_errors("the Docker engine could not list the stack's containers"):
        return by_service(project, labelled(client, project))


@dataclass(frozen=True)
class ServiceStatus(Record):
    service: str
    container: str | None
    state: str  # running, restarting, exited, created, ... or missing
    health: str  # healthy, unhealthy, starting, or none (no healthcheck / not running)
    ports: tuple[str, ...]
    image: str | None
    uptime_s: float | None
    restart_count: int = 0  # restarts by Docker's restart policy
    container_id: str | None = None
    exit_code: int | None = None  # of the last run, while not running
    oom_killed: bool = False  # the last run ended by the kernel's OOM killer
    started_at: str | None = None  # Docker's StartedAt of the last run: a new run, a new value


def status(
    client: DockerClient, project: str, services: Sequence[str]
) -> tuple[ServiceStatus, ...]:
    found = project_containers(client, project)
    result = []
    for name in [*services, *sorted(set(found) - set(services))]:
        container = found.get(name)
        if container is None:
            result.append(ServiceStatus(name, None, "missing", "none", (), None, None))
            continue
        state = container.attrs.get("State", {})
        running = state.get("Status") == "running"
        result.append(
            ServiceStatus(
                service=name,
                container=container.name,
                state=str(state.get("Status", "unknown")),
                health=str((state.get("Health") or {}).get("Status", "none"))
                if running
                else "none",
                ports=published_ports(container.attrs, running),
                image=str(container.attrs.get("Config", {}).get("Image")),
                uptime_s=uptime(state.get("StartedAt", "")) if running else None,
                restart_count=int(container.attrs.get("RestartCount") or 0),
                container_id=str(getattr(container, "id", "") or "") or None,
                exit_code=None if running else state.get("ExitCode"),
                oom_killed=bool(state.get("OOMKilled")),
                started_at=str(state.get("StartedAt") or "") or None,
            )
        )
    return tuple(result)


def wanted_services(settings: Settings) -> tuple[str, ...]:
    """The services the settings ask for, in start order (the proxy: when the door is open
    under the name the settings give or the last `up` resolved)."""
    services = (VLLM, UI) if settings.ui.enabled else (VLLM,)
    return (*services, PROXY) if door.current(settings).on else services


RENEWAL_DAYS = 14  # fewer days left than this: Caddy's renewal (at 30) has been failing


@dataclass(frozen=True)
class Certificate(Record):
    """The door's certificate: issued (with its expiry) or pending (with Caddy's last error,
    when its log has one)."""

    name: str
    state: Literal["issued", "pending", "unreadable"]
    issuer: str  # certmagic's folder of the ACME directory
    path: Path  # where Caddy keeps it (or will)
    expires: str | None = None  # ISO 8601, UTC
    days_left: int | None = None
    error: str = ""  # pending: Caddy's last error (redacted, one line); unreadable: why
    error_at: str | None = None  # when Caddy logged it, ISO 8601 UTC

    @property
    def near_expiry(self) -> bool:
        return self.days_left is not None and self.days_left < RENEWAL_DAYS


@dataclass(frozen=True)
class DoorStatus(Record):
    """What `status` shows of the front door."""

    name: str | None  # None: no proxy
    ui_url: str | None
    api_url: str | None  # the API's public base, /v1 included
    certificate: Certificate | None
    fix: str = ""  # while the certificate is pending or near expiry: what to do


@dataclass(frozen=True)
class StackStatus(Result):
    """`status`: each service's container facts, and where the credentials are."""

    project: str
    running: bool
    services: tuple[ServiceStatus, ...]
    key_file: Path
    admin_login_file: Path | None
    watchdog: dict[str, Any] | None = None  # the watchdog's view (agent.watchdog.summary)
    maintenance: str | None = None  # the change holding the maintenance lock now, if any
    pending_change: dict[str, str] | None = None  # one killed half done: summary and fix
    door: DoorStatus | None = None  # the proxy's name, URLs and certificate
    backup: dict[str, Any] | None = None  # the last backup, and the last run if it failed

    @property
    def exit_code(self) -> int:
        return ExitStatus.OK if self.running else ExitStatus.FAILED


def stack_status(client: DockerClient, settings: Settings) -> StackStatus:
    """The wanted services (and any other container of the project) as the engine shows them."""
    wanted = wanted_services(settings)
    services = status(client, settings.project, wanted)
    store = SecretStore(settings.paths.secrets)
    held = maintenance.current(settings.paths.state)  # read, never taken
    pending = maintenance.pending(settings.paths.state)
    return StackStatus(
        project=settings.project,
        running=all(s.state == "running" for s in services if s.service in wanted),
        services=services,
        key_file=store.path(API_KEY),
        admin_login_file=store.path(WEBUI_ADMIN) if settings.ui.enabled else None,
        maintenance=held.describe() if held else None,
        pending_change={"summary": pending.summary, "fix": pending.fix} if pending else None,
    )


def logs(
    client: DockerClient,
    project: str,
    service: str,
    *,
    follow: bool = False,
    tail: int | Literal["all"] = "all",
) -> Iterator[bytes]:
    container = project_containers(client, project).get(service)
    if container is None:
        raise AgentError(
            f"the stack {project} has no {service} container",
            fix="`sandbox-agent status` lists the services; `sandbox-agent up` starts them",
        )
    with engine_errors(f"the Docker engine could not read the log of {service}"):
        return _engine_guarded(container.logs(stream=True, follow=follow, tail=tail), service)


def _engine_guarded(chunks: Iterator[bytes], service: str) -> Iterator[bytes]:
    with engine_errors(f"the log of {service} stopped"):
        yield from chunks


def last_lines(client: DockerClient, project: str, service: str, count: int = 20) -> str:
    try:
        text = b"".join(logs(client, project, service, tail=count))
        return log.redact_text(text.decode(errors="replace")).rstrip()
    except AgentError:
        return ""


def published_ports(attrs: dict[str, Any], running: bool) -> tuple[str, ...]:
    """'ip:port->inner/tcp' per published port: what the engine bound while the container
    runs (a port asked for without a number gets one only then), else what it asks for."""
    asked = (attrs.get("HostConfig") or {}).get("PortBindings") or {}
    bound = (attrs.get("NetworkSettings") or {}).get("Ports") or {} if running else {}
    return tuple(
        f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}->{inner}"
        for inner, bindings in (bound or asked).items()
        for b in bindings or []
        if b.get("HostPort")
    )


def uptime(started_at: str, now: datetime | None = None) -> float | None:
    if not started_at or started_at.startswith("0001-"):
        return None
    start = datetime.fromisoformat(started_at[:19]).replace(tzinfo=timezone.utc)
    return ((now or datetime.now(timezone.utc)) - start).total_seconds()


# The engine's events the watchdog reads; `health_status` arrives as "health_status: healthy".
WATCHED_EVENTS = ("health_status", "die", "oom", "start", "stop", "restart")


@dataclass(frozen=True)
class StackEvent:
    """One container event of the project, from `Action` and `Actor` (Docker 29 dropped
    the old `status`, `id` and `from` fields)."""

    action: str  # "die", "oom", "start", "health_status: unhealthy", ...
    service: str
    container_id: str
    attributes: dict[str, str]
    time: float  # the engine's clock, seconds

    @property
    def kind(self) -> str:
        return self.action.split(":", 1)[0].strip()

    @property
    def detail(self) -> str:
        return self.action.split(":", 1)[1].strip() if ":" in self.action else ""


class EventStream:
    """The project's container events as they happen. docker-py's stream has no read
    timeout and ends *silently* (StopIteration) when the connection drops or the daemon
    restarts, and missed events are never re-sent: a reader reconnects and re-reads the
    containers' state (`status`). `close()` from another thread ends the iteration."""

    def __init__(self, client: DockerClient, project: str) -> None:
        with engine_errors("the Docker engine refused its event stream"):
            self._raw = client.events(
                decode=True,
                filters={
                    "type": "container",
                    "label": f"{L_PROJECT}={project}",
                    "event": list(WATCHED_EVENTS),
                },
            )
        self.project = project

    def __iter__(self) -> Iterator[StackEvent]:
        with engine_errors("the Docker engine's event stream broke"):
            for raw in self._raw:
                event = parse_event(raw)
                if event is not None:
                    yield event

    def close(self) -> None:
        import contextlib

        with contextlib.suppress(Exception):  # closing a broken stream may raise anything
            self._raw.close()


def parse_event(raw: Any) -> StackEvent | None:
    if not isinstance(raw, dict) or raw.get("Type", "container") != "container":
        return None
    actor = raw.get("Actor") or {}
    attrs = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
    action = str(raw.get("Action") or "")
    if not action or attrs.get(L_ONEOFF) == "True":
        return None
    nano = raw.get("timeNano")
    when = float(nano) / 1e9 if nano else float(raw.get("time") or 0)
    service = attrs.get(L_SERVICE) or attrs.get("name", "")
    return StackEvent(action, service, str(actor.get("ID") or ""), attrs, when)
