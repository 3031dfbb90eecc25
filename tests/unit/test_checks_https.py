"""doctor's https.* checks on real files: the door the settings open, the certificate in a store
laid out as Caddy keeps it (real certificates made with openssl), and what each says when the
engine is away. Caddy's log through the real engine and DNS through the real resolver:
tests/integration/test_door.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from agent import door, settings
from agent.checks import https
from agent.checks.base import DoctorContext
from agent.stack.certificate import read
from agent.stack.observe import DoorStatus
from tests.fakes import certs

LE = "acme-v02.api.letsencrypt.org-directory"
NAME = "chat.example.com"


@pytest.fixture
def ctx(write_config, tmp_path: Path) -> Any:
    def make(**over: Any) -> DoctorContext:
        s = settings.load(write_config(over))
        # nothing listens here: the engine is away
        return DoctorContext(s, docker_url=f"unix://{tmp_path}/no-engine.sock")

    return make


OPEN = {"https": {"domain": NAME}, "ui": {"bind": "0.0.0.0"}}


@pytest.mark.parametrize(
    "over, status, summary, detail",
    [
        pytest.param(
            OPEN,
            "ok",
            f"the proxy serves the chat UI at https://{NAME} over https",
            f"{NAME} is https.domain; vLLM and Open WebUI publish on 127.0.0.1 only; plain http "
            "on port 80 redirects to https",
            id="ui",
        ),
        pytest.param(
            {**OPEN, "api": {"bind": "0.0.0.0"}, "https": {"domain": NAME, "port": 4443}},
            "ok",
            f"the proxy serves the chat UI at https://{NAME}:4443 and the API at "
            f"https://{NAME}:8443/v1 (with the key) over https",
            None,
            id="ui-and-api",
        ),
        pytest.param(
            {"https": {"domain": "off"}, "ui": {"bind": "0.0.0.0"}},
            "warn",
            "the chat UI is open on 0.0.0.0:3000 over plain http: logins cross the network in "
            "clear text",
            "https.domain is off",
            id="off-with-an-open-ui",
        ),
        pytest.param(
            {"https": {"domain": "auto"}, "ui": {"bind": "192.0.2.2"}},
            "warn",
            "the chat UI is open on 192.0.2.2:3000 over plain http: logins cross the network in "
            "clear text",
            "https.domain is auto and no Linode name is saved (`up` asks the metadata service "
            "for it; off Linode there is none)",
            id="auto-without-a-name",
        ),
        pytest.param(
            {"https": {"domain": NAME}, "ui": {"bind": "127.0.0.1"}},
            "ok",
            "no proxy: the UI and the API listen on this box only",
            None,
            id="all-loopback",
        ),
    ],
)
def test_the_door_says_what_faces_the_network(
    ctx: Any, over: dict, status: str, summary: str, detail: str | None
) -> None:
    found = https.check_door(ctx(**over))
    assert (found.status, found.summary) == (status, summary)
    if detail is not None:
        assert found.detail == detail
    if status == "warn":
        assert found.fix.startswith("set HTTPS_DOMAIN to a domain whose A record points at")


def test_auto_with_the_saved_linode_name_is_an_open_door(ctx: Any) -> None:
    c = ctx(https={"domain": "auto"}, ui={"bind": "0.0.0.0"})
    door.save_name(c.settings, "203-0-113-9.ip.linodeusercontent.com")
    found = https.check_door(c)
    assert found.status == "ok" and "https://203-0-113-9.ip.linodeusercontent.com" in found.summary
    assert found.detail.startswith("203-0-113-9.ip.linodeusercontent.com is the box's Linode name")
    assert https.public_ipv4(c.settings) == "203.0.113.9"
    assert "203.0.113.9" in https.own_addresses(c.settings)


@pytest.mark.parametrize(
    "over, words",
    [
        (
            {"https": {"domain": "auto"}},
            "no domain given (https.domain: auto: the name is Linode's",
        ),
        ({"https": {"domain": "off"}}, "no domain given (https.domain: off: no proxy)"),
        ({"https": {"domain": NAME}, "ui": {"bind": "127.0.0.1"}}, "nothing faces the network"),
    ],
)
def test_dns_is_checked_only_for_a_domain_the_proxy_serves(
    ctx: Any, over: dict, words: str
) -> None:
    found = https.check_dns(ctx(**over))
    assert found.status == "skip" and words in found.summary


@pytest.mark.parametrize("check", [https.check_proxy, https.check_certificate])
def test_proxy_checks_skip_without_a_door(ctx: Any, check: Any) -> None:
    found = check(ctx(https={"domain": "off"}))
    assert found.status == "skip" and found.summary == "no proxy runs (see https.door)"


def test_the_proxy_is_skipped_when_the_engine_is_away(ctx: Any) -> None:
    found = https.check_proxy(ctx(**OPEN))
    assert found.status == "skip" and "the Docker engine is not reachable" in found.summary


def test_no_certificate_yet_is_a_warning_with_the_fix(ctx: Any) -> None:
    c = ctx(**OPEN)
    found = https.check_certificate(c)
    assert found.status == "warn"
    assert found.summary == f"no certificate yet for {NAME}: Caddy is asking {LE} for one"
    assert found.detail == "the proxy's log cannot be read (see docker.engine)"
    assert found.fix.startswith(f"point the A record of {NAME} at ")
    assert found.fix.endswith(
        "and open ports 80 and 443 to the internet (in the Linode Cloud Firewall too); Caddy "
        "retries by itself, no restart needed"
    )


@pytest.mark.parametrize(
    "days, status, words",
    [
        (90, "ok", "days left)"),
        (10, "warn", "days left): its renewal is failing (Caddy renews 30 days ahead)"),
        (-1, "fail", "expired on "),
    ],
)
def test_an_issued_certificate_by_its_days_left(
    ctx: Any, days: int, status: str, words: str
) -> None:
    c = ctx(**OPEN)
    certs.place(door.store(c.settings), LE, NAME, certs.pem(NAME, days))
    found = https.check_certificate(c)
    assert found.status == status, found
    assert found.summary.startswith(f"the certificate of {NAME} from {LE} ")
    assert words in found.summary
    if status == "ok":
        assert found.fix == "" and found.detail.endswith("Caddy renews it 30 days ahead")
    else:
        assert "open ports 80 and 443" in found.fix


def test_a_certificate_file_that_cannot_be_read_fails(ctx: Any) -> None:
    c = ctx(**OPEN)
    certs.place(door.store(c.settings), LE, NAME, b"garbage", chain=b"")
    found = https.check_certificate(c)
    assert found.status == "fail"
    assert (
        found.summary == f"the certificate of {NAME} cannot be read: no PEM certificate in the file"
    )
    assert "do not delete the store" in found.fix


def test_status_shows_the_door_and_the_certificate(ctx: Any) -> None:
    from agent.cli.stack import door_text

    c = ctx(**OPEN)
    waiting = dataclasses.replace(
        read(c.settings, NAME),
        error="http-01 challenge failed: timeout",
        error_at="2026-12-01T21:51:58+00:00",
    )
    pending = DoorStatus(NAME, f"https://{NAME}", None, waiting, fix="point the A record at X")
    assert list(door_text(pending)) == [
        f"door: {NAME}: chat https://{NAME}",
        f"  certificate: none yet, Caddy is asking {LE} (it retries by itself)",
        "    Caddy's last error (2026-12-01T21:51:58+00:00): http-01 challenge failed: timeout",
        "    fix: point the A record at X",
    ]
    certs.place(door.store(c.settings), LE, NAME, certs.pem(NAME, 90))
    issued = DoorStatus(NAME, f"https://{NAME}", f"https://{NAME}:8443/v1", read(c.settings, NAME))
    shown = list(door_text(issued))
    assert shown[0] == f"door: {NAME}: chat https://{NAME}, API https://{NAME}:8443/v1"
    assert shown[1].startswith(f"  certificate: from {LE}, expires ") and len(shown) == 2
    assert list(door_text(DoorStatus(None, None, None, None)))[0].startswith("door: no proxy")
    assert list(door_text(None)) == []
