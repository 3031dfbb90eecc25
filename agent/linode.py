"""The Linode metadata service: this box's public IPv4 address.

`PUT /v1/token`, then `GET /v1/network` with the token (PLATFORM.md). Not every region has
the service, so the fallback is the first address `hostname -I` prints. Through the one
command runner (curl), so tests serve canned answers; the token goes to curl on stdin, never
in its argv.
"""

from __future__ import annotations

import ipaddress
import json

from agent import log, proc

METADATA = "http://169.254.169.254/v1"


def _curl(*args: str, header: str | None = None, timeout: float = 3.0) -> str | None:
    argv = ["curl", "-fsS", "--max-time", f"{timeout:g}", *args]
    if header is not None:
        argv[1:1] = ["-H", "@-"]
    try:
        done = proc.run(argv, check=False, timeout=timeout + 2, input=header)
    except (proc.CommandNotFound, proc.CommandTimeout):
        return None
    return done.stdout if done.returncode == 0 else None


def metadata_ipv4() -> str | None:
    token = _curl("-X", "PUT", "-H", "Metadata-Token-Expiry-Seconds: 300", f"{METADATA}/token")
    if not token or not token.strip():
        return None
    log.register_secret(token.strip())
    body = _curl(
        "-H",
        "Accept: application/json",
        f"{METADATA}/network",
        header=f"Metadata-Token: {token.strip()}\n",
    )
    try:
        public = json.loads(body or "null")["ipv4"]["public"]
        return _address(str(public[0]).split("/")[0])
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def hostname_ipv4() -> str | None:
    try:
        done = proc.run(["hostname", "-I"], check=False, timeout=5)
    except proc.CommandNotFound:
        return None
    for word in done.stdout.split():
        if (found := _address(word)) is not None:
            return found
    return None


def public_ipv4() -> str | None:
    """The public address, from the metadata service, else `hostname -I`; None when neither."""
    return metadata_ipv4() or hostname_ipv4()


def _address(text: str) -> str | None:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    return str(addr) if addr.version == 4 and not addr.is_loopback else None
