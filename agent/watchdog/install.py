"""`sandbox-agent watch --install` and the bootstrap: the unit the wheel carries, installed
with ExecStart pointing at this sandbox-agent, then enabled and started through the one
command runner (systemctl)."""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from agent import proc
from agent.errors import AgentError
from agent.files import atomic_write
from agent.results import Result

UNIT = "sandbox-agent.service"
UNIT_DIR = Path("/etc/systemd/system")


def unit_source() -> Path:
    """systemd/sandbox-agent.service: in the installed package (the wheel maps the top-level
    systemd/ to agent/systemd/), else beside agent/ in a checkout."""
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "systemd", package.parent / "systemd"):
        if (folder / UNIT).is_file():
            return folder / UNIT
    raise AgentError(
        f"{UNIT} is not in this installation of sandbox-agent",
        fix="reinstall it from its wheel: `pip install --force-reinstall sandbox-agent`",
    )


def agent_command() -> str:
    """The absolute path of the sandbox-agent that runs now (its venv's console script)."""
    script = Path(sys.argv[0])
    if script.name == "sandbox-agent" and script.is_file():
        return str(script.resolve())
    found = shutil.which("sandbox-agent") or str(Path(sys.executable).with_name("sandbox-agent"))
    return str(Path(found).resolve())


def render_unit(text: str, command: str, config: Path | None = None) -> str:
    argv = f"{command} watch" + (f" --config {config}" if config else "")
    return re.sub(r"(?m)^ExecStart=.*$", lambda _: f"ExecStart={argv}", text, count=1)


@dataclass(frozen=True)
class InstallResult(Result):
    unit: Path
    exec_start: str
    enabled: bool
    started: bool


def install_unit(
    *,
    unit_dir: Path = UNIT_DIR,
    command: str | None = None,
    config: Path | None = None,
    start: bool = True,
) -> InstallResult:
    """Write the unit (atomically), `systemctl daemon-reload`, `enable` (and `--now`)."""
    text = render_unit(unit_source().read_text(), command or agent_command(), config)
    target = unit_dir / UNIT
    atomic_write(target, text, mode=0o644)
    fix = "see `systemctl status sandbox-agent` and `journalctl -u sandbox-agent`"
    proc.run(["systemctl", "daemon-reload"], timeout=60, fix=fix)
    proc.run(["systemctl", "enable", *(["--now"] if start else []), UNIT], timeout=120, fix=fix)
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return InstallResult(target, exec_start.split("=", 1)[1], True, start)
