"""https.*: the front door. What faces the network and how, the domain's DNS records, the
proxy itself, and its certificate (read from Caddy's store; Caddy's last error from its log).

"This box" is the addresses of its own interfaces and the public IPv4 the metadata service
gave `up` (spelled by the saved Linode name): doctor never asks the metadata service itself.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

from agent import door, engine, linode, service_health, stack
from agent.checks.base import Check, CheckSpec, DoctorContext
from agent.errors import AgentError
from agent.secrets import SecretStore
from agent.settings import Settings, loopback
from agent.stack import certificate

UP_FIX = "run `sandbox-agent up` (it says what is wrong when it cannot start the stack)"
PROBE_BUDGET = 5.0


def own_addresses(settings: Settings) -> tuple[str, ...]:
    """This box's addresses: its interfaces', then the IPv4 the metadata service gave `up`."""
    found = list(linode.interface_addresses())
    spelled = door.linode_ipv4(door.saved_name(settings))
    if spelled is not None and spelled not in found:
        found.append(spelled)
    return tuple(found)


def public_ipv4(settings: Settings, mine: tuple[str, ...] | None = None) -> str:
    """The address to point an A record at, as the fix says it."""
    spelled = door.linode_ipv4(door.saved_name(settings))
    ipv4 = [a for a in (mine if mine is not None else own_addresses(settings)) if ":" not in a]
    return spelled or (ipv4[0] if ipv4 else "this box's public IPv4 address")


def certificate_fix(settings: Settings, name: str) -> str:
    return certificate.fix(settings, name, public_ipv4(settings))


def check_door(ctx: DoctorContext) -> Check:
    s = ctx.settings
    front = door.current(s)
    if front.on:
        served = [f"the chat UI at {door.ui_url(s, front)}"] if front.ui else []
        served += [f"the API at {door.api_url(s, front)}/v1 (with the key)"] if front.api else []
        named = "the box's Linode name" if s.https.domain == "auto" else "https.domain"
        return Check(
            "https.door",
            "ok",
            f"the proxy serves {' and '.join(served)} over https",
            detail=f"{front.name} is {named}; vLLM and Open WebUI publish on 127.0.0.1 only; "
            f"plain http on port {s.https.http_port} redirects to https",
        )
    open_ui = s.ui.enabled and not loopback(s.ui.bind)
    if not open_ui and loopback(s.api.bind):
        return Check(
            "https.door",
            "ok",
            "no proxy: the UI and the API listen on this box only",
            detail="reach them through `ssh -L`, or set ui.bind and HTTPS_DOMAIN",
        )
    why = (
        "https.domain is off"
        if s.https.domain == "off"
        else "https.domain is auto and no Linode name is saved (`up` asks the metadata service "
        "for it; off Linode there is none)"
    )
    return Check(
        "https.door",
        "warn",
        f"the chat UI is open on {s.ui.bind}:{s.ui.port} over plain http: logins cross the "
        "network in clear text",
        detail=why,
        fix="set HTTPS_DOMAIN to a domain whose A record points at this box, then run "
        "`sandbox-agent up` (or set UI_BIND=127.0.0.1 and use `ssh -L`)",
    )


def check_dns(ctx: DoctorContext) -> Check:
    s = ctx.settings
    name = s.https.domain
    if name in ("auto", "off"):
        why = "the name is Linode's own" if name == "auto" else "no proxy"
        return Check("https.dns", "skip", f"no domain given (https.domain: {name}: {why})")
    if not door.current(s).on:
        return Check("https.dns", "skip", f"{name} is set, but nothing faces the network")
    mine = own_addresses(s)
    try:
        found = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        return Check(
            "https.dns",
            "fail",
            f"{name} has no A or AAAA record",
            detail=f"the resolver says: {getattr(exc, 'strerror', None) or exc}",
            fix=f"create an A record for {name} pointing at {public_ipv4(s, mine)}; "
            "the certificate follows once it resolves",
        )
    records = list(dict.fromkeys(_plain(str(info[4][0])) for info in found))
    here = {_plain(a) for a in mine}
    elsewhere = [r for r in records if r not in here]
    detail = f"{name}: {', '.join(records)}; this box: {', '.join(mine) or 'no address found'}"
    if elsewhere:
        fix = f"point the A record at {public_ipv4(s, mine)}"
        if any(":" in r for r in elsewhere):
            fix += " and remove the AAAA record (or point it at this box's IPv6 address)"
        return Check(
            "https.dns",
            "fail",
            f"{name} points at {', '.join(elsewhere)}, not at this box",
            detail=detail,
            fix=fix + "; Let's Encrypt checks the name from the internet",
        )
    return Check("https.dns", "ok", f"{name} points at this box ({', '.join(records)})")


def _plain(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.split("%")[0]))
    except ValueError:
        return address


def _proxy(ctx: DoctorContext) -> stack.ServiceStatus:
    def read() -> stack.ServiceStatus:
        client = engine.connect(ctx.docker_url, timeout=5)
        return stack.status(client, ctx.settings.project, (stack.PROXY,))[0]

    return ctx.once("stack.status.proxy", read)


def check_proxy(ctx: DoctorContext) -> Check:
    s = ctx.settings
    if not door.current(s).on:
        return Check("https.proxy", "skip", "no proxy runs (see https.door)")
    try:
        svc = _proxy(ctx)
    except engine.EngineUnavailable:
        return Check(
            "https.proxy", "skip", "the Docker engine is not reachable (see docker.engine)"
        )
    if svc.state == "missing":
        return Check("https.proxy", "fail", "the proxy is not running: no container", fix=UP_FIX)
    if svc.state != "running":
        return Check(
            "https.proxy",
            "fail",
            f"the proxy is {svc.state}: nothing answers on the https ports",
            detail=f"restarted {svc.restart_count} time(s)",
            fix=f"`sandbox-agent logs {stack.PROXY}` shows why; then {UP_FIX}",
        )
    judged = service_health.assess(
        svc, service_health.stages(s, stack.PROXY, None), budget=PROBE_BUDGET
    )
    detail = f"container {svc.container}, image {svc.image}, health {svc.health}"
    if not judged.ok:
        return Check(
            "https.proxy",
            "fail",
            "the proxy runs but does not answer its health check",
            detail=f"{judged.detail}; {detail}",
            fix=f"`sandbox-agent logs {stack.PROXY}`; the watchdog restarts it when this lasts",
        )
    return Check(
        "https.proxy",
        "ok",
        f"the proxy runs and answers {door.health_url(s)}",
        detail=detail,
    )


def check_certificate(ctx: DoctorContext) -> Check:
    s = ctx.settings
    front = door.current(s)
    if not front.on or front.name is None:
        return Check("https.certificate", "skip", "no proxy runs (see https.door)")
    with contextlib.suppress(AgentError, OSError):
        SecretStore(s.paths.secrets).read_all()  # Caddy's error is redacted with them all
    client = None
    with contextlib.suppress(AgentError):
        client = engine.connect(ctx.docker_url, timeout=5)
    found = certificate.for_door(s, front, client)
    assert found is not None
    name, fix = front.name, certificate_fix(s, front.name)
    said = f"Caddy's last error ({found.error_at or 'time unknown'}): {found.error}"
    if found.state == "unreadable":
        return Check(
            "https.certificate",
            "fail",
            f"the certificate of {name} cannot be read: {found.error}",
            detail=str(found.path),
            fix=f"see `sandbox-agent logs {stack.PROXY}`; Caddy writes the file again when it "
            "renews (Let's Encrypt issues 5 per name per week: do not delete the store)",
        )
    if found.state == "pending":
        if found.error:
            return Check(
                "https.certificate",
                "fail",
                f"no certificate yet for {name}: Caddy's tries fail",
                detail=said,
                fix=fix,
            )
        why = (
            "nothing in the proxy's log says why yet: a first certificate takes seconds to minutes"
            if client is not None
            else "the proxy's log cannot be read (see docker.engine)"
        )
        return Check(
            "https.certificate",
            "warn",
            f"no certificate yet for {name}: Caddy is asking {found.issuer} for one",
            detail=why,
            fix=fix,
        )
    summary = f"the certificate of {name} from {found.issuer} {certificate.expiring(found)}"
    if found.days_left is not None and found.days_left < 0:
        return Check("https.certificate", "fail", summary, detail=found.error and said, fix=fix)
    if found.near_expiry:
        return Check(
            "https.certificate",
            "warn",
            summary + ": its renewal is failing (Caddy renews 30 days ahead)",
            detail=said if found.error else "nothing in the proxy's log says why",
            fix=fix,
        )
    return Check(
        "https.certificate", "ok", summary, detail=f"{found.path}; Caddy renews it 30 days ahead"
    )


CHECKS = [
    CheckSpec("https.door", check_door, timeout=5),
    CheckSpec("https.dns", check_dns, timeout=10),
    CheckSpec("https.proxy", check_proxy, timeout=10),
    CheckSpec("https.certificate", check_certificate, timeout=10),
]
