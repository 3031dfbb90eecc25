"""The config hash Docker Compose v2 puts on a container (`com.docker.compose.config-hash`),
computed the way Compose computes it, so `docker compose up` and `sandbox-agent up` agree on
what is current and neither recreates what the other made.

What Compose does (docker/compose v2.40.3, pkg/compose/hash.go `ServiceHash`, on
compose-spec/compose-go v2.9.1 types): the service as loaded for `up` (the file in canonical
form: ports and volumes long, durations parsed, the implicit default network, the env files'
contents merged under `environment` and `env_file` dropped) with build, pull_policy, scale,
deploy.replicas, depends_on and profiles cleared, marshalled by Go's encoding/json (struct
fields in declaration order, empty ones left out, map keys sorted, `<>&` escaped), then
SHA-256 in hex. Beside it Compose compares `com.docker.compose.image`, the image id.

Only the keys `render` lets into a stack file are handled; `render.check_keys` refuses the
rest before anything gets here.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import shlex
from collections.abc import Mapping
from typing import Any

from agent.errors import BadInput
from agent.validate import shown

_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000}
_UNITS_NS.update({"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9})
_UNITS_NS.update({"d": 24 * 3600 * 10**9, "w": 7 * 24 * 3600 * 10**9})
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h|d|w)")
_PORT = re.compile(
    r"(?:(\[[0-9A-Fa-f:.]+\]|[0-9.]+):)?([0-9]{1,5}):([0-9]{1,5})(?:/(tcp|udp|sctp))?"
)
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028"}
_GO_ESCAPES["\u2029"] = "\\u2029"


def service_hash(config: Mapping[str, Any], file_env: Mapping[str, str] | None = None) -> str:
    """Compose's hash of one service. `config` is the service as written in the file (with
    `$$` already read as `$`); `file_env` the variables its env files give, in order merged
    (None: the env files are left unread, as `docker compose config --hash` does)."""
    return hashlib.sha256(go_json(canonical(config, file_env)).encode()).hexdigest()


def canonical(config: Mapping[str, Any], file_env: Mapping[str, str] | None) -> dict[str, Any]:
    """The service as Compose's ServiceConfig marshals it: keys in its field order."""
    out: dict[str, Any] = {}
    out["command"] = _command(config.get("command"))  # no omitempty: null when unset
    if config.get("deploy"):
        out["deploy"] = _deploy(config["deploy"])
    out["entrypoint"] = None
    environment = _environment(config.get("environment"))
    if file_env is not None:
        environment = {**file_env, **environment}
    if environment:
        out["environment"] = dict(sorted(environment.items()))
    if file_env is None and config.get("env_file"):
        out["env_file"] = _env_files(config["env_file"])
    if config.get("healthcheck"):
        out["healthcheck"] = _healthcheck(config["healthcheck"])
    for key in ("image", "ipc", "network_mode"):
        if config.get(key):
            out[key] = str(config[key])
    if not config.get("network_mode"):
        out["networks"] = {"default": None}  # the implicit default network
    if config.get("ports"):
        out["ports"] = [_port(spec) for spec in config["ports"]]
    if config.get("restart"):
        out["restart"] = str(config["restart"])
    if config.get("shm_size"):
        out["shm_size"] = str(unit_bytes(config["shm_size"]))
    if config.get("volumes"):
        out["volumes"] = [_volume(spec) for spec in config["volumes"]]
    return out


def go_json(value: Any) -> str:
    """What Go's json.Marshal writes for these plain values: compact, non-ASCII kept, and
    `<`, `>`, `&`, U+2028, U+2029 as \\u escapes (they only ever occur inside strings)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: _GO_ESCAPES[m.group(0)], text)


def duration_ns(text: Any) -> int:
    """A compose duration (`10s`, `1m30s`, `1.5h`) in nanoseconds; a number is seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text * 1e9)
    parts = _DURATION_PART.findall(str(text))
    if str(text) == "0":
        return 0
    if not parts or "".join(n + u for n, u in parts) != str(text):
        raise BadInput("healthcheck", f"{shown(str(text))} is not a duration (e.g. 15s, 30m)")
    return round(sum(float(n) * _UNITS_NS[u] for n, u in parts))


def go_duration(ns: int) -> str:
    """Go's time.Duration.String(): `10s`, `30m0s`, `1h0m0s`, `1.5s`, `500ms`."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if ns >= size:
                return sign + _decimal(ns, size) + unit
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = _decimal(rest, 10**9) + "s"
    if hours or minutes:
        text = f"{minutes}m" + text
    if hours:
        text = f"{hours}h" + text
    return sign + text


def _decimal(value: int, size: int) -> str:
    whole, frac = divmod(value, size)
    digits = str(frac).rjust(len(str(size)) - 1, "0").rstrip("0") if frac else ""
    return f"{whole}.{digits}" if digits else str(whole)


def unit_bytes(value: Any) -> int:
    """docker/go-units RAMInBytes: `64m`, `1g`, `512kb`, a plain number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    found = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?)i?b?", str(value).strip().lower())
    if not found:
        raise BadInput("shm_size", f"{shown(str(value))} is not a size (e.g. 64m, 1g)")
    power = "bkmgtp".index(found.group(2) or "b")
    return int(float(found.group(1)) * 1024**power)


def _command(command: Any) -> list[str] | None:
    if command is None:
        return None
    if isinstance(command, str):
        return shlex.split(command)
    return [str(arg) for arg in command]


def _environment(environment: Any) -> dict[str, str | None]:
    if not environment:
        return {}
    if isinstance(environment, list):  # ["KEY=value", "KEY"]
        pairs = [str(item).partition("=") for item in environment]
        return {k: (v if sep else None) for k, sep, v in pairs}
    return {str(k): None if v is None else scalar(v) for k, v in environment.items()}


def scalar(value: Any) -> str:
    """A YAML scalar as Compose reads it into a string (Go's fmt.Sprint of the value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def _env_files(files: Any) -> list[Any]:
    out: list[Any] = []
    for item in [files] if isinstance(files, str) else files:
        if isinstance(item, Mapping) and item.get("required") is False:
            out.append({"path": str(item["path"]), "required": False})
        else:  # a required file marshals as its bare path
            out.append(str(item["path"] if isinstance(item, Mapping) else item))
    return out


def _healthcheck(hc: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    test = hc.get("test")
    if test:
        out["test"] = ["CMD-SHELL", test] if isinstance(test, str) else [str(t) for t in test]
    for key in ("timeout", "interval"):
        if hc.get(key) is not None:
            out[key] = go_duration(duration_ns(hc[key]))
    if hc.get("retries") is not None:
        out["retries"] = int(hc["retries"])
    if hc.get("start_period") is not None:
        out["start_period"] = go_duration(duration_ns(hc["start_period"]))
    if hc.get("disable"):
        out["disable"] = True
    return out


def _deploy(deploy: Mapping[str, Any]) -> dict[str, Any]:
    resources = deploy.get("resources") or {}
    out_resources: dict[str, Any] = {}
    reservations = resources.get("reservations")
    if reservations is not None:
        devices = [_device(d) for d in reservations.get("devices") or []]
        out_resources["reservations"] = {"devices": devices} if devices else {}
    # Resources and Placement are struct values in Go: never left out, even when empty.
    return {"resources": out_resources, "placement": {}}


def _device(device: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if device.get("capabilities"):
        out["capabilities"] = [str(c) for c in device["capabilities"]]
    if device.get("driver"):
        out["driver"] = str(device["driver"])
    count = device.get("count")
    if count is None and not device.get("device_ids"):
        count = "all"
    if count is not None:
        number = -1 if str(count).lower() == "all" else int(count)
        if number:
            out["count"] = number
    if device.get("device_ids"):
        out["device_ids"] = [str(i) for i in device["device_ids"]]
    return out


def _port(spec: Any) -> dict[str, Any]:
    found = _PORT.fullmatch(str(spec))
    if not found:
        raise BadInput("ports", f"{shown(str(spec))} is not [HOST_IP:]HOST_PORT:CONTAINER_PORT")
    ip, published, target, protocol = found.groups()
    out: dict[str, Any] = {"mode": "ingress"}
    if ip:
        out["host_ip"] = ip.strip("[]")
    out["target"] = int(target)
    out["published"] = str(int(published))
    out["protocol"] = protocol or "tcp"
    return out


def _volume(spec: Any) -> dict[str, Any]:
    """A short bind `/host:/container[:opts]` in its long form."""
    source, _, rest = str(spec).partition(":")
    target, _, options = rest.partition(":")
    if not source.startswith("/") or not target:
        raise BadInput("volumes", f"{shown(str(spec))}: use /host/path:/path")
    read_only, selinux, propagation = False, "", ""
    for option in options.split(",") if options else []:
        if option in ("ro", "rw"):
            read_only = option == "ro"
        elif option in ("z", "Z"):
            selinux = option
        elif option in ("rprivate", "private", "rshared", "shared", "rslave", "slave"):
            propagation = option
    bind: dict[str, Any] = {"selinux": selinux, "propagation": propagation}
    bind = {k: v for k, v in bind.items() if v}
    bind["create_host_path"] = True  # the short syntax creates a missing host folder
    out: dict[str, Any] = {"type": "bind", "source": source, "target": _go_clean(target)}
    if read_only:
        out["read_only"] = True
    out["bind"] = bind
    return out


def _go_clean(path: str) -> str:
    """Go's path.Clean (posixpath.normpath keeps a leading `//`, Go does not)."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned
