"""Issue 8, at the seams: secrets files, the line redactor, probes that follow no redirect,
the crash log, where the HF token may go, config.json sizes the arithmetic cannot use."""

from __future__ import annotations

import http.server
import os
import secrets as random
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import log, probes, settings
from agent.cli import render
from agent.errors import AgentError, BadInput
from agent.models import UnsizedModel
from agent.models.hub import check_token_endpoint
from agent.models.shape import ModelShape
from agent.secrets import API_KEY, HF_TOKEN, WEBUI_ADMIN, SecretStore


def test_a_secret_is_never_read_through_a_link(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("planted\n")
    store = SecretStore(tmp_path / "secrets")
    store.prepare_folder()
    store.path(API_KEY).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(AgentError, match="is a symbolic link: a secret is never read through one"):
        store.read(API_KEY)
    assert store.problems() == [f"{store.path(API_KEY)} is a symbolic link"]


def test_loose_modes_are_reported_then_repaired(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "secrets")
    store.write(HF_TOKEN, "hf_" + "x" * 30)
    os.chmod(store.path(HF_TOKEN), 0o644)
    assert store.problems() == [f"{store.path(HF_TOKEN)} is readable by others (mode 644)"]
    assert store.repair() == [store.path(HF_TOKEN)]
    assert stat.S_IMODE(store.path(HF_TOKEN).stat().st_mode) == 0o600 and store.problems() == []


def test_the_folder_is_made_private_but_an_open_one_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    made = SecretStore(tmp_path / "new" / "secrets").prepare_folder()
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(AgentError, match=r"is writable by others \(mode 1777\)") as caught:
        SecretStore(shared).write(API_KEY, "k" * 40)
    assert (
        caught.value.fix == f"`chmod 700 {shared}`, or point paths.secrets at a folder of its own"
    )
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777 and not (shared / API_KEY).exists()
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o750)
    os.chmod(existing, 0o750)
    SecretStore(existing).write(API_KEY, "k" * 40)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o750  # an existing folder keeps its mode


def test_a_generated_admin_password_is_redacted_at_once_but_the_email_is_not(
    tmp_path: Path,
) -> None:
    login = SecretStore(tmp_path / "s").ensure_admin_login("ops@example.com")
    text = log.redact_text(f"signed in as {login.email} with {login.password}")
    assert text == f"signed in as ops@example.com with {log.REDACTED}"
    fresh = SecretStore(tmp_path / "s2")
    fresh.write(WEBUI_ADMIN, "a@example.com\nPw-" + random.token_hex(8) + "\n")
    assert fresh.admin_login() is not None


def test_the_line_redactor_finds_a_secret_split_across_chunks() -> None:
    key = "sk-" + random.token_hex(16)
    log.register_secret(key)
    chunks = [b"INFO starting\nINFO api key is ", key[:10].encode(), key[10:].encode() + b"\n",
              b"tail without newline " + key.encode()]  # fmt: skip
    out = b"".join(log.redact_lines(chunks)).decode()
    assert key not in out and key[:10] not in out
    assert (
        out == f"INFO starting\nINFO api key is {log.REDACTED}\ntail without newline {log.REDACTED}"
    )


@pytest.fixture
def redirecting() -> Iterator[tuple[str, list[str]]]:
    """A server that answers 302 to another server, which records what reaches it."""
    seen: list[str] = []

    class Other(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.headers.get("Authorization") or "")
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"data": [{"id": "m"}]}')

        def log_message(self, *_: object) -> None: ...

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Other)

    class Redirect(Other):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.2:{other.server_port}/v1/models")
            self.end_headers()

    first = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    for server in (other, first):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{first.server_port}", seen
    for server in (other, first):
        server.shutdown()


def test_probes_never_follow_a_redirect_with_the_key(redirecting: tuple[str, list[str]]) -> None:
    url, seen = redirecting
    answer = probes.vllm_models(url, "the-api-key-123", "m", timeout=3)
    assert not answer.ok and answer.status == 302
    assert seen == []  # the key never reached the other host


def test_the_crash_log_is_private_capped_and_never_follows_a_link(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    path = render._append_crash(folder, "Traceback 1\n")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "Traceback 1\n"
    path.write_bytes(b"x" * (render.CRASH_LOG_MAX + 1))
    render._append_crash(folder, "Traceback 2\n")
    assert path.read_text() == "Traceback 2\n"  # over the cap: it starts over
    path.unlink()
    path.symlink_to(tmp_path / "target")
    with pytest.raises(OSError):
        render._append_crash(folder, "Traceback 3\n")
    assert not (tmp_path / "target").exists()


def hub_settings(tmp_path: Path, endpoint: str, **flags: object) -> settings.Settings:
    return settings.load(tmp_path / "none.yaml", flags={"hub.endpoint": endpoint, **flags})


@pytest.mark.parametrize(
    "endpoint, allow, words",
    [
        pytest.param("http://10.1.2.3:8080", False, "is plain http: the Hugging Face token would cross the network unencrypted", id="plain-http"),
        pytest.param("http://169.254.169.254", False, "is a link-local address: the Hugging Face token is never sent there", id="metadata-service"),
        pytest.param("https://169.254.169.254", True, "is a link-local address", id="link-local-even-allowed"),
    ],
)  # fmt: skip
def test_the_token_goes_only_where_it_is_safe(
    tmp_path: Path, endpoint: str, allow: bool, words: str
) -> None:
    s = hub_settings(tmp_path, endpoint, **{"hub.allow_plain_http": allow})
    with pytest.raises(BadInput, match=words) as caught:
        check_token_endpoint(s, "hf_" + "t" * 30)
    assert caught.value.key == "hub.endpoint" and caught.value.exit_code == 2


@pytest.mark.parametrize(
    "endpoint, allow, token",
    [
        pytest.param("http://127.0.0.1:9000", False, "hf_tok", id="loopback"),
        pytest.param("http://10.1.2.3:8080", True, "hf_tok", id="plain-http-allowed"),
        pytest.param("http://10.1.2.3:8080", False, None, id="no-token-nothing-to-protect"),
        pytest.param("https://10.1.2.3", False, "hf_tok", id="https"),
    ],
)
def test_the_token_may_go_here(tmp_path: Path, endpoint: str, allow: bool, token: str) -> None:
    check_token_endpoint(hub_settings(tmp_path, endpoint, **{"hub.allow_plain_http": allow}), token)


@pytest.mark.parametrize(
    "config, words",
    [
        pytest.param({"hidden_size": 64, "num_attention_heads": 0, "num_hidden_layers": 2}, "num_attention_heads 0", id="zero-heads"),
        pytest.param({"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": -1}, "num_key_value_heads -1", id="negative-kv"),
        pytest.param({"hidden_size": "big", "num_attention_heads": 4, "num_hidden_layers": 2}, "holds a size the arithmetic cannot use (ValueError: 'invalid literal for int()", id="not-a-number"),
        pytest.param({"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 1e400}, "OverflowError", id="overflow"),
    ],
)  # fmt: skip
def test_config_sizes_the_arithmetic_cannot_use_are_refused(config: dict, words: str) -> None:
    with pytest.raises(UnsizedModel) as caught:
        ModelShape.from_config(config)
    assert words in caught.value.message and caught.value.exit_code == 1


def test_an_ipv4_mapped_link_local_address_is_link_local_too(tmp_path: Path) -> None:
    """What a name resolving to ::ffff:169.254.169.254 gives: an IP literal needs no DNS (the
    settings' URL rule refuses the bracketed form, so the settings are made past it)."""
    import dataclasses

    s = hub_settings(tmp_path, "https://example.org")
    mapped = dataclasses.replace(
        s, hub=dataclasses.replace(s.hub, endpoint="http://[::ffff:169.254.169.254]/")
    )
    with pytest.raises(BadInput, match="is a link-local address"):
        check_token_endpoint(mapped, "hf_" + "t" * 30)
