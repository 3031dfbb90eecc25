"""The probes against a real local HTTP server: what counts as ready, and what counts as open
to strangers (stack.exposure)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agent import gate, probes
from agent import settings as settings_mod
from agent.checks.stack import _stranger_view


class Peer(BaseHTTPRequestHandler):
    key: str | None = "k-123456789"
    onboarding = False
    signup = False
    models_page: str | None = None  # an HTML page instead of the model list
    hang_chat: threading.Event | None = None  # chat completions wait for this

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/health":
            self._send(200, {})
        elif self.path == "/api/config":
            self._send(
                200, {"onboarding": self.onboarding, "features": {"enable_signup": self.signup}}
            )
        elif self.path == "/v1/models" and self.models_page is not None:
            data = self.models_page.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/v1/models":
            if self.key and self.headers.get("Authorization") != f"Bearer {self.key}":
                self._send(401, {"error": "Unauthorized"})
            else:
                self._send(200, {"data": [{"id": "tiny"}]})
        else:
            self._send(404, {})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.hang_chat is not None:
            self.hang_chat.wait(30)
        self._send(200, {"choices": [{"message": {"content": "hello"}}]})


@pytest.fixture
def peer() -> Iterator[tuple[str, type[Peer]]]:
    handler = type("PeerForTest", (Peer,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_models_probe_needs_the_key_and_the_served_name(peer) -> None:
    url, _ = peer
    assert probes.vllm_models(url, None, "tiny").status == 401
    assert probes.vllm_models(url, "k-123456789", "tiny").ok
    other = probes.vllm_models(url, "k-123456789", "other")
    assert not other.ok and "not 'other'" in other.detail
    assert probes.vllm_chat(url, "k-123456789", "tiny").ok
    assert probes.vllm_health(url).ok


def test_nothing_listening_is_a_failed_probe_not_an_exception() -> None:
    result = probes.vllm_health("http://127.0.0.1:9", timeout=1)
    assert not result.ok and result.status is None and "no answer" in result.detail


def test_a_peer_that_is_no_http_server_is_a_failed_probe(tmp_path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}"

        def answer_garbage() -> None:
            conn, _ = server.accept()
            conn.recv(1024)
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            conn.close()

        threading.Thread(target=answer_garbage, daemon=True).start()
        result = probes.vllm_health(url, timeout=2)
    assert not result.ok and result.status is None
    assert result.detail.startswith(f"no answer from {url}/health: ")


def test_a_web_page_where_the_model_list_should_be_is_a_failed_probe(peer) -> None:
    url, handler = peer
    handler.models_page = "<html>nginx welcome</html>"
    result = probes.vllm_models(url, "k-123456789", "tiny")
    assert (result.ok, result.status) == (False, 200)
    assert result.detail == "/v1/models lists nothing, not 'tiny'"


class Container:
    """What `stack.status` and `stack.logs` read of a docker-py container."""

    def __init__(self, project: str, service: str) -> None:
        self.name = f"{project}-{service}-1"
        self.status = "running"
        self.labels = {"com.docker.compose.project": project, "com.docker.compose.service": service}
        self.attrs = {
            "State": {"Status": "running", "Health": {"Status": "starting"}},
            "RestartCount": 0,
        }

    def logs(self, **_: Any) -> Iterator[bytes]:
        return iter([b"INFO loading the model\n"])


class Engine:
    """A Docker engine on which vLLM runs and never crashes."""

    def __init__(self, project: str) -> None:
        self.containers = self
        self.found = [Container(project, "vllm")]

    def list(self, **_: Any) -> list[Container]:
        return self.found


def test_the_ready_wait_ends_at_timeouts_ready_even_inside_a_slow_probe(peer, write_config):
    url, handler = peer
    handler.hang_chat = threading.Event()
    port = int(url.rsplit(":", 1)[1])
    s = settings_mod.load(
        write_config(
            {
                "project": "wait-test",
                "model": {"id": "acme/tiny", "served_name": "tiny"},
                "api": {"bind": "127.0.0.1", "port": port},
                "ui": {"enabled": False},
                "timeouts": {"ready": 10},
            }
        )
    )
    calls = []

    def clock() -> float:  # the first 8.5 of the 10 seconds already spent loading the model
        calls.append(1)
        return time.monotonic() + (8.5 if len(calls) > 1 else 0)

    began = time.monotonic()
    try:
        with pytest.raises(gate.NotReady) as err:
            gate.wait_ready(
                s, Engine("wait-test"), "k-123456789", clock=clock, sleep=lambda _: None
            )
    finally:
        handler.hang_chat.set()
    assert time.monotonic() - began < 6  # not the chat probe's own 60 s
    assert err.value.message.startswith("a chat completion: not ready after 10s; last answer: ")
    assert "last log lines of vllm:\n  INFO loading the model" in err.value.message
    assert "a very large model may need a longer timeouts.ready" in err.value.fix


def test_a_keyed_api_and_a_closed_ui_are_not_exposed(peer) -> None:
    url, _ = peer
    assert _stranger_view("vllm", url, "tiny") == []
    assert _stranger_view("open-webui", url, "tiny") == []


def test_an_api_without_a_key_is_exposed(peer) -> None:
    url, handler = peer
    handler.key = None
    assert _stranger_view("vllm", url, "tiny") == [
        f"vLLM at {url} answers /v1/models without an API key"
    ]


@pytest.mark.parametrize(
    "onboarding, signup, words",
    [
        pytest.param(True, False, "the first visitor to sign up becomes the admin", id="no-admin"),
        pytest.param(False, True, "signup is open to anyone", id="signup-open"),
    ],
)
def test_a_ui_that_accepts_signup_is_exposed(peer, onboarding, signup, words) -> None:
    url, handler = peer
    handler.onboarding, handler.signup = onboarding, signup
    found = _stranger_view("open-webui", url, "tiny")
    assert len(found) == 1 and words in found[0]


@pytest.mark.parametrize(
    "bind, port, url",
    [
        pytest.param("0.0.0.0", 8000, "http://127.0.0.1:8000", id="any-ipv4"),
        pytest.param("::", 3000, "http://[::1]:3000", id="any-ipv6"),
        pytest.param("10.0.0.5", 8000, "http://10.0.0.5:8000", id="address"),
    ],
)
def test_base_url_reaches_wildcards_through_loopback(bind, port, url) -> None:
    assert probes.base_url(bind, port) == url
