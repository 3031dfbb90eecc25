"""The MOTD: addresses with the public IP (the metadata service, else the box's first IPv4),
where the credentials are (never their values), the model, doctor; on failure the step, error
and fix. The metadata service is a real local one (tests/fakes/web_peers.py)."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import pytest

from agent import bootstrap, linode, log, settings
from agent.markers import BootState
from agent.secrets import SecretStore
from agent.steps import StepContext, motd
from tests.fakes.web_peers import MetadataServer, closed_url, running


def ctx_for(tmp_path: Path, write_config, metadata: str | None = None, **over) -> StepContext:
    s = settings.load(write_config(over))
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    where = {"metadata": metadata} if metadata else {}
    return StepContext(s, BootState(s.paths.state, "1"), root=root, is_root=True, **where)


@pytest.fixture
def metadata():
    with running(MetadataServer()) as server:
        yield server


@pytest.fixture
def log_lines():
    stream = io.StringIO()
    log.configure(verbose=True, stream=stream)
    yield stream.getvalue
    log.configure()


def test_the_public_ip_comes_from_the_metadata_service(
    metadata: MetadataServer, log_lines, fake_commands
) -> None:
    metadata.public_ip = "198.51.100.23"
    assert linode.public_ipv4(metadata.url) == "198.51.100.23"
    token, network = metadata.requests
    assert (token.method, token.path) == ("PUT", "/v1/token")
    assert token.headers["Metadata-Token-Expiry-Seconds"] == "300"
    assert (network.method, network.path) == ("GET", "/v1/network")
    assert network.headers["Metadata-Token"] == metadata.token
    assert network.headers["Accept"] == "application/json"
    # the token is sent only in its header: never in a log line, never to a command
    assert metadata.token not in log_lines()
    assert log.redact_text(f"x {metadata.token} y") == f"x {log.REDACTED} y"
    assert fake_commands.calls == []


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param({"public_ip": None}, id="no-public-address"),
        pytest.param({"revoked": True}, id="token-refused"),
    ],
)
def test_a_metadata_service_without_an_answer_falls_back(metadata, breakage, log_lines) -> None:
    for name, value in breakage.items():
        setattr(metadata, name, value)
    assert linode.metadata_ipv4(metadata.url) is None
    assert linode.public_ipv4(metadata.url) == linode.interface_ipv4()
    assert [r.path for r in metadata.requests] == ["/v1/token", "/v1/network"] * 2
    assert "metadata.unavailable" in log_lines() or "metadata.no_public_ipv4" in log_lines()
    assert metadata.token not in log_lines()


def test_a_redirect_of_the_metadata_service_is_not_followed(metadata) -> None:
    with running(MetadataServer()) as elsewhere:
        metadata.redirect = f"{elsewhere.url}/token"
        assert linode.metadata_ipv4(metadata.url) is None
        assert elsewhere.requests == []


def test_without_the_metadata_service_the_first_address_of_the_box_quickly() -> None:
    started = time.monotonic()
    assert linode.metadata_ipv4(closed_url()) is None
    assert time.monotonic() - started < 1


def test_a_slow_metadata_service_is_not_waited_for(metadata: MetadataServer) -> None:
    metadata.delay = 30
    started = time.monotonic()
    assert linode.public_ipv4(metadata.url) == linode.interface_ipv4()
    assert time.monotonic() - started < linode.TIMEOUT + 1.5


@pytest.mark.parametrize(
    ("interfaces", "expected"),
    [
        pytest.param(
            [
                ("lo", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]),
                ("eth0", [(socket.AF_INET6, "fe80::1"), (socket.AF_INET, "192.0.2.44")]),
                ("eth1", [(socket.AF_INET, "10.0.0.2")]),
            ],
            "192.0.2.44",
            id="as-hostname-I-prints-it-first",
        ),
        pytest.param(
            [
                ("docker0", [(socket.AF_INET, "172.17.0.1")]),
                ("br-3f2a", [(socket.AF_INET, "172.18.0.1")]),
                ("veth12ab", [(socket.AF_INET, "169.254.3.4")]),
                ("eth0", [(socket.AF_INET, "169.254.9.9"), (socket.AF_INET, "203.0.113.9")]),
            ],
            "203.0.113.9",
            id="never-a-container-bridge-nor-link-local",
        ),
        pytest.param([("lo", [(socket.AF_INET, "127.0.0.1")])], None, id="none"),
    ],
)
def test_the_fallback_is_the_first_ipv4_of_the_box_s_own_interfaces(interfaces, expected) -> None:
    assert linode.first_ipv4(interfaces) == expected


def test_the_fallback_reads_this_machine_s_interfaces() -> None:
    import psutil

    found = linode.interface_ipv4()
    mine = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
    assert found is None or found in mine


def test_motd_has_urls_and_paths_never_the_secrets(tmp_path: Path, write_config, metadata):
    metadata.public_ip = "203.0.113.9"
    ctx = ctx_for(
        tmp_path,
        write_config,
        metadata.url,
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
    assert len(metadata.requests) == 2  # asked once per run, however often the text is made


def test_no_public_address_is_asked_for_when_nothing_binds_a_wildcard(
    tmp_path: Path, write_config, metadata
) -> None:
    ctx = ctx_for(
        tmp_path,
        write_config,
        metadata.url,
        api={"bind": "127.0.0.1", "port": 8000},
        ui={"bind": "127.0.0.1", "port": 3000, "admin_email": "owner@example.com"},
    )
    motd.apply(ctx)
    assert (
        " Chat (Open WebUI): http://127.0.0.1:3000"
        in (ctx.root / "etc/motd.d/sandbox-agent").read_text()
    )
    assert metadata.requests == []


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


def test_with_the_door_open_the_motd_gives_the_https_urls_and_asks_no_address(
    tmp_path: Path, write_config, metadata
) -> None:
    from agent import door

    ctx = ctx_for(
        tmp_path,
        write_config,
        metadata.url,
        api={"bind": "0.0.0.0", "port": 8000},
        ui={"bind": "0.0.0.0", "port": 3000},
        https={"domain": "auto", "port": 443, "api_port": 8443},
    )
    door.save_name(ctx.settings, "203-0-113-9.ip.linodeusercontent.com")  # as `up` saved it
    motd.apply(ctx)
    text = (ctx.root / "etc/motd.d/sandbox-agent").read_text()
    assert " Chat (Open WebUI): https://203-0-113-9.ip.linodeusercontent.com\n" in text
    assert (
        " API (OpenAI-compatible): https://203-0-113-9.ip.linodeusercontent.com:8443/v1\n" in text
    )
    assert "http://" not in text and metadata.requests == []
