"""A stand-in for the proxy (Caddy), stdlib only: the parts the agent reads, no TLS.

- The health answer where the Caddyfile puts it (`http://127.0.0.1:PORT { ... respond
  /health "ok" 200 }`, the agent's rendering): GET /health -> 200 "ok", on the host's network.
- Caddy's log: at start, every line of /data/standin-stderr.log (the store, mounted from the
  host) is written to stderr as it is, so a test hands it real Caddy JSON lines.
- Knobs, POST /_standin/mode {"hang": true} (nothing answers, the port stays open) or
  {"health": "fail"} (/health 503); a restart starts it afresh.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CADDYFILE = "/etc/caddy/Caddyfile"
LOG = "/data/standin-stderr.log"
MODE = {"hang": False, "health": "ok"}


def health_port() -> int:
    with open(CADDYFILE) as f:
        found = re.search(r"^http://127\.0\.0\.1:(\d+) \{", f.read(), re.M)
    if found is None:
        sys.exit("door-standin: no http://127.0.0.1:PORT block in the Caddyfile")
    return int(found.group(1))


class Handler(BaseHTTPRequestHandler):
    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if MODE["hang"]:
            time.sleep(3600)
        if self.path == "/health":
            ok = MODE["health"] == "ok"
            self._send(200 if ok else 503, b"ok" if ok else b"failing")
        else:
            self._send(404, b"")

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/_standin/mode":
            self._send(404, b"")
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        MODE.update({k: v for k, v in body.items() if k in MODE})
        self._send(200, json.dumps(MODE).encode())

    def log_message(self, *_: object) -> None:
        pass


def main() -> None:
    if os.path.exists(LOG):
        with open(LOG) as f:
            sys.stderr.write(f.read())
            sys.stderr.flush()
    server = ThreadingHTTPServer(("127.0.0.1", health_port()), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
