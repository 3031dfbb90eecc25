"""`sandbox-agent watch --install` and the bootstrap: the unit the wheel carries, installed
with ExecStart pointing at this sandbox-agent (agent.unitfile writes each word as systemd
reads it back), then enabled and started through the one command runner (systemctl); the
daily backup's timer with it (agent.watchdog.backup_timer)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent import proc, unitfile
from agent.files import atomic_write
from agent.results import Result

UNIT = "sandbox-agent.service"
UNIT_DIR = unitfile.UNIT_DIR


def unit_source() -> Path:
    """systemd/sandbox-agent.service, as the installation carries it."""
    return unitfile.packaged(UNIT)


def render_unit(text: str, command: str, config: Path | None = None) -> str:
    """The unit with ExecStart at `command watch` (and `--config PATH`)."""
    return unitfile.render(text, command, "watch", config)


def check_config(config: Path, text: str | None = None) -> None:
    """A settings file the watchdog's sandbox hides (ProtectHome=, PrivateTmp=) is refused:
    the service would silently watch the defaults instead (exit 2)."""
    unitfile.check_visible(
        config, text or unit_source().read_text(), UNIT, "--config", "its settings file"
    )


@dataclass(frozen=True)
class InstallResult(Result):
    unit: Path
    exec_start: str
    enabled: bool
    started: bool
    timers: tuple[
        str, ...
    ] = ()  # installed with it: the daily backup (agent.watchdog.backup_timer)


def install_unit(
    *,
    unit_dir: Path = UNIT_DIR,
    command: str | None = None,
    config: Path | None = None,
    start: bool = True,
) -> InstallResult:
    """Write the unit (atomically), `systemctl daemon-reload`, `enable` (and `--now`). A unit
    for the box's own systemd must see its settings file; refused before anything is written."""
    source = unit_source().read_text()
    if config is not None and unit_dir == UNIT_DIR:
        check_config(config, source)
    text = render_unit(source, command or unitfile.agent_command(), config)
    target = unit_dir / UNIT
    atomic_write(target, text, mode=0o644)
    fix = "see `systemctl status sandbox-agent` and `journalctl -u sandbox-agent`"
    proc.run(["systemctl", "daemon-reload"], timeout=60, fix=fix)
    proc.run(["systemctl", "enable", *(["--now"] if start else []), UNIT], timeout=120, fix=fix)
    from agent.watchdog import backup_timer as timer

    timers = timer.install(unit_dir, command or unitfile.agent_command(), config, start)
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return InstallResult(target, exec_start.split("=", 1)[1], True, start, timers)
