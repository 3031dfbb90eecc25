"""The message of the day: where the stack is and how to reach it, or what failed and the fix.

Paths to the API key and the admin login, never the values. Written to /etc/motd.d/, which
pam_motd shows at login on Ubuntu and Debian without touching the distribution's /etc/motd.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent import log
from agent.files import atomic_write

MOTD = "etc/motd.d/sandbox-agent"
RULE = "-" * 66


@dataclass(frozen=True)
class Ready:
    model: str
    api_url: str
    ui_url: str | None
    key_file: Path
    admin_file: Path | None
    api_local_only: bool


@dataclass(frozen=True)
class Failed:
    step: str
    error: str
    fix: str | None


def text(facts: Ready | Failed) -> str:
    """The login message. Every line goes through `log.safe_text`: an error's words can come
    from a registry or a crash, and the file is world-readable and printed on a terminal."""
    lines = [RULE, " sandbox-agent: private vLLM + Open WebUI"]
    if isinstance(facts, Failed):
        lines += [
            f" SETUP FAILED at step {facts.step}:",
            *(f"   {line}" for line in facts.error.splitlines() or [""]),
        ]
        if facts.fix:
            lines.append(f"   fix: {facts.fix}")
        lines += [
            "   then run `sandbox-agent bootstrap` again (it resumes where it stopped)",
            " Checklist:  sandbox-agent bootstrap --status",
        ]
    else:
        if facts.ui_url:
            lines.append(f" Chat (Open WebUI): {facts.ui_url}")
        local = "  (on this box only: ssh -L to reach it)" if facts.api_local_only else ""
        lines += [
            f" API (OpenAI-compatible): {facts.api_url}{local}",
            f" Model: {facts.model}",
            f" API key: in {facts.key_file}",
        ]
        if facts.admin_file:
            lines.append(f" UI admin sign-in: in {facts.admin_file}")
    lines += [" Health: sandbox-agent doctor", RULE, ""]
    return "\n".join(log.safe_text(line) for line in lines)


def write(root: Path, facts: Ready | Failed) -> Path:
    path = root / MOTD
    atomic_write(path, text(facts), mode=0o644)
    return path
