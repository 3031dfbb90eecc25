"""The one way the agent reaches the Docker engine: docker-py on the engine's socket.

The agent never runs the `docker` CLI. docker is imported here, lazily, so commands that do
not touch the engine (`--help`, `doctor` on a box without Docker) never pay for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.errors import AgentError

SOCKET = "unix:///var/run/docker.sock"


class EngineUnavailable(AgentError):
    pass


def connect(base_url: str = SOCKET, *, timeout: int = 30) -> Any:
    """A docker-py client, or EngineUnavailable saying how to get an engine."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.DockerClient(base_url=base_url, timeout=timeout)
        client.ping()
    except DockerException as exc:
        raise EngineUnavailable(
            f"the Docker engine at {base_url} is not answering ({_short(exc)})",
            fix="start it with `systemctl start docker`, "
            "or run `sandbox-agent bootstrap` to install it",
        ) from None
    return client


@dataclass(frozen=True)
class EngineInfo:
    version: str
    api_version: str
    runtimes: tuple[str, ...]
    default_runtime: str
    cdi_spec_dirs: tuple[str, ...]
    docker_root: str

    @property
    def has_nvidia_runtime(self) -> bool:
        return "nvidia" in self.runtimes


def info(client: Any) -> EngineInfo:
    version = client.version()
    data = client.info()
    return EngineInfo(
        version=str(version.get("Version", "?")),
        api_version=str(version.get("ApiVersion", "?")),
        runtimes=tuple(sorted((data.get("Runtimes") or {}).keys())),
        default_runtime=str(data.get("DefaultRuntime", "runc")),
        cdi_spec_dirs=tuple(data.get("CDISpecDirs") or ()),
        docker_root=str(data.get("DockerRootDir", "/var/lib/docker")),
    )


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
