"""What the Caddy front-door tests share: the Caddyfile under test, the proxy container in the
host's network namespace, and a stdlib TLS client that sends SNI for a name while it connects
to 127.0.0.1 (no curl, no /etc/hosts)."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import ssl
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import acme
from tests.fakes.upstream import read_ws_frame, ws_accept, ws_frame

NAME = "box.example.test"
PENDING = "pending.example.test"  # the mock DNS points it where no challenge can be answered
NOWHERE = "255.255.255.255"  # a TCP connect there fails at once: "network is unreachable"
API_PORT = 8443
HEALTH_PORT = 8472
ADMIN_PORT = 2019  # Caddy's admin API, unless `admin off`
API_KEY = "sk-caddy-test-7d1c9a4e"
LABEL = "org.sandbox-agent.test"
LABEL_VALUE = "caddy-acme"
ROOT_IN_CONTAINER = "/etc/caddy/acme-ca-root.pem"
# The issuer folder Caddy names after the CA's directory URL (host-port-path).
ISSUER_DIR = f"{acme.HOST}-{acme.ACME_PORT}-dir"

# The lead's shape, as it works with Caddy 2.6.2 (see the test module's docstring for what
# changed). %(ui)d and %(api)d are the upstreams' loopback ports.
CADDYFILE = """\
{
	admin off
	http_port %(http_port)d
	https_port %(https_port)d
	email admin@example.com
	acme_ca %(directory)s
	acme_ca_root %(root)s
}

%(name)s {
	header Strict-Transport-Security "max-age=31536000"
	reverse_proxy 127.0.0.1:%(ui)d {
		flush_interval -1
	}
}

%(name)s:%(api_port)d {
	request_body {
		max_size 10MB
	}
	@v1 path /v1/*
	handle @v1 {
		@nokey not header Authorization "Bearer {env.SANDBOX_API_KEY}"
		respond @nokey 401
		@toolarge header_regexp Content-Length ^[0-9]{8,}$
		respond @toolarge 413
		reverse_proxy 127.0.0.1:%(api)d {
			flush_interval -1
			transport http {
				read_timeout 10m
			}
		}
	}
	handle {
		respond 404
	}
}

http://127.0.0.1:%(health_port)d {
	bind 127.0.0.1
	respond /health 200
	respond 404
}

%(pending)s {
	respond "pending" 200
}
"""


def caddyfile(ui: int, api: int) -> str:
    return CADDYFILE % {
        "http_port": acme.HTTP_PORT,
        "https_port": acme.TLS_PORT,
        "directory": acme.DIRECTORY_URL,
        "root": ROOT_IN_CONTAINER,
        "name": NAME,
        "api_port": API_PORT,
        "health_port": HEALTH_PORT,
        "pending": PENDING,
        "ui": ui,
        "api": api,
    }


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as `docker run --env-file` reads them (no quotes, # comments)."""
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value
    return env


@dataclass
class Proxy:
    """The Caddy stand-in, run the way the lead's compose service runs: host network, the
    Caddyfile and the CA root read-only, the store at /data, the key from an env file."""

    client: Any
    image: str
    workdir: Path
    container: Any = None
    started: list[Any] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def env_file(self) -> Path:
        return self.workdir / "proxy.env"

    def start(self) -> None:
        self.data.mkdir(exist_ok=True)
        self.container = self.client.containers.run(
            self.image,
            detach=True,
            name=f"caddy-acme-test-{uuid.uuid4().hex[:8]}",
            labels={LABEL: LABEL_VALUE},
            network_mode="host",
            environment=read_env_file(self.env_file),
            volumes={
                str(self.workdir / "Caddyfile"): {"bind": "/etc/caddy/Caddyfile", "mode": "ro"},
                str(self.workdir / "root.pem"): {"bind": ROOT_IN_CONTAINER, "mode": "ro"},
                str(self.data): {"bind": "/data", "mode": "rw"},
            },
        )
        self.started.append(self.container)

    def remove(self) -> None:
        if self.container is not None:
            self.container.remove(force=True, v=True)
            self.container = None

    def recreate(self) -> None:
        self.remove()
        self.start()

    def log_lines(self) -> list[dict[str, Any]]:
        """Caddy's JSON log lines (stderr), parsed."""
        text = self.container.logs(stdout=True, stderr=True).decode(errors="replace")
        lines = []
        for raw in text.splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
        return lines

    def logs_text(self) -> str:
        return str(self.container.logs().decode(errors="replace"))[-6000:]

    def wait_serving(self, name: str, cafile: Path, timeout: float = 30.0) -> None:
        """Until a TLS handshake for ``name`` on the https port verifies against ``cafile``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                tls_connect(name, acme.TLS_PORT, cafile).close()
                return
            except (OSError, ssl.SSLError):
                pass
            self.container.reload()
            if self.container.status == "exited":
                pytest.fail(f"the proxy exited:\n{self.logs_text()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"no certificate for {name} served in {timeout:.0f}s:\n{self.logs_text()}"
                )
            time.sleep(0.2)

    def wait_log(self, predicate: Any, what: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if predicate(line):
                    return line
            time.sleep(0.2)
        pytest.fail(f"Caddy did not log {what} in {timeout:.0f}s:\n{self.logs_text()}")

    def exec(self, *argv: str) -> tuple[int, str]:
        rc, out = self.container.exec_run(list(argv))
        return int(rc), out.decode(errors="replace")


# --- a TLS client with SNI ------------------------------------------------------------------


def tls_connect(name: str, port: int, cafile: Path | None, timeout: float = 5.0) -> ssl.SSLSocket:
    """A TLS connection to 127.0.0.1:port that asks for ``name`` (SNI) and checks the
    certificate against ``cafile`` and ``name``."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    raw = socket.create_connection((acme.HOST, port), timeout=timeout)
    try:
        return context.wrap_socket(raw, server_hostname=name)
    except BaseException:
        raw.close()
        raise


class _SniConnection(http.client.HTTPSConnection):
    def __init__(self, name: str, port: int, cafile: Path, timeout: float) -> None:
        super().__init__(acme.HOST, port, timeout=timeout)
        self._name, self._cafile = name, cafile

    def connect(self) -> None:
        self.sock = tls_connect(self._name, self.port, self._cafile, self.timeout or 5.0)


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def https(
    path: str,
    *,
    cafile: Path,
    port: int = acme.TLS_PORT,
    name: str = NAME,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    chunked: bool = False,
    timeout: float = 10.0,
) -> Reply:
    """One request; ``chunked`` sends the body without a Content-Length."""
    connection = _SniConnection(name, port, cafile, timeout)
    host = name if port == acme.TLS_PORT else f"{name}:{port}"
    try:
        sent: Any = body
        if chunked and body is not None:
            sent = (body[i : i + 65536] for i in range(0, len(body), 65536))
        connection.request(
            method,
            path,
            body=sent,
            headers={"Host": host, **(headers or {})},
            encode_chunked=chunked,
        )
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def event_arrivals(path: str, *, cafile: Path, port: int, headers: dict[str, str]) -> list[float]:
    """Seconds after the request at which each server-sent event's data line arrived."""
    connection = _SniConnection(NAME, port, cafile, 10.0)
    host = NAME if port == acme.TLS_PORT else f"{NAME}:{port}"
    try:
        started = time.monotonic()
        connection.request("GET", path, headers={"Host": host, **headers})
        response = connection.getresponse()
        assert response.status == 200, response.read()
        arrivals = []
        while line := response.readline():
            if line.startswith(b"data:"):
                arrivals.append(time.monotonic() - started)
        return arrivals
    finally:
        connection.close()


def websocket_echo(path: str, message: bytes, *, cafile: Path) -> tuple[str, dict[str, str], bytes]:
    """Upgrade ``path`` on the https port, send one masked text frame, read the reply:
    (status line, response headers, the reply frame's payload)."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock = tls_connect(NAME, acme.TLS_PORT, cafile, timeout=10)
    try:
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {NAME}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.sendall(request.encode())
        stream = sock.makefile("rb")
        status = stream.readline().decode().strip()
        headers = {}
        while (line := stream.readline().decode()).strip():
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept") != ws_accept(key):
            return status, headers, b""
        sock.sendall(ws_frame(message, mask=os.urandom(4)))
        _, payload = read_ws_frame(stream)
        return status, headers, payload
    finally:
        sock.close()


def tcp_listeners(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(FileNotFoundError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                address, _, hex_port = fields[1].partition(":")
                if fields[3] == "0A" and int(hex_port, 16) == port:
                    raw = bytes.fromhex(address)
                    # The kernel prints each 32-bit word in host (little-endian) order.
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, width // 2, 4))
                    found.add(
                        socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, words)
                    )
    return found


def plain_http(port: int, path: str, host: str | None = None) -> http.client.HTTPResponse:
    """One plain-http GET to 127.0.0.1:port, its body read."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", path, headers={"Host": host} if host else {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response
