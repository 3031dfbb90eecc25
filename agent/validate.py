"""Validators for settings: each takes (value, where) and returns the normalised value or
raises BadInput naming `where` and what is allowed. Generic, so settings.py holds only the
schema."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.errors import BadInput

Validator = Callable[[Any, str], Any]
EXTRA_ARG = re.compile(r"^[A-Za-z0-9_./:=,@+-]{1,256}$")


def pattern(rx: re.Pattern[str], what: str) -> Validator:
    def check(value: Any, where: str) -> str:
        if not isinstance(value, str) or not rx.fullmatch(value) or ".." in value:
            raise BadInput(where, f"{value!r} is not {what}")
        return value

    return check


def int_range(lo: int, hi: int, *, auto: bool = False) -> Validator:
    allowed = f"a whole number from {lo} to {hi}" + (" or 'auto'" if auto else "")

    def check(value: Any, where: str) -> Any:
        if auto and value == "auto":
            return "auto"
        number = int(value) if isinstance(value, str) and value.strip().isdigit() else value
        if isinstance(number, bool) or not isinstance(number, int) or not lo <= number <= hi:
            raise BadInput(where, f"{value!r} is not allowed: use {allowed}")
        return number

    return check


def fraction(value: Any, where: str) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not 0.05 <= number <= 0.99:
        raise BadInput(where, f"{value!r} is not allowed: use a fraction from 0.05 to 0.99")
    return number


def boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "true",
        "yes",
        "1",
        "on",
        "false",
        "no",
        "0",
        "off",
    ):
        return value.lower() in ("true", "yes", "1", "on")
    raise BadInput(where, f"{value!r} is not allowed: use true or false")


def bind(value: Any, where: str) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise BadInput(
            where, f"{value!r} is not an IP address (e.g. 0.0.0.0 or 127.0.0.1)"
        ) from None


def optional(inner: Validator) -> Validator:
    def check(value: Any, where: str) -> Any:
        return None if value in (None, "") else inner(value, where)

    return check


def extra_args(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise BadInput(where, "must be a list of strings, e.g. ['--enable-prefix-caching']")
    for item in value:
        if not isinstance(item, str) or not EXTRA_ARG.fullmatch(item):
            raise BadInput(
                where, f"{item!r} is not allowed: letters, digits and _ . / : = , @ + - only"
            )
    return tuple(value)


def gpus(value: Any, where: str) -> Any:
    if value in ("auto", "none", "all"):
        return value
    try:
        return int_range(1, 64)(value, where)
    except BadInput:
        raise BadInput(
            where, f"{value!r} is not allowed: use auto, none, all or a count 1-64"
        ) from None


PATH = re.compile(r"^/[A-Za-z0-9_./@+-]*$")


def path(value: Any, where: str) -> Path:
    # No ':' or ',' (they split a bind-mount spec), no spaces or shell characters.
    if not isinstance(value, str) or not PATH.fullmatch(value) or ".." in value.split("/"):
        raise BadInput(
            where,
            f"{value!r} is not allowed: use an absolute path of letters, digits and _ . / @ + - "
            "without '..'",
        )
    return Path(value)
