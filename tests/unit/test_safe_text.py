"""Issue 14 b: what reaches the MOTD, the console (the StackScript's log) and `bootstrap
--status` is redacted and holds no control character: one helper, `log.safe_text`, at every
such sink. A step raises an unexpected exception carrying a secret the agent keeps and
terminal escape sequences; none of them reaches the login message, last-run.json, --status or
the console."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from agent import bootstrap, log, maintenance, settings
from agent.cli import main
from agent.cli.bootstrap import _Board, result_text
from agent.cli.render import fail, render
from agent.errors import AgentError
from agent.markers import BootState
from agent.secrets import API_KEY, SecretStore
from agent.steps import StepContext, StepMeta, Todo
from agent.systemd_client import Notifier
from agent.watchdog.actions import Actions
from agent.watchdog.report import Reporter

# a window title set, the screen cleared, blinking red, a cursor move, a carriage return that
# would overwrite the line, and a bidi override that reverses what follows
HOSTILE = "\x1b]0;you are pwned\x07\x1b[2J\x1b[5;31mred\x1b[0m\x1b[10;1H\r\u202etxt.exe"
CONTROLS = ("\x1b", "\x07", "\r", "\u202e", "\x9b")


@pytest.fixture(autouse=True)
def events() -> Iterator[io.StringIO]:
    """The runner's journal events go here (a captured stream closes with its test)."""
    stream = io.StringIO()
    log.configure(stream=stream)
    yield stream
    log.configure()


def clean(text: str, secret: str) -> bool:
    return secret not in text and not any(c in text for c in CONTROLS)


@pytest.mark.parametrize(
    "raw, shown",
    [
        pytest.param("a\x1b]0;title\x07b", "ab", id="osc-title-bel"),
        pytest.param("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b", "alinkb", id="osc-link-st"),
        pytest.param("x\x1b[2Jy\x1b[1;31mz", "xyz", id="csi"),
        pytest.param("one\ntwo\tthree", "one\ntwo\tthree", id="newline-and-tab-stay"),
        pytest.param("over\rwrite\x00\x08\x7f", "overwrite", id="c0-and-del"),
        pytest.param("c1\x9b2Jx\x85", "c1x", id="c1"),
        pytest.param("ok \u202eexe.txt\u200b", "ok exe.txt", id="bidi-and-zero-width"),
        pytest.param("lone \x1b", "lone ", id="lone-escape"),
        pytest.param("title \x1b]0;never ends\nnext line", "title \nnext line", id="osc-unended"),
        pytest.param("é ü 日本 ✓", "é ü 日本 ✓", id="unicode-stays"),
    ],
)
def test_safe_text_strips_every_control_and_escape(raw: str, shown: str) -> None:
    assert log.safe_text(raw) == shown


def test_safe_text_redacts_a_secret_even_one_split_by_an_escape() -> None:
    log.register_secret("s3cret-value-for-safe-text")
    assert log.safe_text("key s3cret-\x1b[0mvalue-for-safe-text end") == "key [REDACTED] end"
    assert log.safe_text("token hf_" + "a" * 30) == "token [REDACTED]"


@pytest.fixture
def ctx(tmp_path: Path, write_config) -> StepContext:
    s = settings.load(write_config())
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    return StepContext(s, BootState(s.paths.state, "12345"), root=root, is_root=True)


def raising(step_id: str, exc: BaseException) -> SimpleNamespace:
    def apply(_: StepContext) -> None:
        raise exc

    return SimpleNamespace(META=StepMeta(step_id), check=lambda c: Todo("to do"), apply=apply)


def status_output(ctx: StepContext, write_config) -> tuple[int, str]:
    env = {
        "SANDBOX_AGENT_CONFIG": str(write_config()),
        "SANDBOX_AGENT_ROOT": str(ctx.root),
        "LINODE_ID": "12345",
    }
    ran = CliRunner().invoke(main, ["bootstrap", "--status"], env=env, catch_exceptions=False)
    return ran.exit_code, ran.output


def test_an_unexpected_exception_with_a_secret_and_escapes_reaches_no_sink_unclean(
    ctx: StepContext, write_config, capsys: pytest.CaptureFixture[str], events: io.StringIO
) -> None:
    key = SecretStore(ctx.settings.paths.secrets).ensure(API_KEY)  # a secret the agent keeps
    step = raising("images", RuntimeError(f"registry answered {key} {HOSTILE}"))
    board = _Board()
    result = bootstrap.run(ctx, [step], listener=board.draw, reboot=False)
    assert result.status == "failed"
    with pytest.raises(SystemExit):
        render(result, False, lambda r: result_text(r, drawn=True))
    console = capsys.readouterr().out
    # the board's own redraw codes are ours; the step's are gone
    assert "internal error: RuntimeError: registry answered [REDACTED] redtxt.exe" in console
    assert key not in console and "pwned" not in console and "\x1b]" not in console
    assert "\x07" not in console and "\x1b[2J" not in console and "\u202e" not in console

    motd_text = (ctx.root / "etc/motd.d/sandbox-agent").read_text()
    assert clean(motd_text, key), motd_text
    assert "   internal error: RuntimeError: registry answered [REDACTED] redtxt.exe\n" in motd_text

    raw = (ctx.settings.paths.state / "bootstrap/12345/last-run.json").read_text()
    assert key not in raw and "\\u001b" not in raw and "\\u0007" not in raw, raw
    [record] = json.loads(raw)["steps"]
    assert (
        record["detail"] == "internal error: RuntimeError: registry answered [REDACTED] redtxt.exe"
    )

    journal = events.getvalue()  # JSON lines: the traceback is there, redacted
    assert "step.crashed" in journal and key not in journal and "\\u001b" not in journal

    code, output = status_output(ctx, write_config)
    assert code == 1 and clean(output, key)
    assert "[!] images  failed   internal error: RuntimeError: registry answered [REDACTED]" in (
        output
    )


def test_a_registry_error_with_escapes_reaches_the_login_screen_clean(
    ctx: StepContext, write_config
) -> None:
    key = SecretStore(ctx.settings.paths.secrets).ensure(API_KEY)
    exc = AgentError(
        f"the image vllm/x:1 cannot be pulled: {HOSTILE}\nwith {key}",
        fix="check images.vllm \x1b[8mhidden\x1b[0m",
    )
    bootstrap.run(ctx, [raising("images", exc)], reboot=False)
    text = (ctx.root / "etc/motd.d/sandbox-agent").read_text()
    assert clean(text, key) and "pwned" not in text, text
    assert "   the image vllm/x:1 cannot be pulled: redtxt.exe\n   with [REDACTED]\n" in text
    assert "   fix: check images.vllm hidden\n" in text


def test_an_old_dirty_status_file_is_shown_clean(ctx: StepContext, write_config) -> None:
    """--status cleans what it shows, also a record an older agent wrote."""
    key = SecretStore(ctx.settings.paths.secrets).ensure(API_KEY)
    ctx.state.record_run(
        {
            "instance_id": "12345",
            "status": "failed",
            "steps": [
                {
                    "id": "images",
                    "title": "images",
                    "status": "failed",
                    "detail": f"{key} {HOSTILE}",
                    "fix": f"\x1b[2J{key}",
                }
            ],
        }
    )
    code, output = status_output(ctx, write_config)
    assert code == 1 and clean(output, key), repr(output)
    assert "fix: [REDACTED]" in output


def test_a_cli_error_is_printed_clean(capsys: pytest.CaptureFixture[str]) -> None:
    log.register_secret("another-secret-for-the-cli")
    with pytest.raises(SystemExit):
        fail(AgentError(f"no: another-secret-for-the-cli {HOSTILE}", fix=f"do {HOSTILE}"), False)
    err = capsys.readouterr().err
    assert err == "error: no: [REDACTED] redtxt.exe\n  fix: do redtxt.exe\n"


def test_the_watchdog_login_message_is_clean(tmp_path: Path, write_config) -> None:
    s = settings.load(write_config({"watch": {"motd": str(tmp_path / "run/motd.d/watch")}}))
    actions = Actions(s, Reporter(), Notifier(None))
    actions.failed_reason["vllm"] = f"/health answered {HOSTILE}"
    actions.change_pending(maintenance.PendingChange("switch-model", f"/etc/x{HOSTILE}.yaml"))
    text = s.watch.motd.read_text()
    assert clean(text, "\x00") and "pwned" not in text, text
    assert "  vllm FAILED: /health answered redtxt.exe\n" in text
    assert "  CHANGE HALF DONE: an interrupted switch-model left the settings half changed" in text
