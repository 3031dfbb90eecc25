"""The proxy's Caddyfile, rendered from the settings and the door.

Every value in it is validated before it gets here (a DNS name, an email, an https URL, IP
addresses, port numbers: none can hold a space, brace, quote, `#` or line break), and no
secret is: the API key reaches Caddy through its env file and the `{env.…}` placeholder,
which Caddy reads at request time, so neither this file nor Caddy's adapted config holds it.

The API door denies by default: only `/v1/*` with the key passes (vLLM checks the key again);
every other path is 404, so a route a later vLLM adds is closed from its first day (vLLM's own
key leaves /invocations, /tokenize, /pause and more open: vllm#58144).
"""

from __future__ import annotations

from agent.door import Door, listen
from agent.settings import Settings

KEY_ENV = "SANDBOX_AGENT_API_KEY"  # the proxy's env file holds the key under this name
CA_ROOT_IN_PROXY = "/etc/caddy/acme-ca-root.pem"
HSTS = 'header Strict-Transport-Security "max-age=31536000"'
API_BODY_LIMIT = "10MB"  # a chat request with a long context is well under this
# A declared length of 8+ digits (10 MB or more) is refused before anything goes upstream:
# request_body alone answers 502 after part of the body has passed (caddy#5652).
API_TOO_LARGE = "^[0-9]{8,}$"
UI_BODY_LIMIT = "512MB"  # uploads to Open WebUI
# Addresses Let's Encrypt refuses as an account's contact: such an email is left out.
_NO_CONTACT = frozenset(
    {"example.com", "example.net", "example.org", ".test", ".example", ".invalid", ".local"}
)


def contact(settings: Settings) -> str | None:
    """The ACME account's email: https.email, else the UI admin's; None when the CA would
    refuse it (the account is then made without one)."""
    email = settings.https.email or settings.ui.admin_email
    domain = email.rsplit("@", 1)[-1].lower()
    refused = any(
        domain == d or domain.endswith(d if d[0] == "." else "." + d) for d in _NO_CONTACT
    )
    return None if refused else email


def caddyfile(settings: Settings, door: Door) -> str:
    """The Caddyfile for an open door (`door.on`)."""
    if door.name is None:
        raise ValueError("no proxy: the door has no name")
    h, name = settings.https, door.name
    # HTTP/3 off: every public port is TCP and this guard's (no UDP door beside it)
    options = ["admin off", "servers {", "\tprotocols h1 h2", "}", f"http_port {h.http_port}"]
    options.append(f"https_port {h.port}")
    email = contact(settings)
    options += [f"email {email}"] if email else []
    options.append(f"acme_ca {h.acme_ca}")
    options += [f"acme_ca_root {CA_ROOT_IN_PROXY}"] if h.acme_ca_root else []
    blocks = [_block("", options)]
    if door.ui:
        ui = [*_bind(settings.ui.bind), HSTS, *_body(UI_BODY_LIMIT)]
        ui.append(_proxy_to(settings.ui.port))
        blocks.append(_block(name, ui))
    if door.api:
        api = [*_bind(settings.api.bind), HSTS, *_body(API_BODY_LIMIT)]
        api += [
            "@v1_with_key {",
            "\tpath /v1/*",
            f'\theader Authorization "Bearer {{env.{KEY_ENV}}}"',
            "}",
            "handle @v1_with_key {",
            f"\t@too_large header_regexp Content-Length {API_TOO_LARGE}",
            "\trespond @too_large 413",
            *("\t" + line for line in _proxy_to(settings.api.port).splitlines()),
            "}",
            "handle /v1/* {",
            '\theader WWW-Authenticate "Bearer"',
            '\trespond "the API key is required" 401',
            "}",
            "handle {",
            "\trespond 404",
            "}",
        ]
        blocks.append(_block(f"{name}:{h.api_port}", api))
    health = ["bind 127.0.0.1", 'respond /health "ok" 200', "respond 404"]
    blocks.append(_block(f"http://127.0.0.1:{h.health_port}", health))
    head = "# Rendered by sandbox-agent from its settings; `sandbox-agent up` renders it again.\n"
    return head + "\n".join(blocks)


def _bind(bind: str) -> list[str]:
    address = listen(bind)
    return [f"bind {address}"] if address else []


def _body(limit: str) -> list[str]:
    return ["request_body {", f"\tmax_size {limit}", "}"]


def _proxy_to(port: int) -> str:
    # flush_interval -1: server-sent events (streamed completions) pass at once, unbuffered.
    # No read or write timeout: a long generation is not cut (Caddy's defaults set none).
    return f"reverse_proxy 127.0.0.1:{port} {{\n\tflush_interval -1\n}}"


def _block(address: str, lines: list[str]) -> str:
    body = "".join(f"\t{line}\n" for text in lines for line in text.splitlines())
    return (f"{address} {{\n" if address else "{\n") + body + "}\n"
