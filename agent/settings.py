"""The settings: built-in defaults < config.yaml < environment (UDF names) < flags.

One validated, frozen `Settings` object flows down from the CLI; nothing below it reads the
environment. Validation happens before anything is written or started: a bad value is a
`BadInput` naming the key, the source and what is allowed (exit 2).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from agent import validate as v
from agent.errors import BadInput
from agent.files import atomic_write
from agent.refs import ModelRef

DEFAULT_CONFIG = Path("/etc/sandbox-agent/config.yaml")

# Pinned images: `latest` is never the default. vLLM's default images are CUDA 13 builds
# since v0.20 and need driver >= 580, the branch bootstrap installs; on an older driver use
# the `-cu129` tag of the same release. The Open WebUI tag is the release our end-to-end
# tier builds from PyPI and drives with a browser.
VLLM_IMAGE = "vllm/vllm-openai:v0.30.0"
WEBUI_IMAGE = "ghcr.io/open-webui/open-webui:v0.12.4"

DEFAULTS: dict[str, Any] = {
    "project": "ai-sandbox",
    "model": {
        "id": "mistralai/Mistral-7B-Instruct-v0.3",
        "revision": "main",
        "served_name": None,
        "max_model_len": "auto",
        "tensor_parallel_size": "auto",
        "gpu_memory_utilization": 0.90,
        "extra_args": [],
    },
    "api": {"port": 8000, "bind": "0.0.0.0"},
    "ui": {"port": 3000, "bind": "0.0.0.0", "enabled": True, "admin_email": "admin@example.com"},
    "images": {"vllm": VLLM_IMAGE, "webui": WEBUI_IMAGE},
    "gpus": "auto",
    "hub": {"endpoint": "https://huggingface.co", "allow_plain_http": False},
    "docker": {"host": "unix:///var/run/docker.sock"},
    "paths": {
        "models": "/opt/models",
        "ui_data": "/opt/open-webui",
        "stack": "/opt/ai-sandbox",
        "state": "/var/lib/sandbox-agent",
        "secrets": "/etc/sandbox-agent/secrets",
    },
    "timeouts": {"ready": 1800},
    # the watchdog (`sandbox-agent watch`): its metrics port is outside Prometheus' exporter
    # range (9100-9999, all allocated) and apart from our 8000/3000/8080
    "watch": {
        "metrics_port": 8471,
        "metrics_bind": "127.0.0.1",
        "start_grace": "auto",  # seconds failures do not count after a start; auto: timeouts.ready
        "restarts_per_hour": 5,
        "motd": "/run/motd.d/50-sandbox-agent-watch",
    },
}

# The StackScript's UDF names (upper case, as Linode hands them over) -> settings keys.
# Secrets (HF_TOKEN) are not settings: see agent.secrets.
ENV_KEYS: dict[str, str] = {
    "PROJECT": "project",
    "MODEL_ID": "model.id",
    "MODEL_REVISION": "model.revision",
    "SERVED_MODEL_NAME": "model.served_name",
    "MAX_MODEL_LEN": "model.max_model_len",
    "TENSOR_PARALLEL_SIZE": "model.tensor_parallel_size",
    "GPU_MEMORY_UTILIZATION": "model.gpu_memory_utilization",
    "VLLM_EXTRA_ARGS": "model.extra_args",
    "API_PORT": "api.port",
    "API_BIND": "api.bind",
    "UI_PORT": "ui.port",
    "UI_BIND": "ui.bind",
    "UI_ENABLED": "ui.enabled",
    "ADMIN_EMAIL": "ui.admin_email",
    "VLLM_IMAGE": "images.vllm",
    "WEBUI_IMAGE": "images.webui",
    "GPUS": "gpus",
    "HF_ENDPOINT": "hub.endpoint",
    "HF_ALLOW_PLAIN_HTTP": "hub.allow_plain_http",
    "DOCKER_HOST": "docker.host",
    "MODELS_DIR": "paths.models",
    "UI_DATA_DIR": "paths.ui_data",
    "READY_TIMEOUT": "timeouts.ready",
    "WATCH_METRICS_PORT": "watch.metrics_port",
    "WATCH_METRICS_BIND": "watch.metrics_bind",
    "WATCH_START_GRACE": "watch.start_grace",
    "WATCH_RESTARTS_PER_HOUR": "watch.restarts_per_hour",
}

PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SERVED_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./:-]{0,127}$")
IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]{0,254}$")
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")
DOCKER_HOST = re.compile(r"^(unix:///[A-Za-z0-9_./@+-]{1,200}|tcp://[A-Za-z0-9.-]+:[0-9]{1,5})$")


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
class Images:
    vllm: str
    webui: str


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
class Settings:
    project: str
    model: ModelSettings
    api: Endpoint
    ui: UiSettings
    images: Images
    gpus: int | Literal["auto", "none", "all"]
    hub: Hub
    docker: Docker
    paths: Paths
    timeouts: Timeouts
    watch: WatchSettings
    source: Path | None = field(default=None, compare=False)

    @property
    def start_grace(self) -> int:
        """Seconds the watchdog lets a (re)started service load before failures count."""
        grace = self.watch.start_grace
        return self.timeouts.ready if grace == "auto" else grace

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "model": {**vars(self.model), "extra_args": list(self.model.extra_args)},
            "api": vars(self.api).copy(),
            "ui": vars(self.ui).copy(),
            "images": vars(self.images).copy(),
            "gpus": self.gpus,
            "hub": vars(self.hub).copy(),
            "docker": vars(self.docker).copy(),
            "paths": {k: str(v) for k, v in vars(self.paths).items()},
            "timeouts": vars(self.timeouts).copy(),
            "watch": {**vars(self.watch), "motd": str(self.watch.motd)},
        }


def _repo_id(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadInput(where, f"{v.shown(value)} is not a Hugging Face repo id")
    ModelRef.check_repo_id(value, where)  # the rule the models room fetches by
    return value


def _revision(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadInput(where, f"{v.shown(value)} is not a branch, tag or commit")
    ModelRef.check_revision(value, where)
    return value


def _endpoint(value: Any, where: str) -> str:
    found = URL.fullmatch(value) if isinstance(value, str) else None
    if found is None or ".." in value:
        raise BadInput(where, f"{v.shown(value)} is not an http(s) URL")
    port = found.group(1)
    if port is not None and not 0 < int(port[1:]) < 65536:
        raise BadInput(where, f"{v.shown(value)} has a port outside 1-65535")
    return str(value)


PATH_KEYS = ("paths.models", "paths.ui_data", "paths.stack", "paths.state", "paths.secrets")
MAY_BE_UNDER_ETC = ("paths.secrets", "paths.state")


SCHEMA: dict[str, v.Validator] = {
    "project": v.pattern(PROJECT, "a compose project name (lower-case letters, digits, - and _)"),
    "model.id": _repo_id,
    "model.revision": _revision,
    "model.served_name": v.optional(
        v.pattern(SERVED_NAME, "a model name (letters, digits, - _ . / :)")
    ),
    "model.max_model_len": v.int_range(256, 10_000_000, auto=True),
    "model.tensor_parallel_size": v.int_range(1, 64, auto=True),
    "model.gpu_memory_utilization": v.fraction,
    "model.extra_args": v.extra_args,
    "api.port": v.int_range(1, 65535),
    "api.bind": v.bind,
    "ui.port": v.int_range(1, 65535),
    "ui.bind": v.bind,
    "ui.enabled": v.boolean,
    "ui.admin_email": v.pattern(EMAIL, "an email address"),
    "images.vllm": v.pattern(IMAGE, "a Docker image reference"),
    "images.webui": v.pattern(IMAGE, "a Docker image reference"),
    "gpus": v.gpus,
    "hub.endpoint": _endpoint,
    "hub.allow_plain_http": v.boolean,
    "docker.host": v.pattern(DOCKER_HOST, "a Docker host (unix:///path or tcp://host:port)"),
    "paths.models": v.path,
    "paths.ui_data": v.path,
    "paths.stack": v.path,
    "paths.state": v.path,
    "paths.secrets": v.path,
    "timeouts.ready": v.int_range(10, 86_400),
    "watch.metrics_port": v.int_range(0, 65535),
    "watch.metrics_bind": v.bind,
    "watch.start_grace": v.int_range(0, 86_400, auto=True),
    "watch.restarts_per_hour": v.int_range(1, 100),
    "watch.motd": v.path,
}


def load(
    config: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge every source, validate, and return the settings. Reads; never writes."""
    env = env or {}
    path = config or Path(env.get("SANDBOX_AGENT_CONFIG") or DEFAULT_CONFIG)
    raw = copy.deepcopy(DEFAULTS)
    origin: dict[str, str] = {}
    exists = config_exists(path)
    if exists:
        _merge_file(raw, _read_yaml(path), str(path), origin)
    for name, key in ENV_KEYS.items():
        if name in env and env[name] != "":
            # A list from the environment is whitespace separated; never given to a shell.
            value = env[name].split() if key == "model.extra_args" else env[name]
            _set(raw, key, value)
            origin[key] = f"environment {name}"
    for key, value in (flags or {}).items():
        if value is not None:
            _set(raw, key, value)
            origin[key] = "command line"
    values: dict[str, Any] = {}
    where = {key: f"{key} (from {origin[key]})" if key in origin else key for key in SCHEMA}
    for key, validate in SCHEMA.items():
        values[key] = validate(_get(raw, key), where[key])
    v.separate_data_paths({k: values[k] for k in PATH_KEYS}, where, MAY_BE_UNDER_ETC)
    return _build(values, path if exists else None)


def save(settings: Settings, path: Path, *, keep_backup: bool = True) -> None:
    """Atomically write the settings as config.yaml, keeping the previous file as .bak
    (unless `keep_backup` is false: a later step of one change keeps the .bak from before it)."""
    text = "# sandbox-agent settings; see `sandbox-agent doctor`.\n" + yaml.safe_dump(
        settings.as_dict(), sort_keys=False
    )
    atomic_write(path, text, mode=0o644, keep_backup=keep_backup)


def config_exists(path: Path) -> bool:
    """Whether the settings file is there; a path the system cannot even look up (too long,
    a NUL) is bad input, not a crash."""
    try:
        return path.exists()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise BadInput("--config", f"{v.shown(str(path))} cannot be looked up: {reason}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            raw = fh.read(v.MAX_DOCUMENT + 1)
    except OSError as exc:
        raise BadInput(str(path), f"cannot be read: {exc.strerror}") from None
    data = v.yaml_document(raw, str(path)) or {}
    if not isinstance(data, dict):
        raise BadInput(str(path), "must hold a mapping of settings (key: value)")
    return data


def _merge_file(
    base: dict[str, Any],
    data: dict[str, Any],
    source: str,
    origin: dict[str, str],
    prefix: str = "",
) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str) or key not in base:
            allowed = ", ".join(sorted(base))
            raise BadInput(f"{dotted} (in {source})", f"unknown setting; allowed here: {allowed}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise BadInput(f"{dotted} (in {source})", "must be a mapping of settings")
            _merge_file(base[key], value, source, origin, dotted + ".")
        else:
            base[key] = value
            origin[dotted] = source


def _get(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node[part]
    return node


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[last] = value


def _build(values: dict[str, Any], source: Path | None) -> Settings:
    def group(prefix: str) -> dict[str, Any]:
        return {k.split(".", 1)[1]: val for k, val in values.items() if k.startswith(prefix + ".")}

    return Settings(
        project=values["project"],
        model=ModelSettings(**group("model")),
        api=Endpoint(**group("api")),
        ui=UiSettings(**group("ui")),
        images=Images(**group("images")),
        gpus=values["gpus"],
        hub=Hub(**group("hub")),
        docker=Docker(**group("docker")),
        paths=Paths(**group("paths")),
        timeouts=Timeouts(**group("timeouts")),
        watch=WatchSettings(**group("watch")),
        source=source,
    )
