"""The rendered compose file as docker-py sees it: services in dependency order, env files
read, Compose's names and labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.errors import AgentError, BadInput
from agent.stack.compose_hash import scalar, service_hash
from agent.stack.render import check_keys, variable_names
from agent.validate import ip_address, shown

COMPOSE_VERSION = "2.40.3"  # the Compose release whose label conventions we follow
L_PROJECT = "com.docker.compose.project"
L_SERVICE = "com.docker.compose.service"
L_HASH = "com.docker.compose.config-hash"  # Compose's hash of the service (compose_hash)
L_IMAGE = "com.docker.compose.image"  # the image id: Compose recreates when it changes
_PORT = re.compile(r"(?:(\[[0-9A-Fa-f:.]+\]|[0-9.]+):)?([0-9]{1,5}):([0-9]{1,5})(?:/tcp)?")


@dataclass(frozen=True)
class Service:
    name: str
    config: dict[str, Any]
    env: dict[str, str]  # what the container gets: the env files, then `environment`
    file_env: dict[str, str]  # what the env files alone give

    @property
    def image(self) -> str:
        return str(self.config["image"])

    @property
    def depends_on(self) -> list[str]:
        return list(self.config.get("depends_on") or [])  # a list, or a mapping's keys

    @property
    def config_hash(self) -> str:
        """The hash `docker compose up` computes for this service (the env files read)."""
        return service_hash(self.config, self.file_env)


@dataclass(frozen=True)
class Project:
    name: str
    path: Path
    services: tuple[Service, ...]  # in dependency order
    networks: dict[str, dict[str, Any]]

    def container_name(self, service: str) -> str:
        return f"{self.name}-{service}-1"

    def network_name(self, network: str = "default") -> str:
        return f"{self.name}_{network}"

    @property
    def network_driver(self) -> str:
        return (self.networks.get("default") or {}).get("driver") or "bridge"

    def labels(self, service: str | None = None) -> dict[str, str]:
        labels = {
            L_PROJECT: self.name,
            "com.docker.compose.project.config_files": str(self.path),
            "com.docker.compose.project.working_dir": str(self.path.parent),
            "com.docker.compose.version": COMPOSE_VERSION,
        }
        if service:
            labels.update(
                {
                    L_SERVICE: service,
                    "com.docker.compose.oneoff": "False",
                    "com.docker.compose.container-number": "1",
                }
            )
        return labels


def load_project(path: Path, text: str | None = None, *, read_env: bool = True) -> Project:
    """A rendered compose file (`text`, else read from `path`) with escapes undone and env
    files read, services in dependency order. `read_env=False` checks a file whose env files
    are not written yet (nothing may be written before every refusal has had its chance)."""
    try:
        data = yaml.safe_load(path.read_text() if text is None else text)
    except FileNotFoundError:
        raise AgentError(f"{path} does not exist", fix="run `sandbox-agent up`") from None
    except yaml.YAMLError as exc:
        raise BadInput(
            str(path),
            f"is not valid YAML: {exc}".replace("\n", " "),
            fix="run `sandbox-agent up` to render it again",
        ) from None
    check_keys(data, str(path))
    if not data or not data.get("name"):
        raise BadInput(str(path), "has no project `name`", fix="run `sandbox-agent up`")
    leftover = sorted(set(variable_names(data)))  # before unescaping: `$${X}` is no variable
    if leftover:
        raise BadInput(str(path), "variables left unfilled: " + ", ".join(leftover))
    data = _unescape(data)
    raw = data.get("services") or {}
    services: dict[str, Service] = {}
    for name, config in raw.items():
        for spec in config.get("ports") or []:
            parse_port(spec, f"services.{name}.ports")
        file_env: dict[str, str] = {}
        for file in config.get("env_file") or [] if read_env else []:
            try:
                content = Path(file).read_text()
            except OSError as exc:
                raise AgentError(
                    f"env file {file} of {name} cannot be read: {exc.strerror}",
                    fix="run `sandbox-agent up` as root",
                ) from None
            file_env.update(_parse_env(content))
        environment = config.get("environment") or {}
        if isinstance(environment, list):  # Compose's other spelling: ["KEY=value", ...]
            environment = dict(str(item).partition("=")[::2] for item in environment)
        given = {str(k): "" if v is None else scalar(v) for k, v in environment.items()}
        env = {**file_env, **given}
        services[name] = Service(name, config, env, file_env)
    return Project(str(data["name"]), path, tuple(_ordered(services)), data.get("networks") or {})


def _unescape(node: Any) -> Any:
    if isinstance(node, str):
        return node.replace("$$", "$")
    if isinstance(node, list):
        return [_unescape(v) for v in node]
    if isinstance(node, dict):
        return {k: _unescape(v) for k, v in node.items()}
    return node


def _parse_env(content: str) -> dict[str, str]:
    """The env files `render` writes: KEY='value', taken literally (as Compose does)."""
    env = {}
    for line in content.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            if len(value) >= 2 and value[0] == value[-1] == "'":
                value = value[1:-1]
            env[key.strip()] = value
    return env


def _ordered(services: dict[str, Service]) -> list[Service]:
    done: list[Service] = []

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in trail:
            raise BadInput("depends_on", f"a cycle: {' -> '.join((*trail, name))}")
        if name not in services:
            raise BadInput(f"services.{trail[-1]}.depends_on", f"no service named {name!r}")
        if services[name] not in done:
            for dep in services[name].depends_on:
                visit(dep, (*trail, name))
            done.append(services[name])

    for name in services:
        visit(name, ())
    return done


def parse_port(spec: Any, where: str = "ports") -> tuple[str, int, int]:
    """'127.0.0.1:8000:8000', '[::1]:8000:8000' or '8000:8000' -> (host ip, host port,
    container port). Anything else (a range, UDP, no host port) is BadInput."""
    found = _PORT.fullmatch(str(spec))
    # the host address by the rule the settings validate api.bind / ui.bind with
    ip = ip_address((found.group(1) or "0.0.0.0").strip("[]")) if found else None
    if not found or ip is None or not all(0 < int(p) < 65536 for p in found.group(2, 3)):
        raise BadInput(
            where,
            f"{shown(str(spec))} is not a port the agent can publish",
            fix="use [HOST_IP:]HOST_PORT:CONTAINER_PORT, TCP, one port each",
        )
    return ip, int(found.group(2)), int(found.group(3))
