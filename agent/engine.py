"""The one way the agent reaches the Docker engine: docker-py on the engine's socket.

The agent never runs the `docker` CLI. docker is imported lazily, so commands that do not
touch the engine (`--help`, `doctor` on a box without Docker) never pay for it; its types are
imported for the type checker only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent import log
from agent.errors import AgentError

if TYPE_CHECKING:  # re-exported for the type checker: `from agent.engine import Container`
    from docker import DockerClient as DockerClient
    from docker.models.containers import Container as Container
    from docker.models.networks import Network as Network


SOCKET = "unix:///var/run/docker.sock"
ENGINE_FIX = "check the engine with `systemctl status docker`, then run the command again"


class EngineUnavailable(AgentError):
    pass


def connect(base_url: str = SOCKET, *, timeout: int = 30) -> DockerClient:
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


@contextlib.contextmanager
def engine_errors(what: str, fix: str = ENGINE_FIX) -> Iterator[None]:
    """The engine's refusals and a lost connection to it (docker-py lets the `requests`
    exceptions of a stopped or restarting engine through) as one AgentError."""
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    try:
        yield
    except (DockerException, RequestException) as exc:
        raise AgentError(f"{what}: {explain(exc)}", fix=fix) from None


def explain(exc: Exception) -> str:
    """The engine's own words for a failure, on one line, redacted."""
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return log.redact_text(text.splitlines()[0] if text else type(exc).__name__)[:400]


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


def info(client: DockerClient) -> EngineInfo:
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
