"""The daily backup: sandbox-agent-backup.service (a oneshot `sandbox-agent backup --daily`)
and sandbox-agent-backup.timer, installed with the watchdog's unit, ExecStart rendered the
same way (each word as systemd reads it back), then the timer enabled through systemctl."""

from __future__ import annotations

import re
from pathlib import Path

from agent import proc
from agent.errors import AgentError, BadInput
from agent.files import atomic_write

SERVICE = "sandbox-agent-backup.service"
TIMER = "sandbox-agent-backup.timer"
FIX = "see `systemctl status sandbox-agent-backup.timer` and `journalctl -u sandbox-agent-backup`"


def packaged(name: str) -> Path:
    """systemd/<name> in the installed package (agent/systemd/), else beside agent/."""
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "systemd", package.parent / "systemd"):
        if (folder / name).is_file():
            return folder / name
    raise AgentError(
        f"{name} is not in this installation of sandbox-agent",
        fix="reinstall it from its wheel: `pip install --force-reinstall sandbox-agent`",
    )


def render_service(text: str, command: str, config: Path | None = None) -> str:
    """The service with `ExecStart=COMMAND backup --daily [--config PATH]`."""
    from agent.watchdog.install import exec_word

    try:
        words = [exec_word(command, executable=True), "backup", "--daily"]
    except ValueError as exc:
        raise AgentError(f"cannot name {command!r} in a unit: {exc}") from None
    if config is not None:
        try:
            words += ["--config", exec_word(str(config))]
        except ValueError:
            raise BadInput(
                "--config",
                f"{ascii(str(config))[:40]} cannot be written into the unit's ExecStart "
                "(it holds bytes that are not UTF-8)",
                fix="move the settings file to a path of plain characters",
            ) from None
    line = "ExecStart=" + " ".join(words)
    return re.sub(r"(?m)^ExecStart=.*$", lambda _: line, text, count=1)


def install(
    unit_dir: Path, command: str, config: Path | None, start: bool = True
) -> tuple[str, ...]:
    """Both units written (atomically), `systemctl daemon-reload`, the timer enabled (and
    started: its first run is the next midnight, or at once when one was missed)."""
    service = render_service(packaged(SERVICE).read_text(), command, config)
    atomic_write(unit_dir / SERVICE, service, mode=0o644)
    atomic_write(unit_dir / TIMER, packaged(TIMER).read_text(), mode=0o644)
    proc.run(["systemctl", "daemon-reload"], timeout=60, fix=FIX)
    proc.run(["systemctl", "enable", *(["--now"] if start else []), TIMER], timeout=120, fix=FIX)
    return (SERVICE, TIMER)
