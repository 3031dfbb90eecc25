"""systemd unit files as the agent installs them: the packaged unit found, its ExecStart= (and
ConditionPathExists=) pointed at this sandbox-agent and its settings file, each word written
so that systemd reads it back exactly, and the folders the unit's own sandbox hides from it.

The watchdog's unit (agent.watchdog.install) and the bootstrap's resume unit
(agent.steps.units) are both rendered here: one quoting rule, one visibility rule.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from agent import files
from agent.errors import AgentError, BadInput
from agent.validate import shown

UNIT_DIR = Path("/etc/systemd/system")  # where the box's systemd reads the units we install

PLAIN = re.compile(r"[A-Za-z0-9/._+:=@,%$-]+")  # a word systemd reads back as it is, unquoted
ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t"}
# What a unit's sandbox setting hides (systemd.exec(5)): ProtectHome=yes and =tmpfs hide the
# homes (=read-only leaves them readable); PrivateTmp=yes gives the unit /tmp and /var/tmp of
# its own, so the host's files there are not seen (and /tmp is emptied at every boot anyway).
HIDDEN_BY = {
    ("ProtectHome", "yes"): ("/home", "/root", "/run/user"),
    ("ProtectHome", "tmpfs"): ("/home", "/root", "/run/user"),
    ("PrivateTmp", "yes"): ("/tmp", "/var/tmp"),
}


def packaged(name: str) -> Path:
    """systemd/<name>: in the installed package (the wheel maps the top-level systemd/ to
    agent/systemd/), else beside agent/ in a checkout (as compose/ is found)."""
    found = files.packaged("systemd", name)
    if found is not None:
        return found
    raise AgentError(
        f"the unit {name} is not in this installation of sandbox-agent",
        fix="reinstall the release: run its stackscript.sh again",
    )


def agent_command() -> str:
    """The absolute path of the sandbox-agent that runs now (its venv's console script)."""
    script = Path(sys.argv[0])
    if script.name == "sandbox-agent" and script.is_file():
        return str(script.resolve())
    found = shutil.which("sandbox-agent") or str(Path(sys.executable).with_name("sandbox-agent"))
    return str(Path(found).resolve())


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


def _config_word(config: Path, place: str) -> str:
    try:
        return exec_word(str(config))
    except ValueError:
        raise BadInput(
            "--config",
            f"{shown(str(config))} cannot be written into {place} "
            "(it holds bytes that are not UTF-8)",
            fix="move the settings file to a path of plain characters",
        ) from None


def render(text: str, command: str, verb: str, config: Path | None = None) -> str:
    """The unit with `ExecStart=COMMAND VERB [--config PATH]`, each word as systemd reads it
    back (a path with spaces, quotes, `%` or `$` stays that path); a ConditionPathExists=
    line, when the unit has one, names the settings file too."""
    try:
        words = [exec_word(command, executable=True), verb]
    except ValueError as exc:
        raise AgentError(f"cannot name {command!r} in a unit: {exc}") from None
    if config is not None:
        words += ["--config", _config_word(config, "the unit's ExecStart")]
    line = "ExecStart=" + " ".join(words)
    text = re.sub(r"(?m)^ExecStart=.*$", lambda _: line, text, count=1)
    if config is not None and re.search(r"(?m)^ConditionPathExists=", text):
        # a path setting, not a command line: no quotes, only specifiers are expanded; a value
        # that systemd would trim or cut cannot be said there
        path = str(config)
        _config_word(config, "the unit")  # the same UTF-8 rule
        if path != path.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
            raise BadInput(
                "--config",
                f"{shown(path)} cannot be written into the unit's ConditionPathExists= "
                "(it holds a control character or ends in a space)",
                fix="move the settings file to a path of plain characters",
            )
        condition = "ConditionPathExists=" + path.replace("%", "%%")
        text = re.sub(r"(?m)^ConditionPathExists=.*$", lambda _: condition, text, count=1)
    return text


def hidden(text: str) -> tuple[str, ...]:
    """The host's folders this unit's sandbox hides from the process it starts."""
    found: list[str] = []
    for line in text.splitlines():
        key, _, value = line.strip().partition("=")
        found += HIDDEN_BY.get((key, value.strip().lower()), ())
    return tuple(dict.fromkeys(found))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def check_visible(path: Path, text: str, unit: str, where: str, what: str) -> None:
    """Refuse a path (the settings file, a bundle) that `unit` would not see when systemd
    starts it: BadInput naming `where`, exit 2."""
    text_path = str(path)
    for folder in hidden(text):
        if _inside(text_path, folder):
            setting = "PrivateTmp" if folder in ("/tmp", "/var/tmp") else "ProtectHome"
            raise BadInput(
                where,
                f"{shown(text_path, 200)} is under {folder}, which {unit} does not see "
                f"({setting}= in its sandbox), so it would run without {what}",
                fix=f"move {what} out of {folder}, e.g. to /etc/sandbox-agent/ or /opt/, and "
                "pass that path",
            )
