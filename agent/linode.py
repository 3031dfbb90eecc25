"""The Linode metadata service: this box's public IPv4 address.

`PUT /v1/token`, then `GET /v1/network` with the token (PLATFORM.md), through agent.http_client: no
proxy, no redirect, short timeouts (the service is on the hypervisor's link; a region without
it must not hold the MOTD up). The token is registered with the log's redaction and sent
only in the request's header. Not every region has the service, so the fallback is the
first IPv4 address of the box's own interfaces, read with psutil: the address `hostname -I`
would print first, less the bridges and veths that containers hang on.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable

from agent import http_client, log

METADATA = "http://169.254.169.254/v1"
TIMEOUT = 2.0  # seconds per request; the service answers in milliseconds where it exists
TOKEN_SECONDS = 300
# interfaces of the containers and VMs on this box: never its own address
CONTAINER_LINKS = ("docker", "br-", "veth", "virbr", "cni", "flannel")


def metadata_ipv4(base: str = METADATA, timeout: float = TIMEOUT) -> str | None:
    """The first public IPv4 the metadata service at `base` lists; None when it does not answer."""
    got = http_client.fetch(
        f"{base}/token",
        method="PUT",
        headers={"Metadata-Token-Expiry-Seconds": str(TOKEN_SECONDS)},
        timeout=timeout,
        limit=4096,
    )
    token = got.body.decode(errors="replace").strip() if got.ok else ""
    if not token or len(token) > 512 or any(c.isspace() for c in token):  # none, or a page
        _unanswered(base, got)
        return None
    log.register_secret(token)
    got = http_client.fetch(
        f"{base}/network",
        headers={"Metadata-Token": token, "Accept": "application/json"},
        timeout=timeout,
        limit=64 << 10,
    )
    if not got.ok:
        _unanswered(base, got)
        return None
    try:
        public = json.loads(got.body)["ipv4"]["public"]
        return _address(str(public[0]).split("/")[0])
    except (ValueError, KeyError, TypeError, IndexError):
        log.get("linode").info("metadata.no_public_ipv4", url=f"{base}/network")
        return None


def _unanswered(base: str, got: http_client.Reply) -> None:
    why = got.failure or (f"HTTP {got.status}" if not got.ok else "its answer is no token")
    log.get("linode").info("metadata.unavailable", url=base, reason=why)


def interface_ipv4() -> str | None:
    """The first IPv4 address of this box's own interfaces (psutil); None when it has none."""
    import psutil  # here: `--help` and `watch` need not pay for it

    return first_ipv4(
        (name, [(a.family, a.address) for a in addrs])
        for name, addrs in psutil.net_if_addrs().items()
    )


def first_ipv4(interfaces: Iterable[tuple[str, Iterable[tuple[int, str]]]]) -> str | None:
    """In the kernel's order of interfaces (psutil keeps it), the first IPv4 address that is
    neither loopback nor link-local, on an interface that is not a container's."""
    for name, addresses in interfaces:
        if name == "lo" or name.startswith(CONTAINER_LINKS):
            continue
        for family, text in addresses:
            if family == socket.AF_INET and (found := _address(text)) is not None:
                return found
    return None


def interface_addresses() -> tuple[str, ...]:
    """Every address of this box's own interfaces, IPv4 and IPv6 (psutil), in the kernel's
    order: what a DNS record of this box may point at."""
    import psutil

    return own_addresses(
        (name, [(a.family, a.address) for a in addrs])
        for name, addrs in psutil.net_if_addrs().items()
    )


def own_addresses(interfaces: Iterable[tuple[str, Iterable[tuple[int, str]]]]) -> tuple[str, ...]:
    """The addresses, IPv4 and IPv6, that are neither loopback nor link-local, on interfaces
    that are not a container's; each once."""
    found: list[str] = []
    for name, addresses in interfaces:
        if name == "lo" or name.startswith(CONTAINER_LINKS):
            continue
        for family, text in addresses:
            if family in (socket.AF_INET, socket.AF_INET6):
                usable = _address(text.split("%")[0], versions=(4, 6))
                if usable is not None and usable not in found:
                    found.append(usable)
    return tuple(found)


def public_ipv4(base: str = METADATA) -> str | None:
    """The public address, from the metadata service, else the box's interfaces; None when
    neither has one."""
    return metadata_ipv4(base) or interface_ipv4()


def _address(text: str, versions: tuple[int, ...] = (4,)) -> str | None:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    usable = addr.version in versions and not (addr.is_loopback or addr.is_link_local)
    return str(addr) if usable else None
