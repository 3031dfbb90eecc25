"""HTTP with the standard library: the one place the agent sets urllib up.

`fetch` is for peers on this box or its link: the services' probes and the Linode metadata
service at 169.254.169.254. It uses no proxy (the environment's http_proxy would see every
key and token a request carries, and a link-local address is never behind one) and follows
no redirect (it would carry them to another host). It never raises: the `Reply` says what
came back, or why nothing did.

`download` is for a small file from the internet, an apt repository's signing key: https
only (after a redirect too), through the environment's https_proxy when one is set, at most `limit`
bytes, a few tries with a short backoff on what a retry can mend (no answer, 408, 429, 5xx),
and a `DownloadFailed` naming the host otherwise.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent import log
from agent.errors import AgentError

MAX_BODY = 1 << 20  # bytes read from an answer: a probe is no download, a key is small
CHUNK = 64 << 10
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # transient: worth another try


class DownloadFailed(AgentError):
    """A file could not be downloaded; the fix names the host."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, never followed: it would carry a key to another host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _NotHttps(urllib.error.URLError):
    pass


class _HttpsRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are followed to https only: what came over plain http could be anyone's."""

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme != "https":
            raise _NotHttps(f"it redirects to {newurl}, which is not https")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


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
    except _NotHttps:
        raise
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


def download(
    url: str,
    *,
    limit: int = MAX_BODY,
    tries: int = 3,
    timeout: float = 15.0,
    backoff: float = 1.0,
) -> bytes:
    """A small file over https, whole and at most `limit` bytes; DownloadFailed otherwise."""
    split = urllib.parse.urlsplit(url)
    host = split.hostname or url
    fix = f"check that this box reaches {host} over https, then run the command again"
    if split.scheme != "https":
        raise DownloadFailed(f"{url} is not an https address: it is not fetched", fix=fix)
    why = ""
    for attempt in range(1, tries + 1):
        if attempt > 1:
            log.get("web").info("download.retry", url=url, attempt=attempt, reason=why)
            time.sleep(backoff * 2 ** (attempt - 2))
        try:
            # built per call: its ProxyHandler reads the proxy variables when it is made
            opener = urllib.request.build_opener(_HttpsRedirect)
            reply = _open(opener, urllib.request.Request(url), timeout, limit)
        except _NotHttps as exc:  # raised before any answer is read: no retry mends it
            raise DownloadFailed(f"{url} was not fetched: {exc.reason}", fix=fix) from None
        if reply.too_long:  # what is asked for is small: a retry would send as much again
            raise DownloadFailed(
                f"cannot download {url}: it sends more than {_size(limit)}", fix=fix
            )
        if reply.ok:
            return reply.body
        if reply.status is None:
            why = f"no answer from {host}: {reply.failure}"
        elif reply.failure:
            why = reply.failure
        else:
            why = f"it answered HTTP {reply.status}"
            if reply.status not in RETRY_STATUS:
                break
    raise DownloadFailed(f"cannot download {url}: {why}", fix=fix)
