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
    duration_ns,
    parse_port,
    port_free,
    uptime,
)

Progress = Callable[[str], None]
STOP_TIMEOUT = 30  # seconds vLLM gets to free the GPUs before SIGKILL
PORT_SETTING = {8000: "api.port", 8080: "ui.port"}


def _quiet(_: str) -> None:
    pass


class ImageUnavailable(AgentError):
    pass


def project_containers(client: Any, project: str) -> dict[str, Any]:
    """service name -> container, for every container of the project (running or not)."""
    found = client.containers.list(all=True, filters={"label": f"{L_PROJECT}={project}"})
    return {c.labels.get(L_SERVICE, c.name): c for c in found}


def ensure_images(client: Any, project: Project, progress: Progress = _quiet) -> dict[str, str]:
    """image reference -> local image id, pulling what is missing. Changes no container."""
    from docker.errors import DockerException, ImageNotFound
    from docker.utils import parse_repository_tag

    ids: dict[str, str] = {}
    for image in dict.fromkeys(s.image for s in project.services):
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
    from docker.errors import DockerException

    ids = ensure_images(client, project, progress)
    existing = project_containers(client, project.name)
    plan: dict[str, str] = {}
    hashes = {s.name: s.config_hash(ids[s.image]) for s in project.services}
    for svc in project.services:
        current = existing.get(svc.name)
        if current is None:
            plan[svc.name] = "created"
        elif current.labels.get(L_HASH) != hashes[svc.name]:
            plan[svc.name] = "recreated"
        else:
            plan[svc.name] = "kept" if current.status == "running" else "started"
    orphans = [c for name, c in existing.items() if name not in plan]
    _check_ports(project, plan, existing.values())
    _make_mount_sources(project)
    network, network_created = _ensure_network(client, project)
    created: list[str] = []
    try:
        for container in orphans:
            progress(f"removing {container.name}: no longer part of the stack")
            _remove(container)
        for svc in project.services:
            if plan[svc.name] == "recreated":
                progress(f"{svc.name}: its configuration changed, recreating")
                _remove(existing[svc.name])
            if plan[svc.name] in ("created", "recreated"):
                cid = _create(client, project, svc, ids[svc.image], hashes[svc.name], network)
                created.append(cid)
                existing[svc.name] = client.containers.get(cid)
        for svc in project.services:
            if plan[svc.name] != "kept":
                progress(f"starting {project.container_name(svc.name)}")
                existing[svc.name].start()
    except DockerException as exc:
        _roll_back(client, created, network if network_created else None)
        raise AgentError(
            f"could not start the stack: {_explain(exc)}",
            fix="see the message above; containers created by this run were removed",
        ) from None
    log.get("stack").info("stack.reconciled", project=project.name, actions=plan)
    return plan


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
            Path(volume.split(":", 1)[0]).mkdir(parents=True, exist_ok=True)


def _ensure_network(client: Any, project: Project) -> tuple[str, bool]:
    extra = set(project.networks) - {"default"}
    if extra:
        raise BadInput("networks", f"only the stack's default network is supported, not {extra}")
    name = project.network_name()
    if any(n.name == name for n in client.networks.list(names=[name])):
        return name, False
    driver = (project.networks.get("default") or {}).get("driver") or "bridge"
    labels = {**project.labels(), "com.docker.compose.network": "default"}
    for key in ("config_files", "working_dir"):
        labels.pop(f"com.docker.compose.project.{key}")
    client.networks.create(name, driver=driver, labels=labels)
    return name, True


def _create(client: Any, project: Project, svc: Service, image_id: str, config_hash: str,
            network: str) -> str:
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
        healthcheck=_healthcheck(cfg.get("healthcheck")),
        detach=True,
    )
    return str(response["Id"])


def _healthcheck(hc: dict[str, Any] | None) -> dict[str, Any] | None:
    if not hc:
        return None
    if hc.get("disable"):
        return {"test": ["NONE"]}
    test = hc.get("test")
    out: dict[str, Any] = {"test": ["CMD-SHELL", test] if isinstance(test, str) else test}
    for key in ("interval", "timeout", "start_period"):
        if key in hc:
            out[key] = duration_ns(hc[key])
    if "retries" in hc:
        out["retries"] = int(hc["retries"])
    return out


def _remove(container: Any) -> None:
    from docker.errors import NotFound

    try:
        if container.status in ("running", "restarting", "paused"):
            container.stop(timeout=STOP_TIMEOUT)
        container.remove(force=True)
    except NotFound:
        pass


def _roll_back(client: Any, created: list[str], network: str | None) -> None:
    from docker.errors import DockerException

    for cid in created:
        with contextlib.suppress(DockerException):
            client.api.remove_container(cid, force=True)
    if network:
        with contextlib.suppress(DockerException):
            client.networks.get(network).remove()


def _explain(exc: Exception) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return log.redact_text(text.splitlines()[0] if text else type(exc).__name__)[:400]


def down(client: Any, project: str, progress: Progress = _quiet) -> list[str]:
    """Remove the stack's containers (the UI first) and networks. Never any data."""
    removed = []
    containers = sorted(project_containers(client, project).items(), key=lambda kv: kv[0] == "vllm")
    for _, container in containers:
        progress(f"stopping and removing {container.name}")
        _remove(container)
        removed.append(container.name)
    for network in client.networks.list(filters={"label": f"{L_PROJECT}={project}"}):
        progress(f"removing network {network.name}")
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
        published = container.attrs.get("HostConfig", {}).get("PortBindings") or {}
        ports = [f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}->{inner}"
                 for inner, bindings in published.items() for b in bindings or []]
        running = state.get("Status") == "running"
        result.append(ServiceStatus(
            service=name,
            container=container.name,
            state=str(state.get("Status", "unknown")),
            health=str((state.get("Health") or {}).get("Status", "none")) if running else "none",
            ports=tuple(ports),
            image=str(container.attrs.get("Config", {}).get("Image")),
            uptime_s=uptime(state.get("StartedAt", "")) if running else None,
            restart_count=int(container.attrs.get("RestartCount") or 0),
        ))
    return tuple(result)


def logs(client: Any, project: str, service: str, *, follow: bool = False, tail: int | str = "all"
         ) -> Iterator[bytes]:
    container = project_containers(client, project).get(service)
    if container is None:
        raise AgentError(
            f"the stack {project} has no {service} container",
            fix="`sandbox-agent status` lists the services; `sandbox-agent up` starts them",
        )
    return container.logs(stream=True, follow=follow, tail=tail)


def last_lines(client: Any, project: str, service: str, count: int = 20) -> str:
    from docker.errors import DockerException

    try:
        text = b"".join(logs(client, project, service, tail=count))
        return text.decode(errors="replace").rstrip()
    except (AgentError, DockerException):
        return ""
