"""`sandbox-agent status`: the stack as the engine shows it, the front door and its
certificate, the watchdog's view and the last backup, in one record. A room of its own, since
it reads the rooms that change the stack (backup's restore comes up through deploy)."""

from __future__ import annotations

import dataclasses

from agent import engine, stack
from agent.secrets import SecretStore
from agent.settings import Settings


def status(settings: Settings) -> stack.StackStatus:
    """What `status` shows; reads, never changes."""
    from agent import backup
    from agent.checks.https import certificate_fix
    from agent.stack import certificate
    from agent.watchdog import ledger

    client = engine.connect(settings.docker.host)
    found = stack.stack_status(client, settings)
    SecretStore(settings.paths.secrets).read_all()  # Caddy's last error is redacted with them
    front = certificate.door_status(settings, client)
    cert = front.certificate
    if cert is not None and (cert.state != "issued" or cert.near_expiry):
        front = dataclasses.replace(front, fix=certificate_fix(settings, cert.name))
    newest = backup.last(settings)
    failed = backup.read_record(settings.paths.state).get("failed")
    backups = {"last": newest.as_dict() if newest else None, "failed": failed or None}
    return dataclasses.replace(
        found, watchdog=ledger.summary(settings.paths.state), door=front, backup=backups
    )
