"""Rendering: compose/docker-compose.yml with its ${VARIABLES} filled from the settings.

Values are put into the parsed template (never pasted into YAML text), so no setting can
inject YAML; `$` in a value is written as `$$`, as Compose expects. Secrets are not variables:
they go to 0600 env files that the compose file names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent import door as front
from agent.door import Door
from agent.errors import AgentError, BadInput
from agent.files import PACKAGE, atomic_write, packaged
from agent.secrets import SecretStore
from agent.settings import Settings
from agent.stack.caddy import caddyfile

VLLM, UI, PROXY = "vllm", "open-webui", "proxy"
CLOSED = Door(None, False, False)
COMPOSE_FILE = "docker-compose.yml"


# compose/docker-compose.yml as shipped (a missing one fails where it is read, with its path)
TEMPLATE = packaged("compose", COMPOSE_FILE) or PACKAGE / "compose" / COMPOSE_FILE
HEADER = (
    "# Rendered by sandbox-agent from its settings: change config.yaml and run\n"
    "# `sandbox-agent up` rather than editing this file. Secrets live in the env files.\n"
)

# What the agent can realise. A key outside this is refused, never silently ignored.
_HEALTH = dict.fromkeys(("test", "interval", "timeout", "retries", "start_period", "disable"))
_DEVICE = dict.fromkeys(("driver", "count", "capabilities", "device_ids"))
_SERVICE: dict[str, Any] = {
    **dict.fromkeys(("image", "command", "environment", "env_file")),
    "volumes": [None],
    "ports": [None],
    **dict.fromkeys(("ipc", "shm_size", "restart", "depends_on", "network_mode")),
    "healthcheck": _HEALTH,
    "deploy": {"resources": {"reservations": {"devices": [_DEVICE]}}},
}
_COMPOSE: dict[str, Any] = {
    "name": None,
    "services": {"*": _SERVICE},
    "networks": {"*": {"driver": None}},
}
_VAR = re.compile(r"\$\$|\$\{([^}]*)\}")  # `$$` is Compose's escaped `$`, not a variable
# Plain scalars Compose's YAML 1.2 parser reads as numbers, which PyYAML (YAML 1.1) writes
# bare as strings: `1e3`, `08`, `0o17`. Rendered quoted, both read the same string.
_YAML12_NUMBER = re.compile(
    r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?|0o[0-7]+|0x[0-9a-fA-F]+"
    r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
)
_OMIT = object()


@dataclass(frozen=True)
class StackSpec:
    """What the stack needs beyond the settings, worked out by the caller."""

    model_path: str  # the snapshot folder as the vLLM container sees it
    tensor_parallel_size: int = 1
    max_model_len: int | None = None  # None: vLLM takes the model's own
    gpu_count: int | str | None = None  # an int, "all", or None: no GPU request
    secret_env: Mapping[str, Mapping[str, str]] | None = None  # service -> env file values
    door: Door = CLOSED  # what the proxy serves (closed: no proxy service)


@dataclass(frozen=True)
class Rendered:
    project: str
    text: str
    path: Path
    env_files: Mapping[Path, str]
    caddyfile: str | None = field(default=None)  # the proxy's, when it runs


def env_file(settings: Settings, service: str) -> Path:
    return settings.paths.secrets / f"{service}.env"


def variables(settings: Settings, spec: StackSpec) -> dict[str, Any]:
    def host(bind: str) -> str:
        published = front.published(spec.door, bind)
        return f"[{published}]" if ":" in published else published

    p, door = settings.paths, spec.door
    public_ui = front.ui_url(settings, door)
    return {
        "PROJECT": settings.project,
        "VLLM_IMAGE": settings.images.vllm,
        "WEBUI_IMAGE": settings.images.webui,
        "PROXY_IMAGE": settings.images.proxy,
        "MODEL_PATH": spec.model_path,
        "SERVED_MODEL_NAME": settings.model.name,
        "MAX_MODEL_LEN": spec.max_model_len,
        "TENSOR_PARALLEL_SIZE": spec.tensor_parallel_size,
        "GPU_MEMORY_UTILIZATION": settings.model.gpu_memory_utilization,
        "VLLM_EXTRA_ARGS": list(settings.model.extra_args),
        "GPU_COUNT": spec.gpu_count,
        "MODELS_DIR": str(p.models),
        "UI_DATA_DIR": str(p.ui_data),
        "VLLM_ENV_FILE": str(env_file(settings, VLLM)),
        "WEBUI_ENV_FILE": str(env_file(settings, UI)),
        "PROXY_ENV_FILE": str(env_file(settings, PROXY)),
        "API_BIND": host(settings.api.bind),
        "API_PORT": settings.api.port,
        "UI_BIND": host(settings.ui.bind),
        "UI_PORT": settings.ui.port,
        "PUBLIC_UI_URL": public_ui,
        "UI_COOKIE_SECURE": "true" if public_ui else None,
        # the proxy reaches the UI through its loopback port only
        "UI_FORWARDED_ALLOW_IPS": "*" if public_ui else None,
        "CADDYFILE": str(front.caddyfile(settings)),
        "CADDYFILE_SHA256": _caddyfile_hash(settings, door),
        "ACME_CA_ROOT": str(settings.https.acme_ca_root) if settings.https.acme_ca_root else None,
        "PROXY_DATA": str(front.store(settings)),
        "PROXY_CONFIG": str(front.config_dir(settings)),
        "PROXY_HEALTH_PORT": settings.https.health_port,
    }


def _caddyfile_hash(settings: Settings, door: Door) -> str | None:
    if not door.on:
        return None
    return hashlib.sha256(caddyfile(settings, door).encode()).hexdigest()[:16]


def render(settings: Settings, spec: StackSpec, template: str | None = None) -> Rendered:
    """Fill the template. Unknown variables or keys are BadInput; no secret reaches the text."""
    source = "the compose template" if template is not None else str(TEMPLATE)
    text = TEMPLATE.read_text() if template is None else template
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadInput(source, f"is not valid YAML: {exc}".replace("\n", " ")) from None
    check_keys(data, source)
    values = variables(settings, spec)
    unknown = sorted({n for n in variable_names(data) if n not in values})
    if unknown:
        raise BadInput(
            source,
            "unknown variable(s) " + ", ".join(f"${{{n}}}" for n in unknown),
            fix="use only: " + ", ".join(sorted(values)),
        )
    if not settings.ui.enabled:
        data.get("services", {}).pop(UI, None)
    if not spec.door.on:
        data.get("services", {}).pop(PROXY, None)
    filled, _ = _fill(data, values)
    for name, service in (filled.get("services") or {}).items():
        if not isinstance(service.get("image"), str) or not service["image"]:
            raise BadInput(
                f"{source}: services.{name}.image",
                "is missing: every service needs a pinned image",
                fix="set images.vllm / images.webui, or add `image:` to the template",
            )
    out = HEADER + yaml.dump(filled, Dumper=_Dumper, sort_keys=False, width=1000)
    env_files: dict[Path, str] = {}
    for service, env in (spec.secret_env or {}).items():
        if service not in filled.get("services", {}):
            continue
        for value in env.values():
            if len(value) >= 6 and value in out:
                raise AgentError(f"refusing to write a secret of {service} into the compose file")
        path = env_file(settings, service)
        lines = "".join(_env_line(key, value, path) for key, value in env.items())
        env_files[path] = "# written by sandbox-agent\n" + lines
    proxied = PROXY in filled.get("services", {})
    return Rendered(
        settings.project,
        out,
        settings.paths.stack / COMPOSE_FILE,
        env_files,
        caddyfile(settings, spec.door) if proxied else None,
    )


class _Dumper(yaml.SafeDumper):
    """safe_dump, with strings Compose would read as numbers quoted."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if _YAML12_NUMBER.fullmatch(value):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return dumper.represent_str(value)


_Dumper.add_representer(str, _represent_str)


def _env_line(key: str, value: str, path: Path) -> str:
    # Single quotes: Compose takes the value literally (no `$` interpolation, no ` #` comment,
    # no trimming), as `load_project` does. Only a quote or a line break cannot be carried,
    # nor a backslash at the end (Compose reads `\'` as a quote inside the value).
    problem = None
    if any(c in value for c in "'\n\r"):
        problem = "contains a quote or a line break"
    elif value.endswith("\\"):
        problem = "ends with a backslash"
    if problem:
        raise AgentError(
            f"the value of {key} for {path} {problem}",
            fix=f"remove it from the secret file under {path.parent} (or delete that file to "
            "have a new value generated), then run `sandbox-agent up`",
        )
    return f"{key}='{value}'\n"


def write_env_files(rendered: Rendered) -> None:
    """The env files the compose file names: 0600, atomically, before any container needs them,
    in the secrets folder (created 0700, refused when others can write into it)."""
    for folder in {path.parent for path in rendered.env_files}:
        SecretStore(folder).prepare_folder()
    for path, content in rendered.env_files.items():
        atomic_write(path, content, mode=0o600)


def write_proxy_files(settings: Settings, rendered: Rendered) -> None:
    """The Caddyfile (no secret in it) and the proxy's folders, before its container starts:
    the certificate store 0700, never removed by any command."""
    if rendered.caddyfile is None:
        return
    for folder in (front.store(settings), front.config_dir(settings)):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
    atomic_write(front.caddyfile(settings), rendered.caddyfile, mode=0o644)


def write(rendered: Rendered) -> Path:
    """The compose file, atomically (the env files are written by `write_env_files`)."""
    atomic_write(rendered.path, rendered.text, mode=0o644)
    return rendered.path


def check_keys(node: Any, source: str, schema: Any = _COMPOSE, where: str = "") -> None:
    if schema is None or node is None:
        return
    if isinstance(schema, list):
        if not isinstance(node, list):
            raise BadInput(f"{source}: {where.rstrip('.')}", "must be a list")
        for i, item in enumerate(node):
            check_keys(item, source, schema[0], f"{where.rstrip('.')}[{i}].")
        return
    if not isinstance(node, dict):
        raise BadInput(f"{source}: {where.rstrip('.') or 'top level'}", "must be a mapping")
    for key, value in node.items():
        if "*" in schema:
            check_keys(value, source, schema["*"], f"{where}{key}.")
        elif key in schema:
            check_keys(value, source, schema[key], f"{where}{key}.")
        elif not (where == "" and str(key).startswith("x-")):
            raise BadInput(
                f"{source}: {where}{key}",
                "unknown compose key; sandbox-agent supports here: " + ", ".join(schema),
            )


def variable_names(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield from (m.group(1) for m in _VAR.finditer(node) if m.group(1) is not None)
    elif isinstance(node, dict):
        for value in node.values():
            yield from variable_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from variable_names(value)


def _whole(node: Any) -> str | None:
    """The name when `node` is exactly one ${VARIABLE}."""
    found = _VAR.fullmatch(node) if isinstance(node, str) else None
    return found.group(1) if found else None


def _escape(value: Any) -> Any:
    return value.replace("$", "$$") if isinstance(value, str) else value


def _fill(node: Any, values: Mapping[str, Any]) -> tuple[Any, bool]:
    """(filled node or _OMIT, whether something inside was left out).

    An unset (None) variable drops the list entry holding it (a whole mapping entry, such as
    a GPU device) or the key; containers emptied that way are dropped too. A list item that is
    exactly a list-valued variable is spliced in.
    """
    if isinstance(node, str):
        if any(values[n] is None for n in variable_names(node)):
            return _OMIT, True
        whole = _whole(node)
        if whole is not None:
            value = values[whole]
            if isinstance(value, list):
                return [_escape(v) for v in value], False
            return _escape(value), False
        return _VAR.sub(
            lambda m: m.group(0) if m.group(1) is None else _escape(str(values[m.group(1)])), node
        ), False
    if isinstance(node, list):
        items: list[Any] = []
        dropped = False
        for item in node:
            whole = _whole(item)
            if whole is not None and isinstance(values[whole], list):
                items.extend(_escape(v) for v in values[whole])
                continue
            value, inner = _fill(item, values)
            if value is _OMIT or (inner and (isinstance(item, dict) or value in ({}, []))):
                dropped = True
                continue
            items.append(value)
        return items, dropped
    if isinstance(node, dict):
        out, dropped = {}, False
        for key, item in node.items():
            value, inner = _fill(item, values)
            if value is _OMIT or (inner and value in ({}, [])):
                dropped = True
                continue
            out[key] = value
        return out, dropped
    return node, False
