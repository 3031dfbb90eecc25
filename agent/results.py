"""The one result base: what a command returns, and how it reads as JSON.

A command function returns a `Result` (and says how long work goes as `Progress` lines, for a
person; `quiet` says nothing); the CLI prints `as_dict()` for `--json` (or a text
rendering of the same object) and exits with `exit_code`. Fields marked
`field(metadata=INTERNAL)` serve the text rendering only and stay out of the JSON.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.errors import ExitStatus

INTERNAL = {"json": False}
Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """Progress that nobody reads."""


def plain(obj: Any) -> Any:
    """`obj` as JSON-ready data: dataclasses as dicts, paths as strings, tuples as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: _nested(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.metadata.get("json", True)
        }
    if isinstance(obj, (list, tuple)):
        return [_nested(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _nested(v) for k, v in obj.items()}
    return str(obj) if isinstance(obj, Path) else obj


def _nested(value: Any) -> Any:
    own = getattr(value, "as_dict", None)
    return own() if callable(own) and not isinstance(value, type) else plain(value)


class Record:
    """A dataclass that reads as JSON: `as_dict()` is `plain(self)`."""

    def as_dict(self) -> dict[str, Any]:
        data = plain(self)
        assert isinstance(data, dict), f"{type(self).__name__} is not a dataclass"
        return data


class Result(Record):
    """Mixed into the frozen dataclasses that commands return."""

    @property
    def exit_code(self) -> int:
        """OK; FAILED for a failed check or action (BAD_INPUT is raised as BadInput instead)."""
        return ExitStatus.OK
