"""The one command runner: argv only, timeouts kill the process group, errors carry output."""

from __future__ import annotations

import time

import pytest

from agent import proc
from tests.conftest import UnexpectedCommand


def test_guard_refuses_real_commands_by_default() -> None:
    with pytest.raises(UnexpectedCommand, match="test ran a real command"):
        proc.run(["true"])


def test_guard_is_not_swallowed_by_the_agents_last_line_of_defence() -> None:
    """The CLI catches every Exception (a crash becomes a one-line message); the guard must
    still reach pytest, so it is a BaseException."""
    from agent.cli.render import guarded

    @guarded
    def verb() -> None:
        proc.run(["true"])

    with pytest.raises(UnexpectedCommand, match="test ran a real command"):
        verb()


def test_shell_lines_are_refused(real_commands) -> None:
    with pytest.raises(TypeError, match="never a shell line"):
        proc.run("echo hi")  # type: ignore[arg-type]


def test_failure_carries_command_rc_stdout_stderr(real_commands) -> None:
    with pytest.raises(proc.CommandFailed) as err:
        proc.run(["sh", "-c", "echo out; echo oops >&2; exit 3"], fix="try again")
    e = err.value
    assert e.returncode == 3 and e.stdout == "out\n" and e.stderr == "oops\n"
    assert e.argv[0] == "sh" and "exited with 3" in e.message and "oops" in e.message
    assert e.fix == "try again" and e.exit_code == 1


def test_timeout_kills_the_whole_process_group(real_commands, tmp_path) -> None:
    marker = tmp_path / "grandchild-survived"
    start = time.monotonic()
    with pytest.raises(proc.CommandTimeout) as err:
        proc.run(["sh", "-c", f"(sleep 2; touch {marker}) & sleep 30"], timeout=0.5)
    assert time.monotonic() - start < 5
    assert "did not finish within 0.5s" in err.value.message
    time.sleep(2.5)
    assert not marker.exists(), "the grandchild outlived the timeout"


def test_missing_program_is_a_clear_error(real_commands) -> None:
    with pytest.raises(proc.CommandNotFound, match="`no-such-tool-x` is not installed"):
        proc.run(["no-such-tool-x"])


def test_check_false_returns_the_result(real_commands) -> None:
    result = proc.run(["sh", "-c", "exit 4"], check=False)
    assert result.returncode == 4


def test_fake_table_answers_by_pattern(fake_commands) -> None:
    fake_commands.on(r"^apt-get install .*nvidia", stdout="ok\n").on(r"^systemctl is-active", rc=3)
    assert proc.run(["apt-get", "install", "-y", "nvidia-driver-580"]).stdout == "ok\n"
    with pytest.raises(proc.CommandFailed):
        proc.run(["systemctl", "is-active", "docker"])
    assert fake_commands.calls[0][0] == "apt-get"
    with pytest.raises(UnexpectedCommand, match="no canned answer for 'reboot'"):
        proc.run(["reboot"])
