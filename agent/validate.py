"""Validators for settings: each takes (value, where) and returns the normalised value or
raises BadInput naming `where` and what is allowed. Generic, so settings.py holds only the
schema. A message quotes at most a short, escaped prefix of a bad value (`shown`): a 100 MB
value or an alias bomb never becomes a 100 MB message.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from agent.errors import BadInput

Validator = Callable[[Any, str], Any]
EXTRA_ARG = re.compile(r"^[A-Za-z0-9_./:=,@+-]{1,256}$")
SHOWN = 40  # characters of a bad value a message quotes
MAX_DOCUMENT = 256 * 1024  # bytes of a settings file: a config is a page, not a data set


def shown(value: Any) -> str:
    """A bad value as a message shows it: short, escaped (newlines, NUL, homoglyphs)."""
    if isinstance(value, str):
        return ascii(value[:SHOWN] + ("..." if len(value) > SHOWN else ""))
    if isinstance(value, dict):
        return f"a mapping of {len(value)} key(s)"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item(s)"
    if value is None or isinstance(value, (bool, int, float)):
        text = repr(value)
        return text if len(text) <= SHOWN else text[:SHOWN] + "..."
    return f"a {type(value).__name__}"


def pattern(rx: re.Pattern[str], what: str) -> Validator:
    def check(value: Any, where: str) -> str:
        if not isinstance(value, str) or not rx.fullmatch(value) or ".." in value:
            raise BadInput(where, f"{shown(value)} is not {what}")
        return value

    return check


def whole_number(value: Any) -> int | None:
    """An int, or a string of at most 18 ASCII digits; None for anything else (`²`, `٣`,
    `1e3`, a bool)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if 0 < len(text) <= 18 and text.isascii() and text.isdigit():
            return int(text)
    return None


def int_range(lo: int, hi: int, *, auto: bool = False) -> Validator:
    allowed = f"a whole number from {lo} to {hi}" + (" or 'auto'" if auto else "")

    def check(value: Any, where: str) -> Any:
        if auto and value == "auto":
            return "auto"
        number = whole_number(value)
        if number is None or not lo <= number <= hi:
            raise BadInput(where, f"{shown(value)} is not allowed: use {allowed}")
        return number

    return check


def fraction(value: Any, where: str) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and value.isascii() and len(value) <= 20:
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not 0.05 <= number <= 0.99:
        raise BadInput(where, f"{shown(value)} is not allowed: use a fraction from 0.05 to 0.99")
    return number


_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise BadInput(where, f"{shown(value)} is not allowed: use true or false")


def ip_address(value: Any) -> str | None:
    """The address as the agent writes it (compressed), or None: not an IP address, or one
    with an IPv6 zone (`fe80::1%eth0`), which no port binding can carry."""
    if not isinstance(value, str) or "%" in value or len(value) > 45:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def bind(value: Any, where: str) -> str:
    address = ip_address(value)
    if address is None:
        raise BadInput(
            where,
            f"{shown(value)} is not an IP address (e.g. 0.0.0.0 or 127.0.0.1; no IPv6 zone)",
        )
    return address


def optional(inner: Validator) -> Validator:
    def check(value: Any, where: str) -> Any:
        return None if value in (None, "") else inner(value, where)

    return check


# vLLM flags the agent sets itself: an extra arg must not replace or switch them off
# (`--api-key=` installs no auth at all). vLLM's parser also reads `_` for `-` and takes
# unambiguous prefixes, so `--api_key` and `--api-k` are the same flag.
OWNED_FLAGS: dict[str, str] = {
    "--api-key": "the API key is generated and kept in paths.secrets/api_key",
    "--host": "set api.bind (API_BIND)",
    "--port": "set api.port (API_PORT)",
    "--uds": "set api.bind and api.port (API_BIND, API_PORT)",
    "--served-model-name": "set model.served_name (SERVED_MODEL_NAME)",
    "--model": "set model.id (MODEL_ID)",
    "--tensor-parallel-size": "set model.tensor_parallel_size (TENSOR_PARALLEL_SIZE)",
    "-tp": "set model.tensor_parallel_size (TENSOR_PARALLEL_SIZE)",
    "--max-model-len": "set model.max_model_len (MAX_MODEL_LEN)",
    "--gpu-memory-utilization": "set model.gpu_memory_utilization (GPU_MEMORY_UTILIZATION)",
}


def owned_flag(arg: str) -> str | None:
    """The agent-owned flag `arg` names (spelled with `_`, `=value` or a prefix), or None."""
    if not arg.startswith("-"):
        return None
    name = arg.split("=", 1)[0].replace("_", "-")
    if name in OWNED_FLAGS:
        return name
    if name.startswith("--") and len(name) >= 4:
        hits = [flag for flag in OWNED_FLAGS if flag.startswith(name)]
        return hits[0] if hits else None
    return None


def extra_args(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise BadInput(where, "must be a list of strings, e.g. ['--enable-prefix-caching']")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not EXTRA_ARG.fullmatch(item):
            raise BadInput(
                where, f"{shown(item)} is not allowed: letters, digits and _ . / : = , @ + - only"
            )
        flag = owned_flag(item)
        if flag is not None:
            raise BadInput(
                where,
                f"{shown(item)} is set by sandbox-agent ({flag}) and may not be passed here",
                fix=OWNED_FLAGS[flag],
            )
        if index == 0 and not item.startswith("-"):
            raise BadInput(
                where,
                f"{shown(item)} would be read by vLLM as the model to serve",
                fix="set model.id (MODEL_ID); extra args start with a flag, e.g. --dtype",
            )
    return tuple(value)


def gpus(value: Any, where: str) -> Any:
    if value in ("auto", "none", "all"):
        return value
    try:
        return int_range(1, 64)(value, where)
    except BadInput:
        raise BadInput(
            where, f"{shown(value)} is not allowed: use auto, none, all or a count 1-64"
        ) from None


PATH = re.compile(r"^/[A-Za-z0-9_./@+-]{0,4095}$")


def path(value: Any, where: str) -> Path:
    # No ':' or ',' (they split a bind-mount spec), no spaces or shell characters.
    if not isinstance(value, str) or not PATH.fullmatch(value) or ".." in value.split("/"):
        raise BadInput(
            where,
            f"{shown(value)} is not allowed: use an absolute path of letters, digits and "
            "_ . / @ + - without '..'",
        )
    return Path(value)


# The system's own folders: no data path may be one of them, and models, chat history and the
# stack may not live inside the ones the OS owns (the UI bind-mounts its folder read-write).
SYSTEM_DIRS = frozenset(
    [
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/snap",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/var",
        "/var/cache",
        "/var/lib",
        "/var/lib/docker",
        "/var/log",
        "/var/run",
        "/var/tmp",
    ]
)
OS_OWNED = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
            "/run", "/sbin", "/sys", "/usr", "/var/lib/docker", "/var/run")  # fmt: skip


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _path_problem(key: str, path: str, under_etc: tuple[str, ...]) -> str | None:
    if path.rstrip("/") in SYSTEM_DIRS or path == "/":
        return f"{path} is a folder of the system itself"
    for folder in OS_OWNED:
        if _inside(path, folder) and not (folder == "/etc" and key in under_etc):
            return f"{path} is inside {folder}, which the operating system owns"
    return None


def _nested(inner: str, inner_path: str, outer: str, outer_path: str, nest: dict[str, str]) -> bool:
    """`inner` lies inside (not at) `outer`, and may."""
    return nest.get(inner) == outer and inner_path != outer_path and _inside(inner_path, outer_path)


def separate_data_paths(
    values: dict[str, Any],
    where: dict[str, str],
    under_etc: tuple[str, ...] = (),
    may_nest: dict[str, str] | None = None,
) -> None:
    """Data paths (key -> path) outside the system's folders, also through a symlink, and
    none inside another; `under_etc` keys may live under /etc (secrets, state); a key of
    `may_nest` may lie inside (never at) the folder of the key it names."""
    nest = may_nest or {}
    keys = tuple(values)
    for key in keys:
        given = str(values[key]).rstrip("/") or "/"
        problem = _path_problem(key, given, under_etc)
        if problem is None:
            real = os.path.realpath(given)  # a symlink at /opt/models may point at /
            if real != given:
                problem = _path_problem(key, real, under_etc)
                problem = f"{given} leads to {problem}" if problem else None
        if problem:
            raise BadInput(
                where[key], problem, fix="use a folder of its own, e.g. the default under /opt"
            )
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            pa, pb = str(values[a]).rstrip("/"), str(values[b]).rstrip("/")
            if _nested(a, pa, b, pb, nest) or _nested(b, pb, a, pa, nest):
                continue
            if _inside(pa, pb) or _inside(pb, pa):
                raise BadInput(
                    where[a],
                    f"{pa} and {b} ({pb}) overlap: each path needs a folder of its own",
                    fix="the UI and vLLM mount their folders, so secrets or another folder "
                    "inside them would be handed to a container",
                )


class _StrictLoader(yaml.SafeLoader):
    """YAML as settings need it: no aliases (an alias bomb is a few hundred bytes), no
    duplicate keys (the last would silently win)."""

    source = "settings"

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise BadInput(
                self.source,
                f"line {event.start_mark.line + 1}: YAML aliases (*name) are not allowed "
                "in settings",
                fix="write the value out where it is used",
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise BadInput(
                    self.source,
                    f"line {key_node.start_mark.line + 1}: the key {shown(key)} appears twice "
                    "in one mapping",
                    fix="merge the two into one (the second would silently replace the first)",
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def yaml_document(raw: bytes, source: str) -> Any:
    """A settings document: UTF-8, at most MAX_DOCUMENT bytes, no aliases, no duplicate keys."""
    if len(raw) > MAX_DOCUMENT:
        raise BadInput(source, f"is larger than {MAX_DOCUMENT // 1024} KiB: not a settings file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(source, f"is not UTF-8 text (byte {exc.start})") from None
    loader = _StrictLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split())[:300]
        raise BadInput(source, f"is not valid YAML: {message}") from None
    finally:
        loader.dispose()
