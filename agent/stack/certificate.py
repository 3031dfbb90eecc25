"""The proxy's certificate as Caddy left it: read from its store on the host, with no network
and no admin API, and while there is none, Caddy's last error from the proxy's log.

Caddy keeps certificates in certmagic's layout under its $XDG_DATA_HOME (agent.door.store):
`caddy/certificates/<issuer>/<name>/<name>.crt`, where <issuer> is the ACME directory's host
and path (`acme-v02.api.letsencrypt.org-directory`) and every key is made "safe" (lower case,
`:` -> `-`, nothing but letters, digits, `_ @ . -`). Checked with Caddy 2.6.2 and pebble: the
file appears when the certificate is issued, a chain, the leaf first. Its expiry is read with
a small DER reader (the stdlib's `ssl` has no public certificate parser; no new dependency).
Caddy renews at a third of the lifetime left (30 of Let's Encrypt's 90 days), so a
certificate near expiry means renewal is failing.
"""

from __future__ import annotations

import base64
import json
import math
import re
import urllib.parse
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from agent import door, log
from agent.door import Door
from agent.errors import AgentError
from agent.settings import Settings
from agent.stack.observe import Certificate, DoorStatus, logs
from agent.stack.render import PROXY

if TYPE_CHECKING:
    from agent.engine import DockerClient

LOG_TAIL = 2000  # lines of the proxy's log searched for its last error
ERROR_CHARS = 240  # one short line
# Caddy's loggers of certificate issuance: tls.obtain (each try, "will retry"), the ACME
# issuer and its client (tls.issuance.acme*, and http.acme_client in Caddy 2.6)
_LOGGERS = ("tls.obtain", "tls.issuance.acme", "http.acme_client")
_TRIED = ("could not get certificate from issuer", "will retry")  # tls.obtain, each try
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)
_UNSAFE = re.compile(r"[^A-Za-z0-9_@.-]")


def safe(key: str) -> str:
    """certmagic's StorageKeys.Safe: a name or an issuer as a folder name."""
    key = key.strip().lower()
    for old, new in ((" ", "_"), ("+", "_plus_"), ("*", "wildcard_"), (":", "-"), ("..", "")):
        key = key.replace(old, new)
    return _UNSAFE.sub("", key)


def issuer_folder(acme_ca: str) -> str:
    """certmagic's issuer key of an ACME directory URL, made safe: host, `-`, the path."""
    url = urllib.parse.urlsplit(acme_ca)
    key = url.netloc
    path = url.path.replace("/", "-").replace("\\", "-").strip("-")
    return safe(f"{key}-{path}" if path else key)


def path(settings: Settings, name: str) -> Path:
    """Where Caddy keeps (or will keep) the certificate of `name` from https.acme_ca."""
    folder = door.store(settings) / "caddy" / "certificates" / issuer_folder(settings.https.acme_ca)
    return folder / safe(name) / f"{safe(name)}.crt"


def read(settings: Settings, name: str, now: datetime | None = None) -> Certificate:
    """The certificate of `name` from the store: files only (the watchdog reads it often)."""
    where = path(settings, name)
    issuer = where.parent.parent.name
    try:
        pem = where.read_bytes()
    except FileNotFoundError:
        return Certificate(name, "pending", issuer, where)
    except OSError as exc:
        return Certificate(name, "unreadable", issuer, where, error=exc.strerror or str(exc))
    try:
        expires = not_after(first_der(pem))
    except ValueError as exc:
        return Certificate(name, "unreadable", issuer, where, error=str(exc))
    left = (expires - (now or datetime.now(timezone.utc))).total_seconds() / 86400
    return Certificate(name, "issued", issuer, where, expires.isoformat(), math.floor(left))


def for_door(
    settings: Settings, front: Door, client: DockerClient | None = None
) -> Certificate | None:
    """The open door's certificate (None: no proxy); while it is pending or near its expiry,
    Caddy's last error from the proxy's log, when `client` can read it."""
    if not front.on or front.name is None:
        return None
    found = read(settings, front.name)
    if client is not None and (found.state == "pending" or found.near_expiry):
        error, at = last_error(client, settings.project, front.name)
        if error:
            found = replace(found, error=error, error_at=at)
    return found


def fix(settings: Settings, name: str, address: str = "this box") -> str:
    """What makes a certificate come (or its renewal work again): the name's A record at
    `address`, the ACME ports open to the internet. Caddy retries by itself."""
    h = settings.https
    ports = (
        f"open ports {h.http_port} and {h.port} to the internet (in the Linode Cloud Firewall too)"
    )
    again = "Caddy retries by itself, no restart needed"
    if h.domain == "auto":
        return f"{ports}: the name is Linode's own and points here; {again}"
    return f"point the A record of {name} at {address} and {ports}; {again}"


def door_status(settings: Settings, client: DockerClient | None = None) -> DoorStatus:
    front = door.current(settings)
    api = door.api_url(settings, front)
    return DoorStatus(
        front.name if front.on else None,
        door.ui_url(settings, front),
        api + "/v1" if api else None,
        for_door(settings, front, client),
    )


def last_error(client: DockerClient, project: str, name: str) -> tuple[str, str | None]:
    """Caddy's last error about issuance in the proxy's log, one short redacted line, and
    when it was logged ("" when there is none, or no proxy container to read)."""
    try:
        text = b"".join(logs(client, project, PROXY, tail=LOG_TAIL)).decode(errors="replace")
    except AgentError:
        return "", None
    return caddy_error(text.splitlines(), name)


def caddy_error(lines: list[str], name: str) -> tuple[str, str | None]:
    """From Caddy's JSON log lines: the latest try's most telling error about `name`. Each
    failed try ends with tls.obtain's "will retry"; within one, a failed http-01 challenge
    says most (a firewall, DNS), then any failed challenge, then what tls.obtain says."""
    tries: list[list[dict[str, object]]] = [[]]
    for line in lines:
        entry = _entry(line)
        if entry is None or not _about(entry, name):
            continue
        tries[-1].append(entry)
        if entry.get("logger") == "tls.obtain" and entry.get("msg") == "will retry":
            tries.append([])
    latest = next((t for t in reversed(tries) if t), [])
    if not latest:
        return "", None

    def rank(entry: dict[str, object]) -> int:
        if entry.get("msg") == "challenge failed":
            return 3 if entry.get("challenge_type") == "http-01" else 2
        return 1 if entry.get("msg") in _TRIED else 0

    best = max(reversed(latest), key=rank)  # the last one of the best rank
    msg, error = str(best.get("msg") or ""), str(best.get("error") or "")
    if rank(best) >= 2:
        msg = f"{best.get('challenge_type') or 'a'} challenge failed"
    text = error if msg in ("", "will retry") else f"{msg}: {error}" if error else msg
    return _one_line(text), _when(best.get("ts"))


def _entry(line: str) -> dict[str, object] | None:
    start = line.find("{")
    if start < 0:
        return None
    try:
        entry = json.loads(line[start:])
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("level") != "error":
        return None
    logger = str(entry.get("logger") or "")
    return entry if logger.startswith(_LOGGERS) else None


def _about(entry: dict[str, object], name: str) -> bool:
    """An entry about `name`: its identifier, else the `[name]` its error begins with; never
    the lock's housekeeping (a stop leaves "unable to unlock")."""
    if "lock" in str(entry.get("msg") or ""):
        return False
    if "identifier" in entry:
        return entry["identifier"] == name
    error = str(entry.get("error") or "")
    return not error.startswith("[") or error.startswith(f"[{name}]")


def _one_line(text: str) -> str:
    text = log.redact_text(text)
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def _when(ts: object) -> str | None:
    if not isinstance(ts, (int, float)) or not 0 < ts < 1e11:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


# --- DER: the leaf's notAfter ---------------------------------------------------------------


def first_der(pem: bytes) -> bytes:
    """The first certificate of a PEM chain (the leaf, as Caddy writes it), as DER."""
    found = _PEM.search(pem)
    if found is None:
        raise ValueError("no PEM certificate in the file")
    try:
        return base64.b64decode(b"".join(found.group(1).split()), validate=True)
    except ValueError:
        raise ValueError("the PEM certificate is not base64") from None


def _element(der: bytes, at: int, tag: int | None = None) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at `at`."""
    if at + 2 > len(der):
        raise ValueError("the certificate ends early")
    found, size, at = der[at], der[at + 1], at + 2
    if size & 0x80:
        count = size & 0x7F
        if not 0 < count <= 4 or at + count > len(der):
            raise ValueError("the certificate has a bad DER length")
        size, at = int.from_bytes(der[at : at + count], "big"), at + count
    if at + size > len(der):
        raise ValueError("the certificate ends early")
    if tag is not None and found != tag:
        raise ValueError(f"the certificate has DER tag {found:#04x} where {tag:#04x} belongs")
    return found, at, at + size


SEQUENCE, UTC_TIME, GENERALIZED_TIME, VERSION = 0x30, 0x17, 0x18, 0xA0


def not_after(der: bytes) -> datetime:
    """Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial,
    signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... } (RFC 5280)."""
    _, cert, _ = _element(der, 0, SEQUENCE)
    _, at, end = _element(der, cert, SEQUENCE)
    if at < end and der[at] == VERSION:
        at = _element(der, at)[2]
    for _ in range(3):  # serialNumber, signature, issuer
        at = _element(der, at)[2]
    _, validity, _ = _element(der, at, SEQUENCE)
    after = _element(der, validity)[2]
    tag, start, stop = _element(der, after)
    text = der[start:stop].decode("ascii", errors="replace")
    formats = {UTC_TIME: "%y%m%d%H%M%SZ", GENERALIZED_TIME: "%Y%m%d%H%M%SZ"}
    if tag not in formats:
        raise ValueError(f"the certificate's notAfter has DER tag {tag:#04x}, not a time")
    try:
        parsed = datetime.strptime(text, formats[tag])
    except ValueError:
        raise ValueError(f"the certificate's notAfter {text!r} is not a time") from None
    # RFC 5280: UTCTime's two-digit years 50-99 are 19xx (strptime's %y pivots at 69)
    if tag == UTC_TIME and parsed.year >= 2050:
        parsed = parsed.replace(year=parsed.year - 100)
    return parsed.replace(tzinfo=timezone.utc)


def expiring(found: Certificate) -> str:
    """'expires 2027-03-01 (89 days left)' for an issued certificate."""
    day = (found.expires or "")[:10]
    if found.days_left is not None and found.days_left < 0:
        return f"expired on {day}"
    return f"expires {day} ({found.days_left} days left)"
