"""An apt repository's signing key over real HTTPS (tests/fakes/web_peers.py, trusted through
SSL_CERT_FILE) or from the offline bundle: only an OpenPGP public key is written, atomically
and 0644, where the source list's signed-by names it; every failure names the host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent import http_client, settings
from agent.errors import AgentError
from agent.markers import BootState
from agent.steps import StepContext, apt, apt_keys
from tests.fakes.box import lay_out_host, lay_out_key_bundle
from tests.fakes.web_peers import (
    TEST_KEY_ASC,
    TEST_KEY_GPG,
    KeyServer,
    closed_url,
    running,
)

HTML = b"<html><body>Welcome to the hotel Wi-Fi. Please sign in.</body></html>\n"


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    with running(KeyServer(tmp_path / "tls")) as server:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.cafile))  # OpenSSL reads it per context
        for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
            monkeypatch.delenv(name, raising=False)
        yield server


def ctx_for(tmp_path: Path, write_config, bundle: Path | None = None) -> StepContext:
    s = settings.load(write_config())
    root = lay_out_host(tmp_path / "root", "debian-12")
    return StepContext(s, BootState(s.paths.state, "1"), root=root, is_root=True, bundle=bundle)


def repo(keys: KeyServer, path: str = "/linux/debian/gpg") -> apt.AptRepo:
    return apt.AptRepo("acme", keys.url(path), "deb [signed-by={keyring}] https://acme/ stable")


@pytest.mark.parametrize(
    "served", [pytest.param(TEST_KEY_ASC, id="armoured"), pytest.param(TEST_KEY_GPG, id="binary")]
)
def test_a_downloaded_key_is_kept_armoured_0644_where_signed_by_names_it(
    tmp_path: Path, write_config, keys: KeyServer, served: bytes
) -> None:
    keys.files["/linux/debian/gpg"] = served
    ctx = ctx_for(tmp_path, write_config)
    apt.add_repo(ctx, repo(keys))
    keyring = ctx.root / "etc/apt/keyrings/acme.asc"
    # a binary key comes out as gpg's own `--armor --export` of it (its CRC-24 included)
    assert keyring.read_bytes() == TEST_KEY_ASC
    assert keyring.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in keyring.parent.iterdir()] == ["acme.asc"]  # no temp file left
    line = (ctx.root / "etc/apt/sources.list.d/acme.list").read_text()
    assert line == "deb [signed-by=/etc/apt/keyrings/acme.asc] https://acme/ stable\n"
    apt.add_repo(ctx, repo(keys))  # fetched once
    assert keys.paths() == ["/linux/debian/gpg"]


def test_a_page_that_is_no_key_is_refused_naming_the_host(
    tmp_path: Path, write_config, keys: KeyServer
) -> None:
    keys.files["/gpg"] = HTML
    ctx = ctx_for(tmp_path, write_config)
    with pytest.raises(AgentError) as caught:
        apt.add_repo(ctx, repo(keys, "/gpg"))
    assert caught.value.message == (
        f"the acme apt repository's key: what 127.0.0.1 sent from {keys.url('/gpg')} is not an "
        "OpenPGP public key (a proxy's or a captive portal's page?)"
    )
    assert caught.value.fix == (
        "check that this box reaches 127.0.0.1 over https, or put the key in the bundle as "
        "apt-keys/acme.asc; then run `sandbox-agent bootstrap` again"
    )
    assert not (ctx.root / "etc/apt/keyrings/acme.asc").exists()
    assert not (ctx.root / "etc/apt/sources.list.d/acme.list").exists()
    assert keys.paths() == ["/gpg"]  # no retry mends a wrong answer


def test_an_oversized_answer_is_refused_without_a_retry(
    tmp_path: Path, write_config, keys: KeyServer
) -> None:
    keys.files["/gpg"] = TEST_KEY_ASC + b"x" * (2 << 20)
    ctx = ctx_for(tmp_path, write_config)
    with pytest.raises(
        AgentError, match=r"key: cannot download .*/gpg: it sends more than 1 MiB \("
    ):
        apt.add_repo(ctx, repo(keys, "/gpg"))
    assert not (ctx.root / "etc/apt/keyrings/acme.asc").exists()
    assert keys.paths() == ["/gpg"]


def test_an_armour_around_something_else_is_no_key() -> None:
    fake = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\naGVsbG8gd29ybGQ=\n-----END PGP PUBLIC KEY BLOCK-----\n"
    assert apt_keys.armoured(fake) is None
    assert apt_keys.armoured(TEST_KEY_ASC.replace(b"-----END", b"-----NOT")) is None
    assert apt_keys.armoured(b"\x99\x00") is None
    assert apt_keys.armoured(TEST_KEY_ASC) == TEST_KEY_ASC


def test_the_bundle_s_key_is_used_and_nothing_is_downloaded(
    tmp_path: Path, write_config, keys: KeyServer
) -> None:
    bundle = lay_out_key_bundle(tmp_path / "bundle", ("acme",))
    ctx = ctx_for(tmp_path, write_config, bundle)
    apt.add_repo(ctx, repo(keys))
    assert (ctx.root / "etc/apt/keyrings/acme.asc").read_bytes() == TEST_KEY_ASC
    assert keys.requests == []


def test_a_bundle_file_that_is_no_key_is_refused_naming_it(
    tmp_path: Path, write_config, keys: KeyServer
) -> None:
    bundle = lay_out_key_bundle(tmp_path / "bundle", ())
    (bundle / "apt-keys/acme.asc").write_bytes(HTML)
    ctx = ctx_for(tmp_path, write_config, bundle)
    with pytest.raises(AgentError) as caught:
        apt.add_repo(ctx, repo(keys))
    assert caught.value.message == f"{bundle}/apt-keys/acme.asc is not an OpenPGP public key"
    assert caught.value.fix == (
        f"put the key from {keys.url('/linux/debian/gpg')} there, or remove the file to download it"
    )
    assert keys.requests == []


# --- agent.http_client.download: https only, retries, redirects -------------------------------------


def test_transient_failures_are_retried_three_times_in_all(keys: KeyServer) -> None:
    keys.files["/gpg"] = TEST_KEY_ASC
    keys.fail["/gpg"] = [503, 502]
    assert http_client.download(keys.url("/gpg"), backoff=0.01) == TEST_KEY_ASC
    assert keys.paths() == ["/gpg"] * 3
    keys.fail["/gpg"] = [503, 503, 503]
    with pytest.raises(http_client.DownloadFailed, match=r"answered HTTP 503 \("):
        http_client.download(keys.url("/gpg"), backoff=0.01)


def test_a_missing_key_is_not_asked_for_again(keys: KeyServer) -> None:
    with pytest.raises(http_client.DownloadFailed) as caught:
        http_client.download(keys.url("/nope"), backoff=0.01)
    assert caught.value.message == f"cannot download {keys.url('/nope')}: it answered HTTP 404"
    assert caught.value.fix == (
        "check that this box reaches 127.0.0.1 over https, then run the command again"
    )
    assert keys.paths() == ["/nope"]


def test_no_server_is_three_tries_then_the_host_in_the_fix(tmp_path: Path) -> None:
    url = closed_url("/gpg").replace("http://", "https://")
    with pytest.raises(http_client.DownloadFailed) as caught:
        http_client.download(url, backoff=0.01)
    assert caught.value.message.startswith(f"cannot download {url}: no answer from 127.0.0.1: ")
    assert "127.0.0.1" in (caught.value.fix or "")


def test_plain_http_is_never_fetched_not_even_after_a_redirect(keys: KeyServer) -> None:
    with pytest.raises(http_client.DownloadFailed, match=r"is not an https address"):
        http_client.download("http://127.0.0.1:9/gpg")
    keys.files["/moved"] = TEST_KEY_ASC
    keys.redirects["/gpg"] = keys.url("/moved")
    assert http_client.download(keys.url("/gpg")) == TEST_KEY_ASC
    keys.redirects["/old"] = keys.url("/moved").replace("https://", "http://")
    with pytest.raises(
        http_client.DownloadFailed, match=r"it redirects to http://.*, which is not https"
    ):
        http_client.download(keys.url("/old"), backoff=0.01)
    assert keys.paths() == ["/gpg", "/moved", "/old"]


def test_a_certificate_this_box_does_not_trust_is_no_answer(
    keys: KeyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys.files["/gpg"] = TEST_KEY_ASC
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(http_client.DownloadFailed, match=r"CERTIFICATE_VERIFY_FAILED"):
        http_client.download(keys.url("/gpg"), backoff=0.01)
