"""Backups of Open WebUI's data: taken while it runs (run), listed and kept (store), restored
behind the gate (restore), and the data folder kept for an update's rollback (swap)."""

from agent.backup.restore import RestoreFailed, RestoreResult, restore
from agent.backup.run import BackupResult, backup
from agent.backup.store import (
    Archive,
    BackupList,
    BackupRunning,
    describe,
    last,
    listing,
    read_record,
)
from agent.backup.swap import (
    check_room_for_copy,
    check_swappable,
    drop_copy,
    keep_copy,
    put_back,
)

__all__ = [
    "Archive",
    "BackupList",
    "BackupResult",
    "BackupRunning",
    "RestoreFailed",
    "RestoreResult",
    "backup",
    "check_room_for_copy",
    "check_swappable",
    "describe",
    "drop_copy",
    "keep_copy",
    "last",
    "listing",
    "put_back",
    "read_record",
    "restore",
]
