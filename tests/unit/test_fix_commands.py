"""Every `sandbox-agent ...` command that a message or a fix of the agent tells a person to
run is one the CLI takes: its verbs and options parse (placeholders filled in)."""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import click
import pytest

from agent.cli import main

AGENT = Path(__file__).resolve().parents[2] / "agent"
COMMAND = re.compile(r"`sandbox-agent ([^`\n]*)`")
# what a placeholder in a message stands for
FILL = {"MODEL": "acme/tiny", "OTHER": "acme/other", "OLD": "acme/old", "SERVICE": "vllm"}
FORMAT = re.compile(r"\{[^}]*\}")


def told() -> list[str]:
    found = set()
    for path in AGENT.rglob("*.py"):
        found.update(COMMAND.findall(path.read_text()))
    return sorted(found)


def parse(words: list[str]) -> None:
    """Parse as click would run it, without running anything."""
    command: click.Command = main
    with command.make_context("sandbox-agent", list(words), resilient_parsing=False) as ctx:
        rest = _rest(ctx)
        while isinstance(command, click.Group) and rest:
            sub = command.get_command(ctx, rest[0])
            assert sub is not None, f"no verb {rest[0]!r} in {words}"
            command, ctx = sub, sub.make_context(rest[0], rest[1:], parent=ctx)
            rest = _rest(ctx) if isinstance(sub, click.Group) else []


def _rest(ctx: click.Context) -> list[str]:
    """What a group left for its verb (click 8.2 keeps the verb apart; 9.0 will not)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return [*ctx.protected_args, *ctx.args]


def test_the_agent_names_commands_in_its_messages() -> None:
    assert len(told()) >= 10  # the scan finds them


@pytest.mark.parametrize("line", told())
def test_a_command_a_message_names_is_one_the_cli_takes(line: str) -> None:
    words = [FILL.get(w, w) for w in shlex.split(FORMAT.sub("vllm", line))]
    if words in (["vllm"], ["model"]):  # `{verb}` filled by its caller; a group named
        return
    if words[:2] == ["model", "pull"] or words[:2] == ["model", "rm"]:
        words = [w if w != "vllm" else "acme/tiny" for w in words]
    parse(words)


def test_a_wrong_command_is_caught() -> None:
    with pytest.raises(click.UsageError):
        parse(["doctor", "-v"])
    with pytest.raises(AssertionError):
        parse(["restart"])
