"""Issue 14 h: a resume after the driver's reboot keeps its inputs. The resume unit runs this
sandbox-agent on the settings file the run read (rendered as the watchdog's unit is, one
quoting rule in agent.unitfile); the bundle's path is recorded and taken by a later run; a
bundle that is not there is refused (exit 2, also for --plan); a settings file or bundle that
a unit's sandbox hides (PrivateTmp=, ProtectHome=) is refused before anything changes."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent import settings, unitfile
from agent.cli import main
from agent.errors import BadInput
from agent.steps import inputs, units
from agent.watchdog import install


def run(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    return result.exit_code, result.output


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(folder.rglob("*"))
    }


def test_the_resume_unit_runs_this_agent_on_the_run_s_settings_file() -> None:
    config = Path("/srv/my conf/100% $HOME.yaml")
    text = units.resume_unit(config, command="/opt/other venv/bin/sandbox-agent")
    lines = text.splitlines()
    assert (
        'ExecStart="/opt/other venv/bin/sandbox-agent" bootstrap '
        '--config "/srv/my conf/100%% $$HOME.yaml"'
    ) in lines
    assert "ConditionPathExists=/srv/my conf/100%% $HOME.yaml" in lines
    default = units.resume_unit(None, command="/v/bin/sandbox-agent").splitlines()
    assert "ExecStart=/v/bin/sandbox-agent bootstrap" in default
    assert "ConditionPathExists=/etc/sandbox-agent/config.yaml" in default


def test_a_settings_file_the_resume_condition_cannot_name_is_refused() -> None:
    with pytest.raises(BadInput) as caught:
        units.resume_unit(Path("/srv/conf.yaml "), command="/v/bin/sandbox-agent")
    assert caught.value.key == "--config" and "ConditionPathExists=" in caught.value.message


def test_what_a_unit_hides_is_read_from_the_unit_itself() -> None:
    watch = install.unit_source().read_text()
    resume = unitfile.packaged(units.RESUME).read_text()
    assert unitfile.hidden(watch) == ("/home", "/root", "/run/user", "/tmp", "/var/tmp")
    assert unitfile.hidden(resume) == ("/tmp", "/var/tmp")  # homes read-only: readable


@pytest.mark.parametrize(
    ("config", "folder", "setting"),
    [
        ("TMP", "/tmp", "PrivateTmp"),
        ("VARTMP", "/var/tmp", "PrivateTmp"),
        ("/home/alice/config.yaml", "/home", "ProtectHome"),
        ("/root/config.yaml", "/root", "ProtectHome"),
    ],
)
def test_watch_install_refuses_a_settings_file_its_unit_cannot_see(
    tmp_path: Path, fake_commands, config: str, folder: str, setting: str
) -> None:
    """`--config` (a file that exists) or $SANDBOX_AGENT_CONFIG (the service has neither, so
    the unit names the file; one that is not there is the defaults)."""
    unit = install.UNIT_DIR / install.UNIT
    before = unit.read_bytes() if unit.exists() else None
    with tempfile.NamedTemporaryFile(dir="/var/tmp", suffix=".yaml") as vartmp:
        path = {"TMP": str(tmp_path / "c.yaml"), "VARTMP": vartmp.name}.get(config, config)
        if config in ("TMP", "VARTMP"):
            Path(path).write_text(f"paths: {{models: {tmp_path}/m, ui_data: {tmp_path}/u}}\n")
            code, out = run(["watch", "--install", "--config", path], {})
        else:
            code, out = run(["watch", "--install"], {"SANDBOX_AGENT_CONFIG": path})
    assert code == 2, out
    assert out.splitlines()[0] == (
        f"error: --config: '{path}' is under {folder}, which sandbox-agent.service does not "
        f"see ({setting}= in its sandbox), so it would run without its settings file"
    )
    assert fake_commands.calls == []
    assert (unit.read_bytes() if unit.exists() else None) == before


@pytest.fixture
def env(tmp_path: Path, write_config) -> dict[str, str]:
    (tmp_path / "root/etc").mkdir(parents=True)
    (tmp_path / "root/etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    return {
        "SANDBOX_AGENT_CONFIG": str(write_config()),
        "SANDBOX_AGENT_ROOT": str(tmp_path / "root"),
        "LINODE_ID": "4242",
    }


@pytest.mark.parametrize("plan", [[], ["--plan"]], ids=["run", "plan"])
def test_a_bundle_that_is_not_there_is_refused_not_replaced_by_the_network(
    tmp_path: Path, env: dict[str, str], fake_commands, plan: list[str]
) -> None:
    before = digest(tmp_path)
    code, out = run(["bootstrap", *plan], {**env, "SANDBOX_AGENT_BUNDLE": "/srv/no-bundle"})
    assert code == 2, out
    assert out.splitlines()[0] == (
        "error: SANDBOX_AGENT_BUNDLE: /srv/no-bundle does not exist: no bundle there"
    )
    code, out = run(["bootstrap", *plan, "--bundle", "/srv/no-bundle"], env)
    assert code == 2 and out.startswith("error: --bundle: /srv/no-bundle does not exist")
    assert digest(tmp_path) == before and fake_commands.calls == []


def test_the_bundle_is_recorded_and_a_later_run_takes_it(tmp_path: Path, write_config) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    s = settings.load(write_config())
    config = tmp_path / "config.yaml"

    def gather(given: str | None) -> inputs.Inputs:
        return inputs.gather(
            s, inputs.Given(instance_id="77", bundle=given), config_path=config, root=tmp_path
        )

    assert gather(None).bundle is None  # nothing recorded yet
    inputs.save(gather(str(bundle)))
    note = s.paths.state / "bootstrap/77/bundle"
    assert note.read_text() == f"{bundle}\n" and note.stat().st_mode & 0o777 == 0o600
    assert gather(None).bundle == bundle  # the resumed run, with no variable
    bundle.rmdir()
    with pytest.raises(BadInput) as caught:
        gather(None)
    assert caught.value.key == f"the bundle an earlier run was given ({note})"
    assert caught.value.fix == (
        f"put the bundle back at {bundle}, or pass `--bundle DIR` where it is now"
    )


WATCH, RESUME = "sandbox-agent.service", "sandbox-agent-bootstrap.service"


@pytest.mark.parametrize(
    ("config", "bundle", "key", "folder", "unit"),
    [
        ("TMP", None, "--config", "/tmp", WATCH),
        ("/home/alice/config.yaml", None, "--config", "/home", WATCH),
        ("/srv/absent.yaml", "TMP", "SANDBOX_AGENT_BUNDLE", "/tmp", RESUME),
    ],
    ids=["config-in-tmp", "config-in-home", "bundle-in-tmp"],
)
def test_on_the_box_itself_what_the_units_cannot_see_is_refused_first(
    tmp_path: Path, write_config, fake_commands, config: str, bundle: str | None, key: str,
    folder: str, unit: str,
) -> None:  # fmt: skip
    """With the box's own systemd (no SANDBOX_AGENT_ROOT), `--plan` (which reads only) says
    what the run would: a unit would not see the settings file or the bundle. (A settings
    file that is not there is the defaults.)"""
    env = {"LINODE_ID": "4242", "SANDBOX_AGENT_CONFIG": config}
    if config == "TMP":
        env["SANDBOX_AGENT_CONFIG"] = str(write_config())
    if bundle == "TMP":
        (tmp_path / "bundle").mkdir()
        env["SANDBOX_AGENT_BUNDLE"] = str(tmp_path / "bundle")
    shown = env[key if key != "--config" else "SANDBOX_AGENT_CONFIG"]
    code, out = run(["bootstrap", "--plan"], env)
    assert code == 2, out
    assert out.splitlines()[0].startswith(
        f"error: {key}: '{shown}' is under {folder}, which {unit} does not see"
    )
    assert fake_commands.calls == []
