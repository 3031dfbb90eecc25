"""A name whose challenges fail, on a proxy of its own.

Its own, because of what Caddy 2.6.2 (certmagic 0.17) does with a store that a container which
ordered two names at once has left: each first order registers an ACME account of its own, and
both write the same account files, so a later Caddy on that store can load one account's key
with the other's URL and get "JWS verification error" for every new order. (The agent's proxy
orders one name, so it never registers twice at once.) This test watches Caddy order a name,
fail, and retry, so it runs on the first container of a fresh store.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from tests.fakes import acme
from tests.integration.caddy_support import (
    HEALTH_PORT,
    NOWHERE,
    PENDING,
    Proxy,
    https,
    plain_http,
    tls_connect,
)

pytestmark = pytest.mark.docker


def test_a_name_that_fails_its_challenges_is_logged_refused_and_retried(
    proxy: Proxy, pebble: acme.Pebble, root: Path
) -> None:
    failed = proxy.wait_log(
        lambda line: line.get("msg") == "challenge failed" and line.get("identifier") == PENDING,
        f"a failed challenge for {PENDING}",
    )
    assert failed["logger"] == "http.acme_client"
    assert failed["level"] == "error"
    assert NOWHERE in failed["error"]
    assert failed["problem_type"].startswith("urn:ietf:params:acme:error:")
    retry = proxy.wait_log(
        lambda line: line.get("msg") == "will retry" and f"[{PENDING}]" in line.get("error", ""),
        f"a retry for {PENDING}",
    )
    assert retry["logger"] == "tls.obtain"
    assert retry["retrying_in"] == 60
    assert any(
        line.get("msg") == "could not get certificate from issuer"
        and line.get("identifier") == PENDING
        for line in proxy.log_lines()
    )

    with pytest.raises(ssl.SSLError, match="TLSV1_ALERT_INTERNAL_ERROR"):
        tls_connect(PENDING, acme.TLS_PORT, root).close()
    assert https("/", cafile=root).status == 200
    assert plain_http(HEALTH_PORT, "/health").status == 200

    pebble.forget(PENDING)  # the name points at this box again
    proxy.wait_log(
        lambda line: (
            line.get("msg") == "certificate obtained successfully"
            and line.get("identifier") == PENDING
        ),
        f"a certificate for {PENDING} after Caddy's own retry",
        timeout=90,
    )
    reply = https("/", cafile=root, name=PENDING)
    assert (reply.status, reply.body) == (200, b"pending")
