"""The daily backup: sandbox-agent-backup.service (a oneshot `sandbox-agent backup --daily`)
and sandbox-agent-backup.timer, installed with the watchdog's unit, ExecStart rendered the
same way (each word as systemd reads it back), then the timer enabled through systemctl."""

from __future__ import annotations

from pathlib import Path

from agent import proc, unitfile
from agent.files import atomic_write

SERVICE = "sandbox-agent-backup.service"
TIMER = "sandbox-agent-backup.timer"
FIX = "see `systemctl status sandbox-agent-backup.timer` and `journalctl -u sandbox-agent-backup`"


def render_service(text: str, command: str, config: Path | None = None) -> str:
    """The service with `ExecStart=COMMAND backup --daily [--config PATH]` (agent.unitfile
    writes each word as systemd reads it back)."""
    return unitfile.render(text, command, "backup --daily", config)


def install(
    unit_dir: Path, command: str, config: Path | None, start: bool = True
) -> tuple[str, ...]:
    """Both units written (atomically), `systemctl daemon-reload`, the timer enabled (and
    started: its first run is the next midnight, or at once when one was missed)."""
    service = render_service(unitfile.packaged(SERVICE).read_text(), command, config)
    atomic_write(unit_dir / SERVICE, service, mode=0o644)
    atomic_write(unit_dir / TIMER, unitfile.packaged(TIMER).read_text(), mode=0o644)
    proc.run(["systemctl", "daemon-reload"], timeout=60, fix=FIX)
    proc.run(["systemctl", "enable", *(["--now"] if start else []), TIMER], timeout=120, fix=FIX)
    return (SERVICE, TIMER)
