"""The settings: built-in defaults < config.yaml < environment (UDF names) < flags.

One validated, frozen `Settings` object flows down from the CLI; nothing below it reads the
environment. Validation happens before anything is written or started: a bad value is a
`BadInput` naming the key, the source and what is allowed (exit 2).
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from agent import folders
from agent import validate as v
from agent.errors import BadInput
from agent.files import atomic_write
from agent.refs import DOCKER_HUB, ImageRef
from agent.settings.rows import ROWS
from agent.settings.typed import Settings, build

DEFAULT_CONFIG = Path("/etc/sandbox-agent/config.yaml")


def _tree() -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for row in ROWS:
        *parents, last = row.key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = row.default
    return tree


DEFAULTS: dict[str, Any] = _tree()
# The StackScript's UDF names (upper case, as Linode hands them over) -> settings keys.
# Secrets (HF_TOKEN) are not settings: see agent.secrets.
ENV_KEYS: dict[str, str] = {row.env: row.key for row in ROWS if row.env}
SCHEMA: dict[str, v.Validator] = {row.key: row.check for row in ROWS}
PATH_KEYS = tuple(key for key in SCHEMA if key.startswith("paths."))
# may also live in the agent's own folders (/etc/sandbox-agent, /var/lib/sandbox-agent)
OWN_FOLDERS = ("paths.secrets", "paths.state", "backup.dir")
# a folder that may lie inside another data folder (never the other way round): backups in
# the agent's own state folder, as by default, hold nothing a container mounts
MAY_NEST = {"backup.dir": "paths.state"}


def load(
    config: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge every source, validate, and return the settings. Reads; never writes."""
    env = env or {}
    path = config_path(config, env)
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
    data = {k: values[k] for k in (*MAY_NEST, *PATH_KEYS) if values[k] is not None}
    folders.separate_data_paths(data, where, OWN_FOLDERS, MAY_NEST)
    _cross_checks(values, where)
    return build(values, path if exists else None)


def save(settings: Settings, path: Path, *, keep_backup: bool = True) -> None:
    """Atomically write the settings as config.yaml, keeping the previous file as .bak
    (unless `keep_backup` is false: a later step of one change keeps the .bak from before it)."""
    text = "# sandbox-agent settings; see `sandbox-agent doctor`.\n" + yaml.safe_dump(
        settings.as_dict(), sort_keys=False
    )
    atomic_write(path, text, mode=0o644, keep_backup=keep_backup)


def config_path(config: Path | None, env: Mapping[str, str]) -> Path:
    """The settings file: --config, else $SANDBOX_AGENT_CONFIG, else the default (it need
    not exist)."""
    return config or Path(env.get("SANDBOX_AGENT_CONFIG") or DEFAULT_CONFIG)


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


def loopback(bind: str) -> bool:
    """Whether a bind address is the box's own loopback (127.0.0.0/8 or ::1; an IPv4-mapped
    address as the IPv4 address it stands for, as the bind validator stores it)."""
    return v.unmapped(ipaddress.ip_address(bind)).is_loopback


IMAGE_KEYS = ("images.vllm", "images.webui", "images.proxy")
TRUSTED_REGISTRIES = (DOCKER_HUB, "ghcr.io")  # where the pinned images come from


def _registries(values: dict[str, Any], where: dict[str, str]) -> None:
    """An image from a registry other than Docker Hub and ghcr.io runs only when
    images.registries names that registry: vLLM's image gets the API key, the GPUs, `ipc:
    host` and the model folder read-write."""
    allowed = TRUSTED_REGISTRIES + values["images.registries"]
    for key in IMAGE_KEYS:
        registry = ImageRef.parse(values[key], where[key]).registry
        if registry not in allowed:
            raise BadInput(
                where[key],
                f"{v.shown(values[key], 80)} comes from {registry}, a registry that "
                "images.registries does not name (only Docker Hub and ghcr.io are trusted "
                "without it)",
                fix=f"if you trust {registry}, add it: IMAGE_REGISTRIES={registry} (or "
                f"images.registries: [{registry}] in config.yaml); its image gets the API "
                "key, the GPUs and the model folder",
            )


def _cross_checks(values: dict[str, Any], where: dict[str, str]) -> None:
    """Rules between settings: images only from registries trusted here, vLLM's raw port
    never faces the network, and no two of the box's listeners share a port."""
    _registries(values, where)
    proxy = values["https.domain"] != "off"
    if not proxy and not loopback(values["api.bind"]):
        raise BadInput(
            where["api.bind"],
            f"{values['api.bind']} would put vLLM's own port on the network, and with "
            "https.domain off there is no proxy to guard it (vLLM's key leaves /invocations, "
            "/tokenize and more open)",
            fix="set HTTPS_DOMAIN (auto, or a domain pointing here) for the API over https, "
            "or keep API_BIND=127.0.0.1 and reach it with `ssh -L 8000:127.0.0.1:8000`",
        )
    ports = ["api.port"]
    ports += ["ui.port"] if values["ui.enabled"] else []
    ports += ["watch.metrics_port"] if values["watch.metrics_port"] else []
    if proxy:
        ports += ["https.http_port", "https.port", "https.api_port", "https.health_port"]
    seen: dict[int, str] = {}
    for key in ports:
        port = values[key]
        if port in seen:
            raise BadInput(
                where[key],
                f"{port} is the port of {seen[port]} too",
                fix=f"give {key} and {seen[port]} different ports",
            )
        seen[port] = key
