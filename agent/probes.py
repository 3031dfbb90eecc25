"""HTTP probes of the services, with the standard library only and short timeouts.

A probe never raises: it returns a `Probe` saying whether the service answered as it should,
with the HTTP status and a short reason. The API key is sent, never logged or returned.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from agent import http_client, log
from agent.results import Record


@dataclass(frozen=True)
class Probe(Record):
    name: str
    ok: bool
    status: int | None  # the HTTP status, None when nothing answered
    detail: str
    seconds: float


def base_url(bind: str, port: int) -> str:
    """Where this machine reaches a port published on `bind` (wildcards: loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def request(
    url: str, *, key: str | None = None, body: Any = None, timeout: float = 5.0
) -> tuple[int | None, Any, str]:
    """(status, parsed JSON or text, error) of one request; never raises."""
    headers = {"Accept": "application/json"}
    data = None
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    # agent.http_client.fetch: no proxy (http_proxy would see every key a probe sends), no redirect
    # (it would carry the key to another host)
    reply = http_client.fetch(
        url, method="POST" if data else "GET", headers=headers, data=data, timeout=timeout
    )
    if reply.status is None:
        return None, None, f"no answer from {url}: {reply.failure}"
    payload = _decode(reply.body)
    if not 200 <= reply.status < 300:
        return reply.status, payload, f"HTTP {reply.status}: {_short(payload)}"
    return reply.status, payload, ""


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _short(payload: Any) -> str:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return log.redact_text(text.strip())[:200]


def _model_ids(payload: Any) -> list[Any]:
    """The ids of an OpenAI model list; [] for anything else (a web page on the port)."""
    data = payload.get("data") if isinstance(payload, dict) else None
    return [m.get("id") for m in data if isinstance(m, dict)] if isinstance(data, list) else []


def _timed(name: str, start: float, ok: bool, status: int | None, detail: str) -> Probe:
    return Probe(name, ok, status, log.redact_text(detail), round(time.monotonic() - start, 3))


def vllm_health(api: str, timeout: float = 3.0) -> Probe:
    start = time.monotonic()
    status, _, error = request(f"{api}/health", timeout=timeout)
    return _timed("vllm.health", start, status == 200, status, error or "vLLM /health answers 200")


def _lists(
    name: str, start: float, status: int | None, payload: Any, served: str, who: str, via: str
) -> Probe:
    """A model list (OpenAI's shape) that holds the served name, or what it holds instead."""
    names = _model_ids(payload)
    if served not in names:
        return _timed(name, start, False, status, f"{who} {names or 'nothing'}, not {served!r}")
    return _timed(name, start, True, status, f"{who} {served!r}{via}")


def vllm_models(api: str, key: str | None, served_name: str, timeout: float = 5.0) -> Probe:
    """/v1/models lists the served name. Without `key`: what a stranger sees."""
    start = time.monotonic()
    status, payload, error = request(f"{api}/v1/models", key=key, timeout=timeout)
    if status != 200:
        return _timed("vllm.models", start, False, status, error)
    return _lists("vllm.models", start, status, payload, served_name, "/v1/models lists", "")


def vllm_key_required(api: str, served_name: str, timeout: float = 5.0) -> Probe:
    """A request without the API key is refused (401/403): no setting left the API open."""
    start = time.monotonic()
    status, _, error = request(f"{api}/v1/models", timeout=timeout)
    if status in (401, 403):
        return _timed(
            "vllm.key_required", start, True, status, "the API refuses a request without the key"
        )
    if status is None:
        return _timed("vllm.key_required", start, False, status, error)
    return _timed(
        "vllm.key_required",
        start,
        False,
        status,
        f"/v1/models answered {status} without the API key: anyone who reaches the port can use it",
    )


def vllm_chat(api: str, key: str | None, model: str, timeout: float = 60.0) -> Probe:
    """One real chat completion of a few tokens: the only true liveness test of the engine."""
    start = time.monotonic()
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 4,
        "temperature": 0,
    }
    status, payload, error = request(
        f"{api}/v1/chat/completions", key=key, body=body, timeout=timeout
    )
    if status != 200:
        return _timed("vllm.chat", start, False, status, error)
    try:
        text = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return _timed("vllm.chat", start, False, status, f"unexpected answer: {_short(payload)}")
    return _timed("vllm.chat", start, True, status, f"a chat completion answered {text!r:.40}")


def ui_health(ui: str, timeout: float = 3.0) -> Probe:
    start = time.monotonic()
    status, _, error = request(f"{ui}/health", timeout=timeout)
    return _timed(
        "ui.health", start, status == 200, status, error or "Open WebUI /health answers 200"
    )


def proxy_health(url: str, timeout: float = 3.0) -> Probe:
    """The proxy's own loopback health answer: it runs and serves (certificates aside)."""
    start = time.monotonic()
    status, _, error = request(url, timeout=timeout)
    return _timed("proxy.health", start, status == 200, status, error or "the proxy answers 200")


def ui_signup_closed(ui: str, timeout: float = 5.0) -> Probe:
    """Nobody can sign up: an admin exists (no onboarding) and signup is disabled.

    Reads the public /api/config rather than trying a signup, which would create a user.
    """
    start = time.monotonic()
    status, payload, error = request(f"{ui}/api/config", timeout=timeout)
    if status != 200 or not isinstance(payload, dict):
        return _timed("ui.signup", start, False, status, error or "no config from /api/config")
    if payload.get("onboarding"):
        return _timed(
            "ui.signup",
            start,
            False,
            status,
            "no user exists yet: the first visitor to sign up becomes the admin",
        )
    if (payload.get("features") or {}).get("enable_signup"):
        return _timed("ui.signup", start, False, status, "signup is open to anyone")
    return _timed("ui.signup", start, True, status, "signup is closed; an admin exists")


def ui_signup(ui: str, name: str, email: str, password: str, timeout: float = 10.0) -> Probe:
    """Create the first user (the admin) through the signup API."""
    start = time.monotonic()
    body = {"name": name, "email": email, "password": password}
    status, _, error = request(f"{ui}/api/v1/auths/signup", body=body, timeout=timeout)
    return _timed("ui.signup", start, status == 200, status, error or f"{email} signed up")


def ui_models(ui: str, email: str, password: str, served_name: str, timeout: float = 10.0) -> Probe:
    """Sign in as the admin and list the models through the UI: the UI reaches vLLM with the key."""
    start = time.monotonic()
    body = {"email": email, "password": password}
    status, payload, error = request(f"{ui}/api/v1/auths/signin", body=body, timeout=timeout)
    token = payload.get("token") if status == 200 and isinstance(payload, dict) else None
    if not token:
        return _timed(
            "ui.models",
            start,
            False,
            status,
            f"cannot sign in as {email}: {error or 'no token in the answer'}",
        )
    status, payload, error = request(f"{ui}/api/models", key=token, timeout=timeout)
    if status != 200:
        return _timed("ui.models", start, False, status, error)
    return _lists("ui.models", start, status, payload, served_name, "the UI lists", " from vLLM")


@dataclass(frozen=True)
class EngineLoad(Record):
    """vLLM's own /metrics, the three series that tell a busy engine from a stuck one."""

    ok: bool
    detail: str
    running: float | None = None  # vllm:num_requests_running
    waiting: float | None = None  # vllm:num_requests_waiting
    generated: float | None = None  # vllm:generation_tokens_total (a counter)


LOAD_SERIES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:generation_tokens_total": "generated",
}


def parse_load(text: str) -> dict[str, float]:
    """The LOAD_SERIES summed over their label sets, from Prometheus' text format."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        key = LOAD_SERIES.get(name)
        if key is None:
            continue
        try:
            value = float(line.rsplit("}", 1)[-1].split()[0])
        except (ValueError, IndexError):
            continue
        found[key] = found.get(key, 0.0) + value
    return found


def vllm_load(api: str, timeout: float = 3.0) -> EngineLoad:
    status, payload, error = request(f"{api}/metrics", timeout=timeout)
    if status != 200 or not isinstance(payload, str):
        return EngineLoad(False, error or "/metrics is not Prometheus text")
    found = parse_load(payload)
    if "running" not in found or "generated" not in found:
        return EngineLoad(False, "/metrics has no vllm:num_requests_running or tokens counter")
    return EngineLoad(True, "read /metrics", **found)
