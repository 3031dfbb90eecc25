"""The settings as typed, frozen values: what flows down from the CLI once validated."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.refs import ModelRef


@dataclass(frozen=True)
class ModelSettings:
    id: str
    revision: str
    served_name: str | None
    max_model_len: int | Literal["auto"]
    tensor_parallel_size: int | Literal["auto"]
    gpu_memory_utilization: float
    extra_args: tuple[str, ...]

    @property
    def name(self) -> str:
        """The name clients ask for: the served name, else the repo id."""
        return self.served_name or self.id

    @property
    def ref(self) -> ModelRef:
        """The configured model as the models room takes it."""
        return ModelRef(self.id, self.revision)


@dataclass(frozen=True)
class Endpoint:
    port: int
    bind: str


@dataclass(frozen=True)
class UiSettings(Endpoint):
    enabled: bool
    admin_email: str


@dataclass(frozen=True)
class HttpsSettings:
    domain: str  # "auto", "off" or a DNS name; the proxy's name is resolved by `agent.door`
    email: str | None  # None: the UI admin's
    acme_ca: str
    acme_ca_root: Path | None
    http_port: int
    port: int
    api_port: int
    health_port: int


@dataclass(frozen=True)
class Images:
    vllm: str
    webui: str
    proxy: str
    registries: tuple[str, ...]  # besides Docker Hub and ghcr.io (agent.settings.load)


@dataclass(frozen=True)
class Hub:
    endpoint: str
    allow_plain_http: bool  # send the HF token to a plain-http endpoint that is not loopback


@dataclass(frozen=True)
class Docker:
    host: str  # the engine's address, as DOCKER_HOST spells it


@dataclass(frozen=True)
class Paths:
    models: Path
    ui_data: Path
    stack: Path
    state: Path
    secrets: Path


@dataclass(frozen=True)
class Timeouts:
    ready: int


@dataclass(frozen=True)
class WatchSettings:
    metrics_port: int  # 0: no metrics server
    metrics_bind: str
    start_grace: int | Literal["auto"]
    restarts_per_hour: int
    motd: Path


@dataclass(frozen=True)
class BackupSettings:
    dir: Path | None  # None: paths.state/backups (`Settings.backup_dir`)
    keep: int


@dataclass(frozen=True)
class Settings:
    project: str
    model: ModelSettings
    api: Endpoint
    ui: UiSettings
    https: HttpsSettings
    images: Images
    gpus: int | Literal["auto", "none", "all"]
    hub: Hub
    docker: Docker
    paths: Paths
    timeouts: Timeouts
    watch: WatchSettings
    backup: BackupSettings
    source: Path | None = field(default=None, compare=False)

    @property
    def start_grace(self) -> int:
        """Seconds the watchdog lets a (re)started service load before failures count."""
        grace = self.watch.start_grace
        return self.timeouts.ready if grace == "auto" else grace

    @property
    def backup_dir(self) -> Path:
        """Where backups go: backup.dir, else `backups` in paths.state."""
        return self.backup.dir or self.paths.state / "backups"

    def as_dict(self) -> dict[str, Any]:
        """The settings as config.yaml holds them (paths as strings, lists as lists)."""
        return {
            f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.compare
        }


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def build(values: dict[str, Any], source: Path | None) -> Settings:
    """Settings from validated values keyed by dotted setting name."""
    hints = typing.get_type_hints(Settings)
    parts: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if not f.compare:
            continue
        kind = hints[f.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            prefix = f.name + "."
            group = {k[len(prefix) :]: val for k, val in values.items() if k.startswith(prefix)}
            parts[f.name] = kind(**group)
        else:
            parts[f.name] = values[f.name]
    return Settings(**parts, source=source)
