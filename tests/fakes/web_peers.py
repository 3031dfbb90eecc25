"""What the agent fetches over HTTP, served for real on 127.0.0.1: the Linode metadata service
(plain HTTP, as on the box) and an apt repository's signing keys (HTTPS, with a self-signed
certificate made by the `openssl` command; a test trusts it through SSL_CERT_FILE, which
OpenSSL reads for every new TLS context, so the agent's code runs unchanged).

The metadata service speaks the protocol of PLATFORM.md: `PUT /v1/token` (a GET is refused)
with `Metadata-Token-Expiry-Seconds`, then `GET /v1/network` with `Metadata-Token`. It can be
told to be slow (`delay`), to redirect, to refuse its tokens, or to have no public address;
`closed_url()` is one where nothing listens (a region without the service). The key server answers files, a list of
statuses first (`fail`), redirects, and records every request.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

# A real ed25519 public key made with GnuPG 2.2 for these tests (`gpg --export` and
# `gpg --armor --export`); its secret half was thrown away.
TEST_KEY_ASC = b"""-----BEGIN PGP PUBLIC KEY BLOCK-----

mDMEaw6nERYJKwYBBAHaRw8BAQdAnG14S8GFv5y6OniAQu2UakKv0CndxcyLQEXJ
y1zFUNO0OnNhbmRib3gtYWdlbnQgdGVzdCBrZXkgKHRlc3RzIG9ubHkpIDx0ZXN0
QGV4YW1wbGUuaW52YWxpZD6IkAQTFggAOBYhBNbQkfhPKw68YfpDhCpw5o/2+SDS
BQJrDqcRAhsDBQsJCAcCBhUKCQgLAgQWAgMBAh4BAheAAAoJECpw5o/2+SDS6K0B
AI+fBCCXQq5enWpwesTLl6bPVQax9sX2vOLCEPnEOultAP43DF34D+ayPadI890T
cBj+MZv2D2NBlS0zZB3nH3EWAw==
=UB2o
-----END PGP PUBLIC KEY BLOCK-----
"""
TEST_KEY_GPG = base64.b64decode(b"".join(TEST_KEY_ASC.splitlines()[2:8]))


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peer: _Peer

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.peer.answer(self)

    def do_PUT(self) -> None:  # noqa: N802
        self.peer.answer(self)

    def do_POST(self) -> None:  # noqa: N802
        self.peer.answer(self)

    def send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "text/plain", **headers}.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Peer:
    scheme = "http"

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def origin(self) -> str:
        assert self._httpd is not None
        return f"{self.scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"peer": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.wrap(self._httpd)
        serve = self._httpd.serve_forever
        threading.Thread(target=serve, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def wrap(self, httpd: ThreadingHTTPServer) -> None:
        pass

    def stop(self) -> None:
        self.stopping.set()  # a slow answer ends now
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def answer(self, req: _Handler) -> None:
        with self._lock:
            self.requests.append(Seen(req.command, req.path, dict(req.headers.items())))
        self.handle(req)

    def handle(self, req: _Handler) -> None:
        raise NotImplementedError


class MetadataServer(_Peer):
    def __init__(self) -> None:
        super().__init__()
        self.token = "fake-metadata-" + secrets.token_hex(16)
        self.public_ip: str | None = "198.51.100.23"
        self.delay = 0.0  # seconds before any answer: a service that does not answer in time
        self.redirect: str | None = None  # answer every request with a 307 to this URL
        self.revoked = False  # the tokens it hands out are refused (expired, say)

    @property
    def url(self) -> str:
        return f"{self.origin}/v1"

    def handle(self, req: _Handler) -> None:
        if self.delay and self.stopping.wait(self.delay):
            return  # stopped while the client waited: no answer at all
        if self.redirect:
            return req.send(307, Location=self.redirect)
        if req.path == "/v1/token":
            if req.command != "PUT":
                return req.send(405, b"Method Not Allowed", Allow="PUT")
            expiry = req.headers.get("Metadata-Token-Expiry-Seconds", "")
            if not (expiry.isdigit() and 1 <= int(expiry) <= 43200):
                return req.send(400, b"Metadata-Token-Expiry-Seconds must be 1..43200")
            return req.send(200, self.token.encode())
        if req.path == "/v1/network" and req.command == "GET":
            if self.revoked or req.headers.get("Metadata-Token") != self.token:
                return req.send(401, b"Unauthorized")
            public = [f"{self.public_ip}/32"] if self.public_ip else []
            body = {"ipv4": {"public": public, "private": [], "shared": []}, "ipv6": {}}
            return req.send(200, json.dumps(body).encode(), Content_Type="application/json")
        return req.send(404, b"Not Found")


class KeyServer(_Peer):
    scheme = "https"

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.cafile, self._keyfile = make_certificate(folder)
        self.files: dict[str, bytes] = {}
        self.fail: dict[str, list[int]] = {}  # path -> statuses answered first, one a request
        self.redirects: dict[str, str] = {}  # path -> Location

    def url(self, path: str) -> str:
        return f"{self.origin}{path}"

    def wrap(self, httpd: ThreadingHTTPServer) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cafile, self._keyfile)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def handle(self, req: _Handler) -> None:
        if self.fail.get(req.path):
            return req.send(self.fail[req.path].pop(0), b"try again later")
        if req.path in self.redirects:
            return req.send(302, Location=self.redirects[req.path])
        if req.path in self.files:
            return req.send(200, self.files[req.path], Content_Type="application/pgp-keys")
        return req.send(404, b"Not Found")


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA) and its key."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext"]
        + ["subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


P = TypeVar("P", bound=_Peer)


@contextmanager
def running(peer: P) -> Iterator[P]:
    """`with running(MetadataServer()) as metadata:` ... stopped at the end."""
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


def closed_url(path: str = "/v1") -> str:
    """An address on which nothing listens: a region without the metadata service."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
