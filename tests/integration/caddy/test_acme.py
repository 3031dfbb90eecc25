"""The front door as the lead's compose runs it: Caddy 2.6.2 (the caddy-standin image, Debian's
binary laid out like caddy:2.x) in the host's network namespace, a certificate from a real ACME
CA (pebble on loopback, tests/fakes/acme.py), the store in a host folder at /data.

What these pin about Caddy 2.6.2, for the Caddyfile the agent renders (caddy_support.CADDYFILE):

- ``persist_config off`` does not exist in 2.6.2 (added in 2.7): the Caddyfile fails to adapt.
  Caddy autosaves /config/caddy/autosave.json even with ``admin off``; the key is not in it,
  since ``{env.SANDBOX_API_KEY}`` is a runtime placeholder and stays literal there.
- The ``header`` matcher expands ``{env.*}`` at request time: ``not header Authorization
  "Bearer {env.SANDBOX_API_KEY}"`` + ``respond 401`` gates /v1/*, the key given only through the
  container's environment.
- An unmatched request gets an empty 200 from Caddy, so every site ends in ``respond 404``.
- ``request_body max_size`` alone answers an announced oversize body with 502 once the upstream
  has read part of it (caddy#5652): a ``header_regexp Content-Length`` guard answers 413 first.
- Plain http on http_port: 308 to ``https://NAME{uri}``; Caddy leaves the port out when the
  target is its own https_port (it assumes https_port is what clients reach as 443).
- A name whose challenges fail (test_pending.py): TLS handshakes for it get an "internal error" alert, the other
  sites keep serving, and Caddy retries on its own 60 s later.
"""

from __future__ import annotations

import functools
import http.client
import itertools
import socket
import ssl
import time
from pathlib import Path

import docker
import pytest

from tests.fakes import acme
from tests.fakes.upstream import CHUNK_GAP, CHUNKS, RecordingUpstream
from tests.integration.caddy_support import (
    ADMIN_PORT,
    API_KEY,
    API_PORT,
    HEALTH_PORT,
    ISSUER_DIR,
    LABEL,
    LABEL_VALUE,
    NAME,
    Proxy,
    event_arrivals,
    https,
    plain_http,
    tcp_listeners,
    tls_connect,
    websocket_echo,
)

pytestmark = pytest.mark.docker

# What vLLM serves besides /v1 (vllm#58144): none of it may answer 200 through the proxy.
VLLM_EXTRAS = (
    "/invocations",
    "/tokenize",
    "/detokenize",
    "/pause",
    "/resume",
    "/collective_rpc",
    "/sleep",
    "/wake_up",
    "/reset_prefix_cache",
    "/health",
    "/metrics",
    "/version",
    "/ping",
    "/v1/../pause",
    "/v1/%2e%2e/pause",
    "/v1/..%2fcollective_rpc",
    "/v1%2f..%2finvocations",
)
KEYS = {
    "right key": f"Bearer {API_KEY}",
    "wrong key": "Bearer sk-not-the-key",
    "empty key": "Bearer ",
    "no key": None,
}


def _auth(value: str | None) -> dict[str, str]:
    return {} if value is None else {"Authorization": value}


# --- certificates ---------------------------------------------------------------------------


def test_certificate_is_issued_stored_in_data_and_chains_to_pebbles_root(
    proxy: Proxy, root: Path
) -> None:
    with tls_connect(NAME, acme.TLS_PORT, root) as sock:  # verifies chain and name, or raises
        served = sock.getpeercert(binary_form=True)
        details = sock.getpeercert()
    assert details is not None
    assert ("DNS", NAME) in details["subjectAltName"]
    with tls_connect(NAME, API_PORT, root) as sock:
        assert sock.getpeercert(binary_form=True) == served, "one certificate for both ports"

    folder = proxy.data / "caddy" / "certificates" / ISSUER_DIR / NAME
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{NAME}.crt",
        f"{NAME}.json",
        f"{NAME}.key",
    ]
    stored = (folder / f"{NAME}.crt").read_text()
    leaf = stored[: stored.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    assert ssl.PEM_cert_to_DER_cert(leaf) == served

    obtained = proxy.wait_log(
        lambda line: (
            line.get("msg") == "certificate obtained successfully"
            and line.get("identifier") == NAME
        ),
        "the certificate obtained",
    )
    assert obtained["logger"] == "tls.obtain"


def test_recreated_proxy_with_the_same_data_issues_no_new_certificate(
    proxy: Proxy, pebble: acme.Pebble, root: Path
) -> None:
    with tls_connect(NAME, acme.TLS_PORT, root) as sock:
        before = sock.getpeercert(binary_form=True)
    issued = pebble.issued()

    proxy.recreate()
    proxy.wait_serving(NAME, root)
    time.sleep(2)  # room for an order Caddy might place after it serves

    with tls_connect(NAME, acme.TLS_PORT, root) as sock:
        assert sock.getpeercert(binary_form=True) == before
    assert pebble.issued() == issued, pebble.log()[-2000:]
    asked = [
        line
        for line in proxy.log_lines()
        if line.get("msg") == "obtaining certificate" and line.get("identifier") == NAME
    ]
    assert asked == []


# --- the API site ---------------------------------------------------------------------------


def test_only_the_right_key_reaches_v1(
    proxy: Proxy, upstreams: tuple[RecordingUpstream, RecordingUpstream], root: Path
) -> None:
    _, api = upstreams
    seen = len(api.paths())
    for label, value in KEYS.items():
        reply = https("/v1/models", cafile=root, port=API_PORT, headers=_auth(value))
        if label == "right key":
            assert reply.status == 200, reply.body
            assert reply.json() == {"upstream": "api", "path": "/v1/models", "authorization": value}
        else:
            assert reply.status == 401, (label, reply.body)
    assert api.paths()[seen:] == ["/v1/models"]


@pytest.mark.parametrize("key", list(KEYS))
def test_vllms_other_endpoints_never_answer(
    proxy: Proxy, upstreams: tuple[RecordingUpstream, RecordingUpstream], root: Path, key: str
) -> None:
    _, api = upstreams
    seen = len(api.paths())
    for path in VLLM_EXTRAS:
        for method in ("GET", "POST"):
            reply = https(path, cafile=root, port=API_PORT, method=method, headers=_auth(KEYS[key]))
            assert reply.status in (401, 404), (method, path, reply.status)
    assert api.paths()[seen:] == []


def test_request_bodies_over_10mb_are_refused(
    proxy: Proxy, upstreams: tuple[RecordingUpstream, RecordingUpstream], root: Path
) -> None:
    _, api = upstreams
    post = functools.partial(https, "/v1/completions", cafile=root, port=API_PORT, method="POST")
    key = _auth(KEYS["right key"])
    seen, bodies = len(api.paths()), len(api.body_sizes())
    assert post(headers=key, body=b"x" * 9_000_000).status == 200
    # Refused on the announced length, before the body: send only the headers.
    too_long = {"Content-Length": "10000001"}
    assert post(headers={**key, **too_long}).status == 413
    assert post(headers={**_auth(KEYS["no key"]), **too_long}).status == 401
    assert api.paths()[seen:] == ["/v1/completions"]
    # Without a Content-Length (chunked) only max_size stops it: the upstream gets the first
    # 10 MB, the client a 413, or a closed connection while the rest is still on its way.
    # (With a Content-Length and no header_regexp guard, Caddy 2.6 answers 502: caddy#5652.)
    try:
        status = post(headers=key, body=b"x" * 11_000_000, chunked=True).status
    except (ssl.SSLError, ConnectionError):
        status = None
    assert status in (413, None)
    deadline = time.monotonic() + 5
    while len(api.body_sizes()) < bodies + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    sizes = api.body_sizes()[bodies:]
    assert sizes[0] == 9_000_000
    assert all(size <= 10_000_000 for size in sizes[1:]), sizes


def test_the_key_is_on_no_disk_caddy_writes(proxy: Proxy) -> None:
    for path in proxy.data.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path
    rc, out = proxy.exec("grep", "-rlF", API_KEY, "/config", "/data")
    assert rc == 1, out  # grep: 1 = no match (2 would be an error)
    rc, autosave = proxy.exec("cat", "/config/caddy/autosave.json")
    assert rc == 0, autosave
    assert "Bearer {env.SANDBOX_API_KEY}" in autosave


def test_persist_config_is_not_an_option_in_caddy_2_6(
    docker_client: docker.DockerClient, caddy_image: str, tmp_path: Path
) -> None:
    (tmp_path / "Caddyfile").write_text("{\n\tadmin off\n\tpersist_config off\n}\n:9\n")
    with pytest.raises(docker.errors.ContainerError) as failed:
        docker_client.containers.run(
            caddy_image,
            ["caddy", "adapt", "--config", "/etc/caddy/Caddyfile"],
            volumes={str(tmp_path / "Caddyfile"): {"bind": "/etc/caddy/Caddyfile", "mode": "ro"}},
            labels={LABEL: LABEL_VALUE},
            network_mode="none",
            remove=True,
        )
    stderr = failed.value.stderr
    text = stderr.decode() if isinstance(stderr, bytes) else str(stderr)
    assert "unrecognized global option: persist_config" in text


def test_admin_off_leaves_port_2019_closed(proxy: Proxy) -> None:
    assert tcp_listeners(ADMIN_PORT) == set()
    assert tcp_listeners(acme.TLS_PORT), "the check finds Caddy's own listener"
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", ADMIN_PORT)) != 0


# --- streaming, websockets, redirects, health ------------------------------------------------


@pytest.mark.parametrize(
    ("port", "path", "headers"),
    [
        pytest.param(acme.TLS_PORT, "/api/chat/stream", {}, id="ui"),
        pytest.param(API_PORT, "/v1/chat/stream", _auth(KEYS["right key"]), id="api"),
    ],
)
def test_server_sent_events_arrive_one_by_one(
    proxy: Proxy, root: Path, port: int, path: str, headers: dict[str, str]
) -> None:
    arrivals = event_arrivals(path, cafile=root, port=port, headers=headers)
    assert len(arrivals) == CHUNKS
    assert arrivals[0] < CHUNK_GAP * 0.8, arrivals  # before the upstream sent the second
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert min(gaps) > CHUNK_GAP * 0.6, arrivals  # buffered events would arrive together


def test_websocket_upgrades_through_the_ui_site(proxy: Proxy, root: Path) -> None:
    status, headers, reply = websocket_echo("/ws/socket.io/ws", b"hello", cafile=root)
    assert status == "HTTP/1.1 101 Switching Protocols", (status, headers)
    assert reply == b"echo: hello"


def test_ui_site_sends_hsts(proxy: Proxy, root: Path) -> None:
    reply = https("/", cafile=root)
    assert reply.status == 200
    assert reply.json()["upstream"] == "ui"
    assert reply.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_plain_http_is_redirected_to_https(proxy: Proxy) -> None:
    reply = plain_http(acme.HTTP_PORT, "/c/1?tab=2", host=NAME)
    assert reply.status == 308
    assert reply.headers["Location"] == f"https://{NAME}/c/1?tab=2"
    plain = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=5)
    plain.request("GET", "/v1/models", headers={"Host": f"{NAME}:{API_PORT}"})
    answer = plain.getresponse()
    assert (answer.status, answer.read()) == (
        400,
        b"Client sent an HTTP request to an HTTPS server.\n",
    )


def test_health_site_answers_on_loopback_only_and_wget_reaches_it(proxy: Proxy) -> None:
    assert plain_http(HEALTH_PORT, "/health").status == 200
    assert plain_http(HEALTH_PORT, "/elsewhere").status == 404
    assert tcp_listeners(HEALTH_PORT) == {"127.0.0.1"}
    assert tcp_listeners(acme.TLS_PORT) & {"::", "0.0.0.0"}, "the check tells wildcard apart"

    url = f"http://127.0.0.1:{HEALTH_PORT}"
    assert proxy.exec("wget", "-q", "-O", "/dev/null", f"{url}/health") == (0, "")
    assert proxy.exec("wget", "-q", "-O", "/dev/null", f"{url}/elsewhere")[0] == 1
    assert proxy.exec("wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9/health")[0] == 1
