"""Every setting, one row each: its key, built-in default, environment (UDF) name, validator
and one line of help. The defaults tree, the environment map, the schema and the README's
settings table are all derived from these rows, so a setting is declared once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agent import validate as v
from agent.errors import BadInput
from agent.refs import ImageRef, ModelRef, registry_name

# Pinned images: `latest` is never the default. vLLM's default images are CUDA 13 builds
# since v0.20 and need driver >= 580, the branch bootstrap installs; on an older driver use
# the `-cu129` tag of the same release. The Open WebUI tag is the release our end-to-end
# tier builds from PyPI and drives with a browser. Caddy is the front door (TLS + the guard).
VLLM_IMAGE = "vllm/vllm-openai:v0.30.0"
WEBUI_IMAGE = "ghcr.io/open-webui/open-webui:v0.12.4"
PROXY_IMAGE = "caddy:2.10.2"
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"

PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SERVED_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./:-]{0,127}$")
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")
DOCKER_HOST = re.compile(r"^(unix:///[A-Za-z0-9_./@+-]{1,200}|tcp://[A-Za-z0-9.-]+:[0-9]{1,5})$")
# A DNS name as the proxy serves it: ASCII labels of letters, digits and inner hyphens; so no
# value can break out of the Caddyfile (no space, brace, quote, `#` or line break).
DNS_NAME = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


@dataclass(frozen=True)
class Row:
    key: str  # dotted: group.name
    default: Any
    env: str | None  # the StackScript's UDF name, as Linode hands it over
    check: v.Validator
    help: str


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


def _image(value: Any, where: str) -> str:
    ImageRef.parse(value, where)  # the reference grammar; its registry is judged at load
    return str(value)


def _registries(value: Any, where: str) -> tuple[str, ...]:
    """Registries besides Docker Hub and ghcr.io whose images may run here: a list, or (from
    the environment) names separated by commas or whitespace."""
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise BadInput(where, "must be a list of registries, e.g. [registry.example.com:5000]")
    return tuple(dict.fromkeys(registry_name(item, where) for item in items))


def _url(value: Any, where: str, *, https_only: bool = False) -> str:
    found = URL.fullmatch(value) if isinstance(value, str) else None
    if found is None or ".." in value or (https_only and not value.startswith("https://")):
        kind = "an https URL" if https_only else "an http(s) URL"
        raise BadInput(where, f"{v.shown(value)} is not {kind}")
    port = found.group(1)
    if port is not None and not 0 < int(port[1:]) < 65536:
        raise BadInput(where, f"{v.shown(value)} has a port outside 1-65535")
    return str(value)


def _https_url(value: Any, where: str) -> str:
    return _url(value, where, https_only=True)


def _domain(value: Any, where: str) -> str:
    """`auto` (this box's own Linode name), `off` (no proxy), or a DNS name."""
    text = value.strip().lower() if isinstance(value, str) else None
    if text in ("auto", "off"):
        return text
    if text is None or not DNS_NAME.fullmatch(text) or ".." in text:
        raise BadInput(
            where,
            f"{v.shown(value)} is not a domain name (letters, digits, - and dots), auto or off",
            fix="use a name whose A record points at this box, e.g. chat.example.com",
        )
    return text


_port = v.int_range(1, 65535)

ROWS: tuple[Row, ...] = (
    Row(
        "project",
        "ai-sandbox",
        "PROJECT",
        v.pattern(PROJECT, "a compose project name (lower-case letters, digits, - and _)"),
        "compose project name",
    ),
    Row(
        "model.id",
        "mistralai/Mistral-7B-Instruct-v0.3",
        "MODEL_ID",
        _repo_id,
        "the Hugging Face model, org/name",
    ),
    Row("model.revision", "main", "MODEL_REVISION", _revision, "branch, tag or commit"),
    Row(
        "model.served_name",
        None,
        "SERVED_MODEL_NAME",
        v.optional(v.pattern(SERVED_NAME, "a model name (letters, digits, - _ . / :)")),
        "the name clients ask for (default: the id)",
    ),
    Row(
        "model.max_model_len",
        "auto",
        "MAX_MODEL_LEN",
        v.int_range(256, 10_000_000, auto=True),
        "context length in tokens, or auto (what fits)",
    ),
    Row(
        "model.tensor_parallel_size",
        "auto",
        "TENSOR_PARALLEL_SIZE",
        v.int_range(1, 64, auto=True),
        "GPUs one model spans, or auto (from the fit)",
    ),
    Row(
        "model.gpu_memory_utilization",
        0.90,
        "GPU_MEMORY_UTILIZATION",
        v.fraction,
        "share of each GPU's memory vLLM takes",
    ),
    Row(
        "model.extra_args",
        [],
        "VLLM_EXTRA_ARGS",
        v.extra_args,
        "more vLLM flags (whitespace separated, never given to a shell)",
    ),
    Row(
        "api.port",
        8000,
        "API_PORT",
        _port,
        "vLLM's port on the box (always loopback with the proxy on)",
    ),
    Row(
        "api.bind",
        "127.0.0.1",
        "API_BIND",
        v.bind,
        "who may reach the API: loopback, or through the proxy",
    ),
    Row(
        "ui.port",
        3000,
        "UI_PORT",
        _port,
        "Open WebUI's port on the box (loopback with the proxy on)",
    ),
    Row(
        "ui.bind",
        "0.0.0.0",
        "UI_BIND",
        v.bind,
        "who may reach the UI: loopback, or through the proxy",
    ),
    Row("ui.enabled", True, "UI_ENABLED", v.boolean, "run Open WebUI"),
    Row(
        "ui.admin_email",
        "admin@example.com",
        "ADMIN_EMAIL",
        v.pattern(EMAIL, "an email address"),
        "the UI's admin (password generated)",
    ),
    Row(
        "https.domain",
        "auto",
        "HTTPS_DOMAIN",
        _domain,
        "auto (the box's Linode name), a domain, or off (no proxy)",
    ),
    Row(
        "https.email",
        None,
        "ACME_EMAIL",
        v.optional(v.pattern(EMAIL, "an email address")),
        "the ACME account's email (default: the admin's)",
    ),
    Row(
        "https.acme_ca",
        LETS_ENCRYPT,
        "ACME_CA",
        _https_url,
        "the ACME directory certificates come from",
    ),
    Row(
        "https.acme_ca_root",
        None,
        "ACME_CA_ROOT",
        v.optional(v.path),
        "a PEM file the CA's directory is trusted by (private CA)",
    ),
    Row("https.http_port", 80, "HTTP_PORT", _port, "plain http: ACME http-01, all else redirected"),
    Row("https.port", 443, "HTTPS_PORT", _port, "the UI over https"),
    Row(
        "https.api_port",
        8443,
        "HTTPS_API_PORT",
        _port,
        "the API over https (/v1 with the key only)",
    ),
    Row(
        "https.health_port",
        8472,
        "PROXY_HEALTH_PORT",
        _port,
        "the proxy's own health answer, loopback only",
    ),
    Row(
        "images.vllm",
        VLLM_IMAGE,
        "VLLM_IMAGE",
        _image,
        "vLLM's image",
    ),
    Row(
        "images.webui",
        WEBUI_IMAGE,
        "WEBUI_IMAGE",
        _image,
        "Open WebUI's image",
    ),
    Row(
        "images.proxy",
        PROXY_IMAGE,
        "PROXY_IMAGE",
        _image,
        "the proxy's (Caddy) image",
    ),
    Row(
        "images.registries",
        [],
        "IMAGE_REGISTRIES",
        _registries,
        "registries besides Docker Hub and ghcr.io an image may come from (it gets the key, "
        "the GPUs and the model folder)",
    ),
    Row("gpus", "auto", "GPUS", v.gpus, "auto, none, all or a count"),
    Row("hub.endpoint", "https://huggingface.co", "HF_ENDPOINT", _url, "the Hugging Face Hub"),
    Row(
        "hub.allow_plain_http",
        False,
        "HF_ALLOW_PLAIN_HTTP",
        v.boolean,
        "send the token to a plain-http Hub that is not loopback",
    ),
    Row(
        "docker.host",
        "unix:///var/run/docker.sock",
        "DOCKER_HOST",
        v.pattern(DOCKER_HOST, "a Docker host (unix:///path or tcp://host:port)"),
        "the engine, as docker-py reads it",
    ),
    Row(
        "paths.models",
        "/opt/models",
        "MODELS_DIR",
        v.path,
        "the Hugging Face cache mounted into vLLM",
    ),
    Row(
        "paths.ui_data",
        "/opt/open-webui",
        "UI_DATA_DIR",
        v.path,
        "Open WebUI's data: chats, uploads, settings",
    ),
    Row("paths.stack", "/opt/ai-sandbox", None, v.path, "the rendered compose file and Caddyfile"),
    Row(
        "paths.state",
        "/var/lib/sandbox-agent",
        None,
        v.path,
        "bootstrap, watchdog and proxy state (certificates)",
    ),
    Row("paths.secrets", "/etc/sandbox-agent/secrets", None, v.path, "0600 secrets and env files"),
    Row(
        "timeouts.ready",
        1800,
        "READY_TIMEOUT",
        v.int_range(10, 86_400),
        "seconds `up` waits for the stack to answer",
    ),
    # the watchdog's metrics port is outside Prometheus' exporter range (9100-9999, all
    # allocated) and apart from our 8000/3000/8080
    Row(
        "watch.metrics_port",
        8471,
        "WATCH_METRICS_PORT",
        v.int_range(0, 65535),
        "the watchdog's metrics (0: none)",
    ),
    Row(
        "watch.metrics_bind", "127.0.0.1", "WATCH_METRICS_BIND", v.bind, "who may read the metrics"
    ),
    Row(
        "watch.start_grace",
        "auto",
        "WATCH_START_GRACE",
        v.int_range(0, 86_400, auto=True),
        "seconds a (re)started service may load; auto: timeouts.ready",
    ),
    Row(
        "watch.restarts_per_hour",
        5,
        "WATCH_RESTARTS_PER_HOUR",
        v.int_range(1, 100),
        "then the service is failed and left alone",
    ),
    Row(
        "watch.motd",
        "/run/motd.d/50-sandbox-agent-watch",
        None,
        v.path,
        "where the watchdog's notice goes",
    ),
    Row(
        "backup.dir",
        None,
        "BACKUP_DIR",
        v.optional(v.path),
        "where backups of paths.ui_data go (default: paths.state/backups)",
    ),
    Row("backup.keep", 7, "BACKUP_KEEP", v.int_range(1, 1000), "backups kept there; older go"),
)


def markdown_table() -> str:
    """The settings as docs/settings.md lists them (a test keeps the two equal)."""
    lines = ["| setting | environment (UDF) | default | what it is |", "| --- | --- | --- | --- |"]
    for row in ROWS:
        default = "" if row.default in (None, []) else str(row.default).lower()
        if isinstance(row.default, (int, float, str)) and not isinstance(row.default, bool):
            default = str(row.default)
        env = f"`{row.env}`" if row.env else ""
        shown = f"`{default}`" if default else ""
        lines.append(f"| `{row.key}` | {env} | {shown} | {row.help} |")
    return "\n".join(lines) + "\n"
