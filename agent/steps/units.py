"""The resume unit (sandbox-agent-bootstrap.service): rendered from the package into
/etc/systemd/system with ExecStart at this sandbox-agent and its settings file, as the
watchdog's unit is (agent.unitfile); the watchdog's unit is installed by
agent.watchdog.install."""

from __future__ import annotations

from pathlib import Path

from agent import proc, unitfile
from agent.files import atomic_write

RESUME = "sandbox-agent-bootstrap.service"
UNIT_DIR = "etc/systemd/system"


def resume_unit(config: Path | None = None, command: str | None = None) -> str:
    """The resume unit: `ExecStart=<this sandbox-agent> bootstrap [--config PATH]`, and its
    ConditionPathExists= at that settings file."""
    text = unitfile.packaged(RESUME).read_text()
    return unitfile.render(text, command or unitfile.agent_command(), "bootstrap", config)


def check_visible(config: Path, bundle: Path | None, bundle_source: str) -> None:
    """What the units the bootstrap installs read must be where their sandboxes let them see
    it: the settings file (both units run with `--config` at it) and the bundle (the resumed
    run loads from it). Refused with exit 2, before anything changes."""
    from agent.watchdog.install import check_config  # the watchdog's unit, its own rule

    check_config(config)
    text = unitfile.packaged(RESUME).read_text()
    unitfile.check_visible(config, text, RESUME, "--config", "its settings file")
    if bundle is not None:
        unitfile.check_visible(bundle, text, RESUME, bundle_source, "the offline bundle")


def enable_resume(root: Path, config: Path | None = None) -> None:
    path = root / UNIT_DIR / RESUME
    atomic_write(path, resume_unit(config), mode=0o644)
    proc.run(["systemctl", "daemon-reload"], timeout=60)
    proc.run(["systemctl", "enable", RESUME], timeout=60)


def disable_resume(root: Path) -> None:
    path = root / UNIT_DIR / RESUME
    if path.exists():
        proc.run(["systemctl", "disable", RESUME], check=False, timeout=60)
        path.unlink()
        proc.run(["systemctl", "daemon-reload"], check=False, timeout=60)
