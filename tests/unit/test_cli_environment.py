"""The verbs see the Environment they are handed (httpie's): its variables, its streams and
whether they are terminals; the process's own stay untouched."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from agent.cli import main
from agent.cli.environment import Environment


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(env: Environment, *args: str) -> int:
    with pytest.raises(SystemExit) as ended:
        main.main(list(args), obj=env, standalone_mode=False)
    code = ended.value.code
    return code if isinstance(code, int) else 1


def test_a_verb_reads_the_settings_and_writes_the_streams_it_is_handed(tmp_path: Path) -> None:
    models = tmp_path / "models"
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  id: org/served\n")
    out, err = io.StringIO(), io.StringIO()
    env = Environment(
        environ={"SANDBOX_AGENT_CONFIG": str(config), "MODELS_DIR": str(models)},
        stdin=io.StringIO(),
        stdout=out,
        stderr=err,
    )
    assert "MODELS_DIR" not in os.environ
    assert run(env, "model", "list", "--json") == 0
    assert json.loads(out.getvalue())["root"] == str(models / "hub")  # the Hub cache in it
    assert err.getvalue() == ""


def test_a_change_asks_the_terminal_it_is_handed_and_no_means_nothing_changed(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  id: org/served\n")
    before = config.read_text()
    out, err = io.StringIO(), io.StringIO()
    env = Environment(
        environ={"SANDBOX_AGENT_CONFIG": str(config)}, stdin=Terminal("n\n"), stdout=out, stderr=err
    )
    assert run(env, "switch-model", "org/other") == 2
    assert out.getvalue().startswith("Switch org/served")
    assert "not confirmed; nothing was changed" in err.getvalue()
    assert config.read_text() == before


def test_a_change_with_no_terminal_and_no_yes_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  id: org/served\n")
    err = io.StringIO()
    env = Environment(
        environ={"SANDBOX_AGENT_CONFIG": str(config)},
        stdin=io.StringIO("y\n"),
        stdout=io.StringIO(),
        stderr=err,
    )
    assert run(env, "switch-model", "org/other") == 2
    assert "error: --yes: this changes the running stack" in err.getvalue()
    assert "fix: pass --yes to confirm" in err.getvalue()
