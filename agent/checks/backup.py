"""backup.*: Open WebUI's data has a recent backup in backup.dir, and the last run did not fail."""

from __future__ import annotations

import time

from agent import backup
from agent.backup.store import human
from agent.checks.base import Check, CheckSpec, DoctorContext

MAX_AGE = 2 * 86400  # seconds: the timer makes one a day; two days without one is news
TIMER_FIX = (
    "run `sandbox-agent backup` now; the daily one comes from sandbox-agent-backup.timer "
    "(`sandbox-agent watch --install` installs it; see `journalctl -u sandbox-agent-backup`)"
)


def _age(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / 3600:.0f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def check_last(ctx: DoctorContext) -> Check:
    settings = ctx.settings
    if not settings.ui.enabled:
        return Check("backup.last", "skip", "the chat UI is disabled (ui.enabled: false)")
    newest = backup.last(settings)
    failed = backup.read_record(settings.paths.state).get("failed")
    if isinstance(failed, dict) and (
        newest is None or float(failed.get("at_unix") or 0) > newest.created_unix
    ):
        return Check(
            "backup.last",
            "warn",
            f"the last backup failed at {failed.get('at')}: {failed.get('error')}",
            detail=f"last good one: {newest.path}" if newest else "no backup in backup.dir",
            fix=str(failed.get("fix") or TIMER_FIX),
        )
    if newest is None:
        return Check(
            "backup.last",
            "warn",
            f"no backup of Open WebUI's data yet in {settings.backup_dir}",
            fix=TIMER_FIX,
        )
    age = max(0.0, time.time() - newest.created_unix)
    said = f"the last backup is {_age(age)} old ({human(newest.size)})"
    if age > MAX_AGE:
        return Check("backup.last", "warn", said, detail=str(newest.path), fix=TIMER_FIX)
    return Check("backup.last", "ok", said, detail=str(newest.path))


CHECKS: list[CheckSpec] = [CheckSpec("backup.last", check_last, timeout=5)]
