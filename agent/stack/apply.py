"""The rendered stack made real on the engine, through docker-py: images, network,
containers created, recreated or started; and the stack taken down again.

Containers get Compose's names and labels, so `docker compose -p <project> ps | logs | down`
see them. Everything that can fail is checked before the first change (images, ports, the
GPU runtime by the caller); what a failed run created is removed again.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from agent import log
from agent.engine import engine_errors, explain
from agent.errors import AgentError, BadInput
from agent.results import Progress, quiet
from agent.stack.containers import create, host_network, port_free, remove
from agent.stack.observe import by_service, labelled
from agent.stack.project import L_HASH, L_IMAGE, L_PROJECT, L_SERVICE, Project, parse_port

if TYPE_CHECKING:
    from agent.engine import Container, DockerClient, Network

PORT_SETTING = {8000: "api.port", 8080: "ui.port"}


class ImageUnavailable(AgentError):
    pass


def ensure_images(
    client: DockerClient, project: Project, progress: Progress = quiet
) -> dict[str, str]:
    """image reference -> local image id, pulling what is missing. Changes no container."""
    return {
        image: ensure_image(client, image, progress)
        for image in dict.fromkeys(s.image for s in project.services)
    }


def ensure_image(client: DockerClient, image: str, progress: Progress = quiet) -> str:
    """The local id of `image`, pulled first when it is not here. Changes no container."""
    from docker.errors import DockerException, ImageNotFound
    from docker.utils import parse_repository_tag

    with engine_errors(f"the Docker engine could not look up the image {image}"):
        try:
            return str(client.images.get(image).id)
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
        return str(client.images.get(image).id)
    except DockerException as exc:
        raise _pull_failed(image, explain(exc)) from None


def _pull_failed(image: str, reason: str) -> ImageUnavailable:
    return ImageUnavailable(
        f"the image {image} is not on this machine and cannot be pulled: {reason}",
        fix="check images.vllm / images.webui in config.yaml (a pinned tag that exists) and "
        "that this box reaches the registry; nothing was started",
    )


def reconcile(client: DockerClient, project: Project, progress: Progress = quiet) -> dict[str, str]:
    """Make the engine match the file: service -> created | recreated | started | kept."""
    ids = ensure_images(client, project, progress)
    with engine_errors("the Docker engine could not list the stack"):
        found = labelled(client, project.name)
        network = _find_network(client, project)
    existing = by_service(project.name, found)
    plan = {
        s.name: _action(
            existing.get(s.name), s.config_hash, ids[s.image], network, host=host_network(s)
        )
        for s in project.services
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
                remove(container)
            for svc in project.services:
                if plan[svc.name] == "recreated":
                    progress(f"{svc.name}: its configuration or network changed, recreating")
                    remove(existing[svc.name])
                if plan[svc.name] in ("created", "recreated"):
                    cid = create(client, project, svc, ids[svc.image], str(network.name))
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


def _action(
    current: Container | None,
    config_hash: str,
    image_id: str,
    network: Network | None,
    *,
    host: bool = False,
) -> str:
    if current is None:
        return "created"
    if host:  # on the host's network: no network of ours to be attached to
        on_network = (current.attrs.get("HostConfig") or {}).get("NetworkMode") == "host"
    else:
        attached = (current.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        network_id = (attached.get(network.name) or {}).get("NetworkID") if network else None
        on_network = network is not None and network_id == network.id
    if (
        # What `docker compose up` compares too: the service's hash and the image id.
        current.labels.get(L_HASH) != config_hash
        or current.labels.get(L_IMAGE) != image_id
        or current.status in ("dead", "removing")
        or not on_network
    ):
        # A dead container cannot start, and one whose network was removed (`docker network
        # prune` while the stack was stopped) fails to start with "network ... not found".
        return "recreated"
    return "kept" if current.status == "running" else "started"


def _check_ports(project: Project, plan: dict[str, str], containers: list[Container]) -> None:
    held: set[int] = set()
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
            source, *_, options = volume.split(":") if volume.count(":") > 1 else (volume, "")
            if Path(source).exists():  # an existing file (a mounted config) is left alone
                continue
            if "ro" in options.split(","):  # a file to read (a CA root) is not made up
                raise BadInput(
                    f"services.{svc.name}.volumes",
                    f"{source} does not exist",
                    fix="give an existing file (e.g. https.acme_ca_root); nothing was started",
                )
            Path(source).mkdir(parents=True)


def _find_network(client: DockerClient, project: Project) -> Network | None:
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


def _create_network(client: DockerClient, project: Project) -> Network:
    labels = {**project.labels(), "com.docker.compose.network": "default"}
    for key in ("config_files", "working_dir"):
        labels.pop(f"com.docker.compose.project.{key}")
    return client.networks.create(
        project.network_name(), driver=project.network_driver, labels=labels
    )


def _roll_back(client: DockerClient, created: list[str], network: Network | None) -> None:
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    for cid in created:
        with contextlib.suppress(DockerException, RequestException):
            client.api.remove_container(cid, force=True)
    if network is not None:
        with contextlib.suppress(DockerException, RequestException):
            network.remove()


def down(client: DockerClient, project: str, progress: Progress = quiet) -> list[str]:
    """Remove the stack's containers (the UI first) and networks. Never any data."""
    removed: list[str] = []
    fix = "run `sandbox-agent down` again; `sandbox-agent status` shows what is left"
    with engine_errors("the Docker engine could not list the stack", fix=fix):
        found = client.containers.list(all=True, filters={"label": f"{L_PROJECT}={project}"})
        networks = client.networks.list(filters={"label": f"{L_PROJECT}={project}"})
    for container in sorted(found, key=lambda c: c.labels.get(L_SERVICE) == "vllm"):
        progress(f"stopping and removing {container.name}")
        with engine_errors(f"could not remove the container {container.name}", fix=fix):
            remove(container)
        removed.append(str(container.name))
    for network in networks:
        progress(f"removing network {network.name}")
        with engine_errors(
            f"could not remove the network {network.name}",
            fix=f"`docker network inspect {network.name}` shows the containers still on it: "
            "disconnect or remove them, then run `sandbox-agent down` again",
        ):
            network.remove()
        removed.append(str(network.name))
    log.get("stack").info("stack.down", project=project, removed=removed)
    return removed
