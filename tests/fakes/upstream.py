"""A tiny upstream on the host's loopback for proxy tests: it records what reaches it.

Any path answers 200 with JSON naming the upstream, the path and the Authorization header it
got. Two paths behave like the services behind the proxy:

- ``.../stream``: a server-sent-events body of ``CHUNKS`` events, ``CHUNK_GAP`` seconds apart
  (vLLM's ``stream: true`` completions), so a test sees whether a proxy buffers;
- ``.../ws``: a websocket upgrade (RFC 6455) that echoes one text message (Open WebUI's
  socket.io transport upgrades the same way).

    with serving("api") as api:
        api.port, api.paths()   # paths in the order they arrived
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import struct
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNKS = 5
CHUNK_GAP = 0.5
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(key: str) -> str:
    """The Sec-WebSocket-Accept value for a Sec-WebSocket-Key (RFC 6455, 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def read_ws_frame(stream: io.BufferedIOBase) -> tuple[int, bytes]:
    """One websocket frame from ``stream``: (opcode, unmasked payload)."""
    first, second = stream.read(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack(">H", stream.read(2))
    elif length == 127:
        (length,) = struct.unpack(">Q", stream.read(8))
    mask = stream.read(4) if second & 0x80 else b""
    payload = stream.read(length)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return first & 0x0F, payload


def ws_frame(payload: bytes, *, mask: bytes = b"", opcode: int = 1) -> bytes:
    """A final websocket frame (text by default); clients must pass a 4-byte ``mask``."""
    if len(payload) >= 126:
        raise ValueError("short frames only")
    head = bytes([0x80 | opcode, (0x80 if mask else 0) | len(payload)])
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if mask else payload
    return head + mask + body


class RecordingUpstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self._paths: list[str] = []
        self._bodies: list[int] = []
        self._lock = threading.Lock()

    def handle_error(self, request: object, client_address: object) -> None:
        """A proxy that gives up on a request (a body over its limit) closes the connection
        while the handler still writes: expected here, not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def record(self, path: str) -> None:
        with self._lock:
            self._paths.append(path)

    def record_body(self, size: int) -> None:
        with self._lock:
            self._bodies.append(size)

    def body_sizes(self) -> list[int]:
        """Bytes of each POST body read in full, in order."""
        with self._lock:
            return list(self._bodies)

    def paths(self) -> list[str]:
        with self._lock:
            return list(self._paths)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecordingUpstream

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
        pass

    def do_GET(self) -> None:
        self.server.record(self.path)
        route = self.path.split("?", 1)[0]
        if route.endswith("/ws") and self.headers.get("Upgrade", "").lower() == "websocket":
            self._websocket()
        elif route.endswith("/stream"):
            self._events()
        else:
            self._json()

    def do_POST(self) -> None:
        self.server.record_body(self._read_body())
        self.do_GET()

    def _read_body(self) -> int:
        """Read the whole body (Content-Length or chunked); return how many bytes came."""
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return len(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        total = 0
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            total += len(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()
        return total

    def _json(self) -> None:
        body = json.dumps(
            {
                "upstream": self.server.name,
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for number in range(CHUNKS):
            if number:
                time.sleep(CHUNK_GAP)
            event = f"data: {number}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _websocket(self) -> None:
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", ws_accept(self.headers["Sec-WebSocket-Key"]))
        self.end_headers()
        self.wfile.flush()
        opcode, payload = read_ws_frame(self.rfile)
        self.wfile.write(ws_frame(b"echo: " + payload, opcode=opcode))
        self.wfile.flush()
        self.close_connection = True


@contextlib.contextmanager
def serving(name: str) -> Iterator[RecordingUpstream]:
    server = RecordingUpstream(name)
    thread = threading.Thread(target=server.serve_forever, name=f"upstream-{name}", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
