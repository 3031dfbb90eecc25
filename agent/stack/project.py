"""The rendered compose file as docker-py sees it: services in dependency order, env files
read, Compose's names and labels.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from agent import log
from agent.errors import AgentError, BadInput
from agent.stack.render import check_keys, variable_names

COMPOSE_VERSION = "2.40.3"  # the Compose release whose label conventions we follow
L_PROJECT = "com.docker.compose.project"
L_SERVICE = "com.docker.compose.service"
L_HASH = "com.docker.compose.config-hash"

@dataclass(frozen=True)
class Service:
    name: str
    config: dict[str, Any]
    env: dict[str, str]
    env_digest: str

    @property
    def image(self) -> str:
        return str(self.config["image"])

    @property
    def depends_on(self) -> list[str]:
        deps = self.config.get("depends_on") or []
        return list(deps) if isinstance(deps, list) else list(deps)

    def config_hash(self, image_id: str) -> str:
        blob = json.dumps([self.config, self.env_digest, image_id], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


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

    def labels(self, service: str | None = None) -> dict[str, str]:
        labels = {
            L_PROJECT: self.name,
            "com.docker.compose.project.config_files": str(self.path),
            "com.docker.compose.project.working_dir": str(self.path.parent),
            "com.docker.compose.version": COMPOSE_VERSION,
        }
        if service:
            labels.update({L_SERVICE: service, "com.docker.compose.oneoff": "False",
                           "com.docker.compose.container-number": "1"})
        return labels


def load_project(path: Path, text: str | None = None) -> Project:
    """A rendered compose file (`text`, else read from `path`) with escapes undone and env
    files read, services in dependency order."""
    try:
        data = yaml.safe_load(path.read_text() if text is None else text)
    except FileNotFoundError:
        raise AgentError(f"{path} does not exist", fix="run `sandbox-agent up`") from None
    check_keys(data, str(path))
    data = _unescape(data)
    leftover = sorted(set(variable_names(data)))
    if leftover:
        raise BadInput(str(path), "variables left unfilled: " + ", ".join(leftover))
    raw = data.get("services") or {}
    services: dict[str, Service] = {}
    for name, config in raw.items():
        env: dict[str, str] = {}
        digest = hashlib.sha256()
        for file in config.get("env_file") or []:
            try:
                content = Path(file).read_text()
            except OSError as exc:
                raise AgentError(f"env file {file} of {name} cannot be read: {exc.strerror}",
                                 fix="run `sandbox-agent up` as root") from None
            digest.update(hashlib.sha256(content.encode()).digest())
            env.update(_parse_env(content))
        env.update({str(k): "" if v is None else str(v)
                    for k, v in (config.get("environment") or {}).items()})
        services[name] = Service(name, config, env, digest.hexdigest())
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
    env = {}
    for line in content.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
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


def parse_port(spec: str) -> tuple[str, int, int]:
    """'127.0.0.1:8000:8000' or '[::1]:8000:8000' -> (host ip, host port, container port)."""
    rest, container = str(spec).rsplit(":", 1)
    ip, _, host = rest.rpartition(":")
    return ip.strip("[]") or "0.0.0.0", int(host), int(container.split("/")[0])


def port_free(ip: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


def duration_ns(text: Any) -> int:
    if isinstance(text, (int, float)):
        return int(text * 1e9)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text))
    if not parts or "".join(a + b for a, b in parts) != str(text):
        raise BadInput("healthcheck", f"{text!r} is not a duration (e.g. 15s, 30m)")
    return int(sum(float(n) * units[u] for n, u in parts) * 1e9)


def gpu_request(setting: Any, detected: int, has_nvidia_runtime: bool) -> int | str | None:
    """The GPU request for vLLM: `auto` asks only when GPUs and the runtime are both there."""
    if setting == "none" or (setting == "auto" and not detected):
        return None
    if setting == "auto":
        if not has_nvidia_runtime:
            log.get("stack").warning("gpu.no_runtime", detected=detected)
            return None
        return "all"
    if not has_nvidia_runtime:
        raise AgentError(
            f"gpus: {setting} asks for GPUs, but the Docker engine has no NVIDIA runtime",
            fix="run `sandbox-agent bootstrap` (installs and configures the NVIDIA Container "
            "Toolkit), or set `gpus: none` in config.yaml",
        )
    return setting


def uptime(started_at: str, now: datetime | None = None) -> float | None:
    if not started_at or started_at.startswith("0001-"):
        return None
    start = datetime.fromisoformat(started_at[:19]).replace(tzinfo=timezone.utc)
    return ((now or datetime.now(timezone.utc)) - start).total_seconds()
