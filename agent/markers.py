"""Bootstrap state under `paths.state`, per instance id: a marker per step, written only after
the step succeeded, and the last run's checklist.

A rebuilt Linode gets a new instance id (or a fresh disk), so its markers never claim work a
previous instance did. Markers are hints for resuming and for `--status`; steps still check
the real state of the box first.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

from agent.errors import BadInput
from agent.files import atomic_write

INSTANCE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RUN_FILE = "last-run.json"


def check_instance_id(value: str, where: str = "LINODE_ID") -> str:
    if not INSTANCE_ID.fullmatch(value) or not value.isascii():
        raise BadInput(where, f"{value[:80]!r} is not an instance id (letters, digits, - and _)")
    return value


def local_instance_id(root: Path = Path("/")) -> str:
    """The box's machine id when the platform gave no instance id."""
    with contextlib.suppress(OSError):
        text = (root / "etc/machine-id").read_text().strip()
        if INSTANCE_ID.fullmatch(text):
            return text
    return "local"


CURRENT = "bootstrap/instance"  # the instance id the last bootstrap ran as


def recorded_instance_id(state_dir: Path) -> str | None:
    """The instance id the bootstrap saved: the resume unit and `--status` run without the
    platform's LINODE_ID."""
    try:
        value = (Path(state_dir) / CURRENT).read_text().strip()
    except OSError:
        return None
    return value if INSTANCE_ID.fullmatch(value) else None


def record_instance_id(state_dir: Path, instance_id: str) -> None:
    path = Path(state_dir) / CURRENT
    with contextlib.suppress(OSError):
        if path.read_text().strip() == instance_id:
            return
    atomic_write(path, instance_id + "\n", mode=0o600)


class BootState:
    """`<paths.state>/bootstrap/<instance id>/`: `steps/<id>.json` and `last-run.json`."""

    def __init__(self, state_dir: Path, instance_id: str) -> None:
        self.instance_id = check_instance_id(instance_id, "instance id")
        self.folder = Path(state_dir) / "bootstrap" / self.instance_id

    def _marker(self, step_id: str) -> Path:
        return self.folder / "steps" / f"{step_id}.json"

    def marker(self, step_id: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self._marker(step_id).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def mark_done(self, step_id: str, detail: str, **extra: Any) -> None:
        record = {"step": step_id, "detail": detail, "at": time.time(), **extra}
        atomic_write(self._marker(step_id), json.dumps(record, indent=1), mode=0o600)

    def clear(self, step_id: str) -> None:
        self._marker(step_id).unlink(missing_ok=True)

    def record_run(self, data: dict[str, Any]) -> None:
        atomic_write(self.folder / RUN_FILE, json.dumps(data, indent=1), mode=0o600)

    def last_run(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.folder / RUN_FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def note(self, name: str) -> Path:
        """A file of this instance's state that a step keeps for itself (e.g. a reboot note)."""
        return self.folder / name
