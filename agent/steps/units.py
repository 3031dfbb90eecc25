"""The resume unit (sandbox-agent-bootstrap.service), copied from the package into
/etc/systemd/system; the watchdog's unit is installed by agent.watchdog.install."""

from __future__ import annotations

from pathlib import Path

from agent import proc
from agent.files import atomic_write
from agent.steps.base import StepFailed

RESUME = "sandbox-agent-bootstrap.service"
UNIT_DIR = "etc/systemd/system"


def unit_file(name: str) -> Path:
    """systemd/<name>: inside the installed package (the wheel maps the top-level systemd/
    to agent/systemd/), else beside agent/ in a checkout (as compose/ is found)."""
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "systemd", package.parent / "systemd"):
        if (folder / name).is_file():
            return folder / name
    return package / "systemd" / name


def unit_text(name: str) -> str:
    try:
        return unit_file(name).read_text()
    except OSError:
        raise StepFailed(
            f"the unit {name} is not in this installation of sandbox-agent",
            fix="reinstall sandbox-agent from its wheel",
        ) from None


def copy_unit(name: str, root: Path) -> Path:
    path = root / UNIT_DIR / name
    atomic_write(path, unit_text(name))
    proc.run(["systemctl", "daemon-reload"], timeout=60)
    return path


def enable_resume(root: Path) -> None:
    copy_unit(RESUME, root)
    proc.run(["systemctl", "enable", RESUME], timeout=60)


def disable_resume(root: Path) -> None:
    path = root / UNIT_DIR / RESUME
    if path.exists():
        proc.run(["systemctl", "disable", RESUME], check=False, timeout=60)
        path.unlink()
        proc.run(["systemctl", "daemon-reload"], check=False, timeout=60)
