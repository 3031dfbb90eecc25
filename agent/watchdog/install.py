"""`sandbox-agent watch --install` and the bootstrap: the unit the wheel carries, installed
with ExecStart pointing at this sandbox-agent, then enabled and started through the one
command runner (systemctl); the daily backup's timer with it (agent.backup.timer)."""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from agent import proc
from agent.errors import AgentError, BadInput
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


PLAIN = re.compile(r"[A-Za-z0-9/._+:=@,%$-]+")  # a word systemd reads back as it is, unquoted
ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t"}


def exec_word(word: str, *, executable: bool = False) -> str:
    """One word of ExecStart= that systemd reads back as exactly `word` (systemd.service(5),
    systemd.syntax(7)): `%` doubled (specifiers), `$` doubled in arguments (variables; the
    executable's path is not expanded), and in double quotes with C escapes when it holds
    whitespace, a quote, a backslash or anything else outside PLAIN."""
    if not word or any(ord(c) == 0 or 0xD800 <= ord(c) <= 0xDFFF for c in word):
        raise ValueError("an empty word, a NUL or bytes that are not UTF-8")
    word = word.replace("%", "%%") if executable else word.replace("%", "%%").replace("$", "$$")
    if PLAIN.fullmatch(word):
        return word
    quoted = "".join(
        ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
        for c in word
    )
    return f'"{quoted}"'


def render_unit(text: str, command: str, config: Path | None = None) -> str:
    """The unit with ExecStart at `command` (and `--config PATH`), each word as systemd reads
    it back: a path with spaces, quotes, `%` or `$` stays that path."""
    try:
        words = [exec_word(command, executable=True), "watch"]
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


@dataclass(frozen=True)
class InstallResult(Result):
    unit: Path
    exec_start: str
    enabled: bool
    started: bool
    timers: tuple[str, ...] = ()  # installed with it: the daily backup (agent.backup.timer)


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
    from agent.backup import timer

    timers = timer.install(unit_dir, command or agent_command(), config, start)
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return InstallResult(target, exec_start.split("=", 1)[1], True, start, timers)
