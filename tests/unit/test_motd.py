"""The MOTD: addresses with the public IP (metadata service, else `hostname -I`), where the
credentials are (never their values), the model, doctor; on failure the step, error and fix."""

from __future__ import annotations

from pathlib import Path

from agent import bootstrap, linode, proc, settings
from agent.secrets import SecretStore
from agent.state import BootState
from agent.steps import StepContext, motd
from tests.fakes.box import FakeBox


def ctx_for(tmp_path: Path, write_config, **over) -> StepContext:
    s = settings.load(write_config(over))
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return StepContext(s, BootState(s.paths.state, "1"), root=root, is_root=True)


def test_the_public_ip_comes_from_the_metadata_service(tmp_path: Path) -> None:
    box = FakeBox(tmp_path / "box")
    box.set(public_ip="198.51.100.23")
    previous = proc.set_runner(box)
    try:
        assert linode.public_ipv4() == "198.51.100.23"
    finally:
        proc.set_runner(previous)
    calls = box.calls()
    assert calls[0] == (
        "curl -fsS --max-time 3 -X PUT -H Metadata-Token-Expiry-Seconds: 300 "
        "http://169.254.169.254/v1/token"
    )
    # the token goes to curl on stdin (-H @-), never into its argv
    assert calls[1] == (
        "curl -H @- -fsS --max-time 3 -H Accept: application/json http://169.254.169.254/v1/network"
    )
    assert "fake-metadata-token" not in " ".join(calls)


def test_without_the_metadata_service_the_first_address_of_hostname_i(fake_commands) -> None:
    fake_commands.on(r"^curl .*169\.254\.169\.254", rc=28, stderr="timed out")
    fake_commands.on(r"^hostname -I$", stdout="127.0.0.1 fe80::1 192.0.2.44 10.0.0.2\n")
    assert linode.public_ipv4() == "192.0.2.44"


def test_motd_has_urls_and_paths_never_the_secrets(tmp_path: Path, write_config, fake_commands):
    fake_commands.on(r"^curl .*169\.254\.169\.254", rc=7)
    fake_commands.on(r"^hostname -I$", stdout="203.0.113.9\n")
    ctx = ctx_for(
        tmp_path,
        write_config,
        api={"bind": "127.0.0.1", "port": 8000},
        ui={"bind": "0.0.0.0", "port": 3000, "admin_email": "owner@example.com"},
        model={"id": "acme/tiny-chat", "served_name": "tiny"},
    )
    store = SecretStore(ctx.settings.paths.secrets)
    key = store.ensure("api_key")
    login = store.ensure_admin_login("owner@example.com")
    motd.apply(ctx)
    text = (ctx.root / "etc/motd.d/sandbox-agent").read_text()
    secrets = ctx.settings.paths.secrets
    assert " Chat (Open WebUI): http://203.0.113.9:3000" in text
    assert (
        " API (OpenAI-compatible): http://127.0.0.1:8000/v1  (on this box only: ssh -L to reach it)"
        in text
    )
    assert f" API key: in {secrets}/api_key" in text
    assert f" UI admin sign-in: in {secrets}/webui_admin" in text
    assert " Model: tiny" in text and " Health: sandbox-agent doctor" in text
    assert key not in text and login.password not in text
    assert motd.check(ctx).detail == "/etc/motd.d/sandbox-agent is up to date"  # type: ignore[union-attr]


def test_a_failed_run_puts_the_step_its_error_and_the_fix_on_the_login_screen(
    tmp_path: Path, write_config
) -> None:
    from types import SimpleNamespace

    from agent.errors import AgentError
    from agent.steps import StepMeta, Todo

    def fail(_c: StepContext) -> None:
        raise AgentError("the image vllm/x:1 cannot be pulled: denied", fix="check images.vllm")

    ctx = ctx_for(tmp_path, write_config)
    step = SimpleNamespace(META=StepMeta("images"), check=lambda c: Todo("pull"), apply=fail)
    result = bootstrap.run(ctx, [step])
    text = (ctx.root / "etc/motd.d/sandbox-agent").read_text()
    assert result.status == "failed"
    assert " SETUP FAILED at step images:\n   the image vllm/x:1 cannot be pulled: denied\n" in text
    assert "   fix: check images.vllm\n" in text
    assert "sandbox-agent bootstrap --status" in text
