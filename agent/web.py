"""HTTP with the standard library: the one place the agent sets urllib up.

`fetch` is for peers on this box or its link: the services' probes and the Linode metadata
service at 169.254.169.254. It uses no proxy (the environment's http_proxy would see every
key and token a request carries, and a link-local address is never behind one) and follows
no redirect (it would carry them to another host). It never raises: the `Reply` says what
came back, or why nothing did.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_BODY = 1 << 20  # bytes read from an answer: a probe is no download
CHUNK = 64 << 10


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, never followed: it would carry a key to another host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


@dataclass(frozen=True)
class Reply:
    status: int | None  # the HTTP status (a 4xx or 5xx too); None when nothing answered
    body: bytes  # at most `limit` bytes of it
    failure: str = ""  # why nothing, or nothing whole, came back; "" when it did
    too_long: bool = False  # the answer was longer than `limit`

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and not self.failure


def fetch(
    url: str,
    *,
    method: str | None = None,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
    timeout: float = 5.0,
    limit: int = MAX_BODY,
) -> Reply:
    """One request to a peer on this box or its link: no proxy, no redirect; never raises."""
    req = urllib.request.Request(url, data=data, headers=dict(headers or {}), method=method)
    return _open(_LOCAL, req, timeout, limit)


def _open(
    opener: urllib.request.OpenerDirector, req: urllib.request.Request, timeout: float, limit: int
) -> Reply:
    try:
        with opener.open(req, timeout=timeout) as resp:
            return _read(resp, resp.status, timeout, limit)
    except urllib.error.HTTPError as exc:
        try:
            return _read(exc, exc.code, timeout, limit)
        except (OSError, http.client.HTTPException):
            return Reply(exc.code, b"")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # URLError and timeouts are OSErrors; a peer that is no HTTP server (or hangs up
        # mid-answer) raises http.client's own errors; a malformed URL a ValueError.
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        return Reply(None, b"", failure=str(reason))


def _read(resp: Any, status: int, timeout: float, limit: int) -> Reply:
    """At most `limit` bytes, within `timeout` for the whole body (a peer that drips one byte
    a second would otherwise never time out)."""
    deadline = time.monotonic() + timeout
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        if time.monotonic() > deadline:
            return Reply(status, b"".join(parts), f"the answer took over {timeout:g} s")
        chunk = resp.read(min(CHUNK, limit + 1 - size))
        if not chunk:
            return Reply(status, b"".join(parts))
        parts.append(chunk)
        size += len(chunk)
    return Reply(status, b"".join(parts)[:limit], f"the answer is over {_size(limit)}", True)


def _size(limit: int) -> str:
    return f"{limit / (1 << 20):g} MiB" if limit >= 1 << 20 else f"{limit} bytes"
