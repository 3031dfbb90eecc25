"""A local Hugging Face Hub: enough of the protocol for the real huggingface_hub to resolve,
list and download repos (see TESTING.md). stdlib only, threaded, on 127.0.0.1.

Tests build tiny repos (`add_repo`), make some gated, make a file's download drop after N
bytes, and read `requests` to prove what the client did (a Range resume, no request at all).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".model")
BAD_TOKEN_MESSAGE = "Invalid credentials in Authorization header"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    token: str | None


@dataclass
class Revision:
    sha: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    revisions: dict[str, Revision] = field(default_factory=dict)
    gated: str | bool = False  # False, "auto" or "manual"
    approved: set[str] = field(default_factory=set)  # tokens whose user accepted the licence


@dataclass
class Drop:
    after: int  # bytes sent before the connection is cut
    times: int


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.tokens: set[str] = set()
        self.requests: list[Request] = []
        self.drops: dict[tuple[str, str], Drop] = {}
        self.on_download: Callable[[str, str], None] | None = None  # (repo_id, path) hook
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # --- building repos -------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        revision: str = "main",
        gated: str | bool = False,
    ) -> str:
        """Add (or add a revision to) a repo; returns the commit sha."""
        repo = self.repos.setdefault(repo_id, Repo(repo_id))
        repo.gated = gated or repo.gated
        digest = hashlib.sha1(repo_id.encode() + revision.encode())
        for path in sorted(files):
            digest.update(path.encode() + _git_oid(files[path]).encode())
        sha = digest.hexdigest()
        repo.revisions[revision] = Revision(sha, dict(files))
        return sha

    def drop(self, repo_id: str, path: str, *, after: int, times: int = 1) -> None:
        """Cut the connection of the next `times` downloads of `path` after `after` bytes."""
        self.drops[(repo_id, path)] = Drop(after, times)

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and contains in r.path
            )

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def find(self, repo_id: str, revision: str) -> tuple[Repo | None, Revision | None]:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, None
        rev = repo.revisions.get(revision) or next(
            (r for r in repo.revisions.values() if r.sha == revision), None
        )
        return repo, rev


@contextmanager
def running_hub() -> Iterator[HubServer]:
    hub = HubServer().start()
    try:
        yield hub
    finally:
        hub.stop()


_API = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+))?/?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: HubServer

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_GET(self) -> None:
        self._handle(head=False)

    # --- routing ----------------------------------------------------------------------------
    def _handle(self, *, head: bool) -> None:
        hub = self.server_hub
        path = urlsplit(self.path).path
        auth = self.headers.get("Authorization") or ""
        token = auth[7:] if auth.startswith("Bearer ") else None
        with hub._lock:
            hub.requests.append(Request(self.command, path, self.headers.get("Range"), token))
        if token is not None and token not in hub.tokens:
            return self._error(401, None, BAD_TOKEN_MESSAGE)
        if match := _API.match(path):
            return self._api(
                match.group(1), match.group(2), unquote(match.group(3) or "main"), token
            )
        if match := _RESOLVE.match(path):
            return self._resolve(
                match.group(1), unquote(match.group(2)), unquote(match.group(3)), token, head
            )
        return self._error(404, None, "not found")

    def _lookup(self, repo_id: str, revision: str, token: str | None):
        repo, rev = self.server_hub.find(repo_id, revision)
        if repo is None:
            self._error(401 if token is None else 404, "RepoNotFound", "Repository not found")
        elif rev is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo, rev

    def _api(self, repo_id: str, kind: str | None, revision: str, token: str | None) -> None:
        repo, rev = self._lookup(repo_id, revision, token)
        if repo is None or rev is None:
            return
        if kind == "tree":
            entries = []
            for p, data in sorted(rev.files.items()):
                entry = {"type": "file", "path": p, "size": len(data), "oid": _git_oid(data)}
                if _is_lfs(p):
                    entry["lfs"] = {
                        "oid": hashlib.sha256(data).hexdigest(),
                        "size": len(data),
                        "pointerSize": 134,
                    }
                entries.append(entry)
            return self._json(entries)
        siblings = []
        for p, data in sorted(rev.files.items()):
            sibling = {"rfilename": p, "size": len(data), "blobId": _git_oid(data)}
            if _is_lfs(p):
                sibling["lfs"] = {
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "pointerSize": 134,
                }
            siblings.append(sibling)
        self._json(
            {
                "_id": repo_id,
                "id": repo_id,
                "modelId": repo_id,
                "sha": rev.sha,
                "private": False,
                "gated": repo.gated,
                "disabled": False,
                "tags": [],
                "siblings": siblings,
            }
        )

    def _resolve(
        self, repo_id: str, revision: str, filename: str, token: str | None, head: bool
    ) -> None:
        hub = self.server_hub
        repo, rev = self._lookup(repo_id, revision, token)
        if repo is None or rev is None:
            return
        if repo.gated:
            if token is None:
                return self._error(401, "GatedRepo", "Access to this model is restricted")
            if token not in repo.approved:
                return self._error(403, "GatedRepo", "Access to this model is not granted")
        data = rev.files.get(filename)
        if data is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist")
        etag = hashlib.sha256(data).hexdigest() if _is_lfs(filename) else _git_oid(data)
        start, status = 0, 200
        ranged = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        if ranged and not head:
            start, status = int(ranged.group(1)), 206
        self.send_response(status)
        self.send_header("X-Repo-Commit", rev.sha)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        if hub.on_download is not None:
            hub.on_download(repo_id, filename)
        limit = len(data)
        with hub._lock:
            drop = hub.drops.get((repo_id, filename))
            if drop is not None and drop.times > 0:
                drop.times -= 1
                limit = min(limit, start + drop.after)
        view = memoryview(data)
        position = start
        try:
            while position < limit:
                end = min(limit, position + (1 << 20))
                self.wfile.write(view[position:end])
                position = end
            if limit < len(data):  # cut the connection mid-body, as a flaky network does
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # --- answers ----------------------------------------------------------------------------
    def _json(self, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
