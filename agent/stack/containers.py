"""One service's container on the engine, through docker-py: created with Compose's names and
labels, removed, stopped, restarted; and the translations the Engine API needs (ports, the
healthcheck, the GPU request).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from agent import log
from agent.engine import engine_errors
from agent.errors import AgentError
from agent.stack.compose_hash import duration_ns
from agent.stack.observe import by_service, labelled
from agent.stack.project import L_HASH, L_IMAGE, Project, Service, parse_port

if TYPE_CHECKING:
    from agent.engine import Container, DockerClient

STOP_TIMEOUT = 30  # seconds vLLM gets to free the GPUs before SIGKILL
UP_FIX = "`sandbox-agent up` creates it"
HOST = "host"  # network_mode of a service in the host's network namespace (the proxy)


def host_network(svc: Service) -> bool:
    return svc.config.get("network_mode") == HOST


def create(
    client: DockerClient,
    project: Project,
    svc: Service,
    image_id: str,
    network: str,
) -> str:
    from docker.types import DeviceRequest

    api, cfg, name = client.api, svc.config, project.container_name(svc.name)
    bindings: dict[int | str, list[tuple[str, int]]] = {}
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
    on_host = host_network(svc)
    host_config = api.create_host_config(
        binds=[v if v.count(":") > 1 else v + ":rw" for v in cfg.get("volumes") or []],
        port_bindings=bindings,
        restart_policy={"Name": restart} if restart and restart != "no" else None,
        ipc_mode=cfg.get("ipc"),
        shm_size=cfg.get("shm_size"),
        device_requests=devices or None,
        network_mode=HOST if on_host else network,
    )
    endpoint = api.create_endpoint_config(aliases=[svc.name, name])
    networking = None if on_host else api.create_networking_config({network: endpoint})  # type: ignore[arg-type]
    labels = {**project.labels(svc.name), L_HASH: svc.config_hash, L_IMAGE: image_id}
    command = cfg.get("command")
    response = api.create_container(
        svc.image,
        command=[str(a) for a in command] if isinstance(command, list) else command,
        name=name,
        environment=[f"{k}={v}" for k, v in svc.env.items()],
        labels=labels,
        ports=[int(str(p).split("/")[0]) for p in bindings],
        host_config=host_config,
        # types-docker says one EndpointConfig; docker-py takes {network name: config}
        networking_config=networking,
        healthcheck=engine_healthcheck(cfg.get("healthcheck")),
        detach=True,
    )
    return str(response["Id"])


def remove(container: Container) -> None:
    from docker.errors import NotFound

    try:
        if container.status in ("running", "restarting", "paused"):
            container.stop(timeout=STOP_TIMEOUT)
        container.remove(force=True)
    except NotFound:
        pass


def stop(client: DockerClient, project: str, service: str, timeout: int = STOP_TIMEOUT) -> bool:
    """Stop one service's container (kept, so its log stays readable); False: none found."""
    with engine_errors(f"the Docker engine could not list the stack {project}"):
        container = by_service(project, labelled(client, project)).get(service)
    if container is None:
        return False
    with engine_errors(f"could not stop {container.name}"):
        container.stop(timeout=timeout)
    log.get("stack").warning("stack.stopped", project=project, service=service)
    return True


def port_free(ip: str, port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((ip, port))
    except OSError:  # in use, or an address this machine does not have
        return False
    return True


def engine_healthcheck(hc: dict[str, Any] | None) -> dict[str, Any] | None:
    """A compose healthcheck as the Engine API takes it (durations in ns)."""
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


def restart_service(client: DockerClient, project: str, service: str, timeout: int = 10) -> str:
    """Restart one service's existing container (stop within `timeout` s, start): its name,
    labels and config hash stay Compose's. Returns the container's id."""
    with engine_errors(f"the Docker engine could not list the stack {project}"):
        container = by_service(project, labelled(client, project)).get(service)
    if container is None:
        raise AgentError(f"the stack {project} has no {service} container", fix=UP_FIX)
    with engine_errors(f"could not restart {container.name}"):
        if container.status == "paused":
            container.unpause()
        container.restart(timeout=timeout)
    return str(container.id)
