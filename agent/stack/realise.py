"""The rendered stack on the engine, through docker-py: reconcile, down, status, logs.

Containers get Compose's names and labels, so `docker compose -p <project> ps | logs | down`
see them. Everything that can fail is checked before the first change (images, ports, the
GPU runtime by the caller); what a failed run created is removed again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent import log
from agent.errors import AgentError, BadInput
from agent.stack.project import (
    L_HASH,
    L_PROJECT,
    L_SERVICE,
    Project,
    Service,
    engine_healthcheck,
    parse_port,
    port_free,
    published_ports,
    uptime,
)

Progress = Callable[[str], None]
STOP_TIMEOUT = 30  # seconds vLLM gets to free the GPUs before SIGKILL
PORT_SETTING = {8000: "api.port", 8080: "ui.port"}
L_ONEOFF = "com.docker.compose.oneoff"
ENGINE_FIX = "check the engine with `systemctl status docker`, then run the command again"


def _quiet(_: str) -> None:
    pass


class ImageUnavailable(AgentError):
    pass


@contextlib.contextmanager
def engine_errors(what: str, fix: str = ENGINE_FIX) -> Iterator[None]:
    """The engine's refusals and a lost connection to it (docker-py lets the `requests`
    exceptions of a stopped or restarting engine through) as one AgentError."""
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    try:
        yield
    except (DockerException, RequestException) as exc:
        raise AgentError(f"{what}: {_explain(exc)}", fix=fix) from None


def _labelled(client: Any, project: str) -> list[Any]:
    """Every container of the project, `docker compose run` one-offs left out."""
    found = client.containers.list(all=True, filters={"label": f"{L_PROJECT}={project}"})
    return [c for c in found if c.labels.get(L_ONEOFF) != "True"]


def _by_service(project: str, containers: list[Any]) -> dict[str, Any]:
    """service -> its container; where two claim a service, the one with Compose's name."""
    chosen: dict[str, Any] = {}
    for c in containers:
        service = c.labels.get(L_SERVICE, c.name)
        if service not in chosen or c.name == f"{project}-{service}-1":
            chosen[service] = c
    return chosen


def project_containers(client: Any, project: str) -> dict[str, Any]:
    """service name -> container, for every service of the project (running or not)."""
    with engine_errors("the Docker engine could not list the stack's containers"):
        return _by_service(project, _labelled(client, project))


def ensure_images(client: Any, project: Project, progress: Progress = _quiet) -> dict[str, str]:
    """image reference -> local image id, pulling what is missing. Changes no container."""
    from docker.errors import DockerException, ImageNotFound
    from docker.utils import parse_repository_tag

    ids: dict[str, str] = {}
    for image in dict.fromkeys(s.image for s in project.services):
        with engine_errors(f"the Docker engine could not look up the image {image}"):
            try:
                ids[image] = client.images.get(image).id
                continue
            except ImageNotFound:
                pass
        progress(f"pulling {image}")
        repo, tag = parse_repository_tag(image)
        last = ""
        try:
            for event in client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                if "error" in event:
                    raise _pull_failed(image, str(event["error"]))
                status = str(event.get("status", ""))
                if status != last and not event.get("progressDetail"):
                    progress(f"  {image}: {status} {event.get('id', '')}".rstrip())
                    last = status
            ids[image] = client.images.get(image).id
        except DockerException as exc:
            raise _pull_failed(image, _explain(exc)) from None
    return ids


def _pull_failed(image: str, reason: str) -> ImageUnavailable:
    return ImageUnavailable(
        f"the image {image} is not on this machine and cannot be pulled: {reason}",
        fix="check images.vllm / images.webui in config.yaml (a pinned tag that exists) and "
        "that this box reaches the registry; nothing was started",
    )


def reconcile(client: Any, project: Project, progress: Progress = _quiet) -> dict[str, str]:
    """Make the engine match the file: service -> created | recreated | started | kept."""
    ids = ensure_images(client, project, progress)
    with engine_errors("the Docker engine could not list the stack"):
        found = _labelled(client, project.name)
        network = _find_network(client, project)
    existing = _by_service(project.name, found)
    hashes = {s.name: s.config_hash(ids[s.image]) for s in project.services}
    plan = {
        s.name: _action(existing.get(s.name), hashes[s.name], network) for s in project.services
    }
    chosen = {existing[name].id for name in plan if name in existing}
    orphans = [c for c in found if c.id not in chosen]
    _check_ports(project, plan, found)
    _make_mount_sources(project)
    created: list[str] = []
    network_created = network is None
    with engine_errors(
        "could not start the stack",
        fix="see the message above; containers created by this run were removed",
    ):
        try:
            if network is None:
                network = _create_network(client, project)
            for container in orphans:
                progress(f"removing {container.name}: no longer part of the stack")
                _remove(container)
            for svc in project.services:
                if plan[svc.name] == "recreated":
                    progress(f"{svc.name}: its configuration or network changed, recreating")
                    _remove(existing[svc.name])
                if plan[svc.name] in ("created", "recreated"):
                    cid = _create(
                        client, project, svc, ids[svc.image], hashes[svc.name], network.name
                    )
                    created.append(cid)
                    existing[svc.name] = client.containers.get(cid)
            for svc in project.services:
                if plan[svc.name] != "kept":
                    progress(f"starting {project.container_name(svc.name)}")
                    container = existing[svc.name]
                    if container.status == "paused":  # start() refuses a paused container
                        container.unpause()
                    else:
                        container.start()
        except BaseException:  # Ctrl-C included: what this run created goes again
            _roll_back(client, created, network if network_created else None)
            raise
    log.get("stack").info("stack.reconciled", project=project.name, actions=plan)
    return plan


def _action(current: Any, config_hash: str, network: Any) -> str:
    if current is None:
        return "created"
    attached = (current.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    network_id = (attached.get(network.name) or {}).get("NetworkID") if network else None
    if (
        current.labels.get(L_HASH) != config_hash
        or current.status in ("dead", "removing")
        or network is None
        or network_id != network.id
    ):
        # A dead container cannot start, and one whose network was removed (`docker network
        # prune` while the stack was stopped) fails to start with "network ... not found".
        return "recreated"
    return "kept" if current.status == "running" else "started"


def _check_ports(project: Project, plan: dict[str, str], containers: Any) -> None:
    held = set()
    for container in containers:
        for bindings in (container.attrs.get("HostConfig", {}).get("PortBindings") or {}).values():
            held.update(int(b.get("HostPort") or 0) for b in bindings or [])
    for svc in project.services:
        if plan[svc.name] not in ("created", "recreated", "started"):
            continue
        for spec in svc.config.get("ports") or []:
            ip, port, inner = parse_port(spec)
            if port not in held and not port_free(ip, port):
                setting = PORT_SETTING.get(inner, "the port")
                raise AgentError(
                    f"port {ip}:{port} for {svc.name} is already in use by another program",
                    fix=f"stop that program (`ss -ltnp 'sport = :{port}'` shows it) or set "
                    f"another {setting} in config.yaml; nothing was started",
                )


def _make_mount_sources(project: Project) -> None:
    for svc in project.services:
        for volume in svc.config.get("volumes") or []:
            if not isinstance(volume, str) or not volume.startswith("/"):
                raise BadInput(f"services.{svc.name}.volumes", f"{volume!r}: use /host/path:/path")
            source = Path(volume.split(":", 1)[0])
            if not source.exists():  # an existing file (a mounted config) is left alone
                source.mkdir(parents=True)


def _find_network(client: Any, project: Project) -> Any:
    """The stack's network if it exists; refused when it is not the one the file describes."""
    extra = set(project.networks) - {"default"}
    if extra:
        raise BadInput("networks", f"only the stack's default network is supported, not {extra}")
    name = project.network_name()
    found = [n for n in client.networks.list(names=[name]) if n.name == name]
    if not found:
        return None
    network = found[0]
    owner = (network.attrs.get("Labels") or {}).get(L_PROJECT)
    if network.attrs.get("Driver") != project.network_driver or owner != project.name:
        raise AgentError(
            f"a Docker network named {name} exists but is not this stack's (driver "
            f"{network.attrs.get('Driver')}, project label {owner or 'none'})",
            fix=f"remove it with `docker network rm {name}` (disconnect what uses it first), "
            "or set another `project` in config.yaml; nothing was started",
        )
    return network


def _create_network(client: Any, project: Project) -> Any:
    labels = {**project.labels(), "com.docker.compose.network": "default"}
    for key in ("config_files", "working_dir"):
        labels.pop(f"com.docker.compose.project.{key}")
    return client.networks.create(
        project.network_name(), driver=project.network_driver, labels=labels
    )


def _create(
    client: Any, project: Project, svc: Service, image_id: str, config_hash: str, network: str
) -> str:
    from docker.types import DeviceRequest

    api, cfg, name = client.api, svc.config, project.container_name(svc.name)
    bindings: dict[str, list[tuple[str, int]]] = {}
    for spec in cfg.get("ports") or []:
        ip, port, inner = parse_port(spec)
        bindings.setdefault(f"{inner}/tcp", []).append((ip, port))
    reservations = ((cfg.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
    devices = [
        DeviceRequest(
            driver=d.get("driver", ""),
            count=-1 if d.get("count", "all") == "all" else int(d["count"]),
            device_ids=d.get("device_ids"),
            capabilities=[list(d.get("capabilities") or ["gpu"])],
        )
        for d in reservations.get("devices") or []
    ]
    restart = cfg.get("restart")
    host_config = api.create_host_config(
        binds=[v if v.count(":") > 1 else v + ":rw" for v in cfg.get("volumes") or []],
        port_bindings=bindings,
        restart_policy={"Name": restart} if restart and restart != "no" else None,
        ipc_mode=cfg.get("ipc"),
        shm_size=cfg.get("shm_size"),
        device_requests=devices or None,
        network_mode=network,
    )
    endpoint = api.create_endpoint_config(aliases=[svc.name, name])
    labels = {**project.labels(svc.name), L_HASH: config_hash, "com.docker.compose.image": image_id}
    command = cfg.get("command")
    response = api.create_container(
        svc.image,
        command=[str(a) for a in command] if isinstance(command, list) else command,
        name=name,
        environment=[f"{k}={v}" for k, v in svc.env.items()],
        labels=labels,
        ports=[int(p.split("/")[0]) for p in bindings],
        host_config=host_config,
        networking_config=api.create_networking_config({network: endpoint}),
        healthcheck=engine_healthcheck(cfg.get("healthcheck")),
        detach=True,
    )
    return str(response["Id"])


def _remove(container: Any) -> None:
    from docker.errors import NotFound

    try:
        if container.status in ("running", "restarting", "paused"):
            container.stop(timeout=STOP_TIMEOUT)
        container.remove(force=True)
    except NotFound:
        pass


def _roll_back(client: Any, created: list[str], network: Any) -> None:
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    for cid in created:
        with contextlib.suppress(DockerException, RequestException):
            client.api.remove_container(cid, force=True)
    if network is not None:
        with contextlib.suppress(DockerException, RequestException):
            network.remove()


def _explain(exc: Exception) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return log.redact_text(text.splitlines()[0] if text else type(exc).__name__)[:400]


def down(client: Any, project: str, progress: Progress = _quiet) -> list[str]:
    """Remove the stack's containers (the UI first) and networks. Never any data."""
    removed: list[str] = []
    fix = "run `sandbox-agent down` again; `sandbox-agent status` shows what is left"
    with engine_errors("the Docker engine could not list the stack", fix=fix):
        found = client.containers.list(all=True, filters={"label": f"{L_PROJECT}={project}"})
        networks = client.networks.list(filters={"label": f"{L_PROJECT}={project}"})
    for container in sorted(found, key=lambda c: c.labels.get(L_SERVICE) == "vllm"):
        progress(f"stopping and removing {container.name}")
        with engine_errors(f"could not remove the container {container.name}", fix=fix):
            _remove(container)
        removed.append(container.name)
    for network in networks:
        progress(f"removing network {network.name}")
        with engine_errors(
            f"could not remove the network {network.name}",
            fix=f"`docker network inspect {network.name}` shows the containers still on it: "
            "disconnect or remove them, then run `sandbox-agent down` again",
        ):
            network.remove()
        removed.append(network.name)
    log.get("stack").info("stack.down", project=project, removed=removed)
    return removed


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    container: str | None
    state: str  # running, restarting, exited, created, ... or missing
    health: str  # healthy, unhealthy, starting, or none (no healthcheck / not running)
    ports: tuple[str, ...]
    image: str | None
    uptime_s: float | None
    restart_count: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ports": list(self.ports)}


def status(client: Any, project: str, services: Sequence[str]) -> tuple[ServiceStatus, ...]:
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
            )
        )
    return tuple(result)


def logs(
    client: Any, project: str, service: str, *, follow: bool = False, tail: int | str = "all"
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


def last_lines(client: Any, project: str, service: str, count: int = 20) -> str:
    try:
        text = b"".join(logs(client, project, service, tail=count))
        return text.decode(errors="replace").rstrip()
    except AgentError:
        return ""
