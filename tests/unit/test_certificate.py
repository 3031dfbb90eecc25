"""The proxy's certificate, read from Caddy's store: real certificates made with openssl, laid
out as Caddy 2.6.2 lays them out (checked here against pebble), and Caddy's last error picked
from its real log lines (tests/fakes/caddy/)."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agent import door, linode, log, settings
from agent.stack import certificate
from tests.fakes import certs

CADDY = Path(__file__).resolve().parents[1] / "fakes" / "caddy"
LE = "acme-v02.api.letsencrypt.org-directory"
NAME = "chat.example.com"


@pytest.fixture
def open_door(write_config) -> Any:
    def make(**https: Any) -> settings.Settings:
        over = {"https": {"domain": NAME, **https}, "ui": {"bind": "0.0.0.0"}}
        return settings.load(write_config(over))

    return make


@pytest.mark.parametrize(
    "acme_ca, folder",
    [
        pytest.param(settings.LETS_ENCRYPT, LE, id="lets-encrypt"),
        pytest.param(
            "https://127.0.0.1:14100/dir", "127.0.0.1-14100-dir", id="pebble-as-caddy-wrote-it"
        ),
        pytest.param("https://ca.example.com", "ca.example.com", id="no-path"),
        pytest.param(
            "https://CA.example.com:8443/acme/x/directory/",
            "ca.example.com-8443-acme-x-directory",
            id="port-and-path",
        ),
    ],
)
def test_the_store_path_is_certmagics_layout(open_door: Any, acme_ca: str, folder: str) -> None:
    s = open_door(acme_ca=acme_ca)
    found = certificate.path(s, NAME)
    assert found == door.store(s) / "caddy" / "certificates" / folder / NAME / f"{NAME}.crt"
    assert certificate.read(s, NAME).issuer == folder


def test_no_certificate_yet_is_pending(open_door: Any) -> None:
    s = open_door()
    found = certificate.read(s, NAME)
    assert (found.state, found.expires, found.days_left, found.error) == ("pending", None, None, "")
    assert found.path == certificate.path(s, NAME)


@pytest.mark.parametrize(
    "days, left, near",
    [(90, 89, False), (20, 19, False), (5, 4, True), (-1, -2, True)],
)
def test_an_issued_certificate_says_when_it_expires(
    open_door: Any, days: int, left: int, near: bool
) -> None:
    s = open_door()
    data = certs.pem(NAME, days)
    certs.place(door.store(s), LE, NAME, data)
    found = certificate.read(s, NAME)
    assert found.state == "issued" and found.issuer == LE
    assert found.expires == certs.not_after(data).isoformat()  # the leaf's, not the chain's
    assert found.days_left == left and found.near_expiry is near
    day = found.expires[:10]
    words = f"expired on {day}" if days < 0 else f"expires {day} ({left} days left)"
    assert certificate.expiring(found) == words


def test_a_notafter_past_2049_is_a_generalized_time(open_door: Any) -> None:
    s = open_door()
    data = certs.pem(NAME, 10_000)
    certs.place(door.store(s), LE, NAME, data)
    found = certificate.read(s, NAME)
    assert found.expires == certs.not_after(data).isoformat() and found.expires[:2] == "20"
    assert int(found.expires[:4]) >= 2050


def test_utctime_years_from_50_are_the_last_century() -> None:
    # a hand-made tbsCertificate: no version, serial 1, an empty algorithm, an empty issuer,
    # validity 500101000000Z .. 491231235959Z (RFC 5280: 1950 .. 2049)
    def tlv(tag: int, body: bytes) -> bytes:
        return bytes([tag, len(body)]) + body

    validity = tlv(0x30, tlv(0x17, b"500101000000Z") + tlv(0x17, b"491231235959Z"))
    tbs = tlv(0x30, tlv(0x02, b"\x01") + tlv(0x30, b"") + tlv(0x30, b"") + validity)
    assert certificate.not_after(tlv(0x30, tbs)) == datetime(
        2049, 12, 31, 23, 59, 59, tzinfo=timezone.utc
    )
    before = tlv(0x30, tlv(0x17, b"491231235959Z") + tlv(0x17, b"500101000000Z"))
    tbs = tlv(0x30, tlv(0x02, b"\x01") + tlv(0x30, b"") + tlv(0x30, b"") + before)
    assert certificate.not_after(tlv(0x30, tbs)).year == 1950


def _pem_of(der: bytes) -> bytes:
    body = base64.encodebytes(der)
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"


def _real_der() -> bytes:
    return certificate.first_der(certs.pem(NAME, 30))


@pytest.mark.parametrize(
    "content, words",
    [
        pytest.param(lambda: b"not a certificate\n", "no PEM certificate in the file", id="text"),
        pytest.param(
            lambda: b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "the PEM certificate is not base64",
            id="bad-base64",
        ),
        pytest.param(lambda: _pem_of(_real_der()[:200]), "the certificate ends early", id="cut"),
        pytest.param(
            lambda: _pem_of(b"\x02\x01\x00"),
            "the certificate has DER tag 0x02 where 0x30 belongs",
            id="no-sequence",
        ),
    ],
)
def test_a_file_that_is_no_certificate_is_unreadable_and_says_why(
    open_door: Any, content: Any, words: str
) -> None:
    s = open_door()
    certs.place(door.store(s), LE, NAME, content(), chain=b"")
    found = certificate.read(s, NAME)
    assert (found.state, found.error) == ("unreadable", words)


def test_a_store_caddy_cannot_be_read_from_is_unreadable(open_door: Any) -> None:
    s = open_door()
    certificate.path(s, NAME).mkdir(parents=True)  # a folder where the file belongs
    found = certificate.read(s, NAME)
    assert found.state == "unreadable" and found.error == "Is a directory"


# --- Caddy's log -----------------------------------------------------------------------------


def lines(name: str) -> list[str]:
    return (CADDY / name).read_text().splitlines()


def test_the_last_error_of_a_real_caddy_is_its_http_challenge() -> None:
    error, at = certificate.caddy_error(lines("obtain-failed.log"), "fail.door.test")
    assert error == (
        'http-01 challenge failed: Get "https://fail.door.test/.well-known/acme-challenge/'
        '-PKkXGl3JoOIzyvQLNoAlQBsQqoLK4-wjKCcxYiMbe4": dial tcp 127.0.0.1:443: connect: '
        "connection refused"
    )
    assert at == "2026-12-01T21:51:58+00:00"


@pytest.mark.parametrize(
    "log_file, name",
    [
        pytest.param("obtain-failed.log", "other.door.test", id="another-name"),
        pytest.param("obtained.log", "ok.door.test", id="issued"),
    ],
)
def test_no_error_about_the_name_is_none(log_file: str, name: str) -> None:
    assert certificate.caddy_error(lines(log_file), name) == ("", None)


LATER_TRY = (
    '{"level":"error","ts":1796165000.5,"logger":"tls.issuance.acme.acme_client","msg":'
    '"challenge failed","identifier":"fail.door.test","challenge_type":"http-01","status_code":'
    '400,"problem_type":"urn:ietf:params:acme:error:connection","error":"203.0.113.9: Fetching '
    "http://fail.door.test/.well-known/acme-challenge/x: Timeout during connect (likely "
    'firewall problem)"}'
)
RATE_LIMITED = (
    '{"level":"error","ts":1796169000,"logger":"tls.obtain","msg":"will retry","error":'
    '"[fail.door.test] Obtain: HTTP 429 urn:ietf:params:acme:error:rateLimited - too many '
    'certificates (5) already issued for this exact set of domains in the last 168h0m0s",'
    '"attempt":3,"retrying_in":600}'
)


def test_a_later_try_wins_and_caddys_newer_logger_names_count() -> None:
    will_retry = next(line for line in lines("obtain-failed.log") if "will retry" in line)
    found = lines("obtain-failed.log") + [LATER_TRY, will_retry.replace("1796161920", "1796165001")]
    error, at = certificate.caddy_error(found, "fail.door.test")
    assert error.startswith("http-01 challenge failed: 203.0.113.9: Fetching http://fail.door")
    assert error.endswith("Timeout during connect (likely firewall problem)")
    assert at == "2026-12-01T22:43:20+00:00"
    error, _ = certificate.caddy_error([*found, RATE_LIMITED], "fail.door.test")
    assert "rateLimited - too many certificates (5)" in error and error.startswith(
        "[fail.door.test]"
    )


def test_caddys_error_is_one_short_redacted_line() -> None:
    secret = "s3cret-value-the-agent-keeps"
    log.register_secret(secret)
    noisy = (
        '{"level":"error","ts":1796161920,"logger":"tls.obtain","msg":"could not get '
        'certificate from issuer","identifier":"n.test","error":"key '
        + secret
        + " \\u001b[31mred"
        + " \\n second line "
        + "x" * 400
        + '"}'
    )
    error, _ = certificate.caddy_error([noisy], "n.test")
    assert secret not in error and "[REDACTED]" in error
    assert "\x1b" not in error and "\n" not in error and "red second line" in error
    assert len(error) == certificate.ERROR_CHARS and error.endswith("…")
    assert error.startswith("could not get certificate from issuer: key [REDACTED]")


def test_lines_that_are_not_caddys_json_errors_are_skipped() -> None:
    junk = [
        "",
        "plain text",
        "{not json",
        '{"level":"info","logger":"tls.obtain","msg":"x"}',
        '{"level":"error","logger":"http","msg":"looking up info for HTTP challenge"}',
        "[1]",
    ]
    assert certificate.caddy_error(junk, "n.test") == ("", None)


# --- the fix and the addresses it names ------------------------------------------------------


def test_the_fix_names_the_record_and_the_ports(open_door: Any, write_config) -> None:
    s = open_door(http_port=8080, port=8443, api_port=9443)
    assert certificate.fix(s, NAME, "203.0.113.9") == (
        f"point the A record of {NAME} at 203.0.113.9 and open ports 8080 and 8443 to the "
        "internet (in the Linode Cloud Firewall too); Caddy retries by itself, no restart needed"
    )
    auto = settings.load(write_config({"https": {"domain": "auto"}}))
    assert certificate.fix(auto, "1-2-3-4.ip.linodeusercontent.com").startswith(
        "open ports 80 and 443 to the internet (in the Linode Cloud Firewall too): the name is "
        "Linode's own and points here"
    )


@pytest.mark.parametrize(
    "name, ipv4",
    [
        ("203-0-113-9.ip.linodeusercontent.com", "203.0.113.9"),
        ("chat.example.com", None),
        ("999-0-0-1.ip.linodeusercontent.com", None),
        (None, None),
    ],
)
def test_a_linode_name_spells_its_ipv4(name: str | None, ipv4: str | None) -> None:
    assert door.linode_ipv4(name) == ipv4


def test_this_boxs_addresses_leave_out_loopback_link_local_and_containers() -> None:
    import socket

    v4, v6 = socket.AF_INET, socket.AF_INET6
    found = linode.own_addresses(
        [
            ("lo", [(v4, "127.0.0.1"), (v6, "::1")]),
            ("eth0", [(v4, "192.0.2.2"), (v6, "2001:db8::2"), (v6, "fe80::1%eth0"), (17, "x")]),
            ("docker0", [(v4, "172.17.0.1")]),
            ("veth1", [(v6, "fd00::9")]),
            ("eth1", [(v4, "192.0.2.2"), (v4, "10.0.0.5")]),
        ]
    )
    assert found == ("192.0.2.2", "2001:db8::2", "10.0.0.5")


def test_this_machines_addresses_are_its_own() -> None:
    import psutil

    mine = {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    assert set(linode.interface_addresses()) <= mine


def test_expiry_words_for_a_certificate_issued_today(open_door: Any) -> None:
    s = open_door()
    certs.place(door.store(s), LE, NAME, certs.pem(NAME, 90))
    # a minute after the 80th day: the certificate's end, stamped to the second as it was
    # made, is under 10 whole days away (a `now` taken before it was made could be 10)
    later = datetime.now(timezone.utc) + timedelta(days=80, minutes=1)
    found = certificate.read(s, NAME, now=later)
    assert found.days_left == 9 and found.near_expiry
