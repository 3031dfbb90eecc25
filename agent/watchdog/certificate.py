"""The proxy's certificate as the watchdog sees it: read from Caddy's store now and then (files
only: never the engine, never the network), and while none is issued, or it nears its expiry,
a notice for the MOTD and one journal entry per change. A pending certificate is no ill health:
Caddy retries by itself, so nothing is restarted for it.
"""

from __future__ import annotations

from agent import door
from agent.settings import Settings
from agent.stack import certificate
from agent.stack.observe import Certificate
from agent.watchdog.report import Reporter

EVERY = 60.0  # seconds between two reads of the store


class CertificateWatch:
    def __init__(self, settings: Settings, every: float = EVERY) -> None:
        self.settings, self.every = settings, every
        self.front = door.current(settings)  # the door the stack was started with
        self.lines: list[str] = []  # the MOTD's notice now ([]: nothing to say)
        self.said = ""  # the state last told to the journal
        self._next = float("-inf")

    def check(self, now: float, report: Reporter) -> bool:
        """Read the store when due; True when the notice changed."""
        if now < self._next or not self.front.on or self.front.name is None:
            return False
        self._next = now + self.every
        found = certificate.read(self.settings, self.front.name)
        state = "near_expiry" if found.state == "issued" and found.near_expiry else found.state
        lines = notice(self.settings, found)
        if state != self.said:
            self.said = state
            issued = f"https: {found.name} has its certificate, {certificate.expiring(found)}"
            level = {"issued": "info", "pending": "notice"}.get(state, "warning")
            report.event(
                f"certificate_{state}",
                level,
                issued if state == "issued" else lines[0],
                name=found.name,
                expires=found.expires,
            )
        changed, self.lines = lines != self.lines, lines
        return changed


def notice(settings: Settings, found: Certificate) -> list[str]:
    """The MOTD's lines about the certificate ([] when it is issued and far from expiry)."""
    name = found.name
    if found.state == "issued" and not found.near_expiry:
        return []
    if found.state == "pending":
        head = f"https: no certificate yet for {name}; Caddy asks {found.issuer} again by itself"
    elif found.state == "unreadable":
        head = f"https: the certificate of {name} cannot be read: {found.error}"
    else:
        head = f"https: the certificate of {name} {certificate.expiring(found)}: renewal fails"
    address = door.linode_ipv4(door.saved_name(settings)) or "this box"
    return [
        head,
        "  why: `sandbox-agent doctor` (https.certificate) shows Caddy's last error",
        f"  fix: {certificate.fix(settings, name, address)}",
    ]
