"""`backup` and `restore` on the real engine with the stand-ins, as a person runs them: a backup
while the UI serves, a wiped data folder restored, and every refusal (a changed byte, an
archive of a newer Open WebUI, a full disk) and failure (a UI that does not come up on the
restored data, a restore killed with -9) ending with nothing lost.

One stack for the module; the tests run in order against it, like a person's session."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.backup_support import Box, running_box, state
from tests.integration.stack_support import agent, free_port, tree_digest

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    yield from running_box(tmp_path_factory.mktemp("backup"))


def test_a_backup_while_the_ui_serves_restores_a_wiped_data_folder(box: Box) -> None:
    chats, ids = box.chats(), box.ids()
    ran = box.run("backup")
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert (
        "backup written: " in ran.stdout and "databases (online snapshots): webui.db" in ran.stdout
    )
    assert "from Open WebUI 0.6.0+standin, schema alembic standin-1" in ran.stdout
    assert box.ids() == ids and box.ui_ok()  # it ran beside the UI: nothing stopped
    [archive] = list(box.backups.iterdir())
    files = {k: v for k, v in tree_digest(box.data).items() if not k.startswith("webui.db")}
    shutil.rmtree(box.data)  # everything lost
    ran = box.run("restore", archive.name, "--yes")
    assert ran.returncode == 0, ran.stdout + ran.stderr[-3000:]
    assert f"restored {archive.name} into {box.data}" in ran.stdout
    assert "checking data/webui.db: SQLite's integrity_check" in ran.stdout
    assert box.chats() == chats and box.ui_ok()
    assert {k: v for k, v in tree_digest(box.data).items() if k in files} == files
    now = box.ids()
    assert now["vllm"] == ids["vllm"]  # only the UI was stopped: vLLM never restarted
    assert now["open-webui"][0] == ids["open-webui"][0]  # the same container, started again
    assert not box.journal.exists()
    status = box.run("status").stdout
    assert f"last backup: {archive.name[11:15]}-" in status and str(archive) in status
    notice = (box.folder / "motd.d" / "51-sandbox-agent-backup").read_text()
    assert "last backup " in notice and str(archive) in notice


def test_a_changed_byte_is_refused_before_the_ui_is_touched(box: Box) -> None:
    good = box.backup()
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = box.folder / "bad.tar.gz"
    bad.write_bytes(bytes(data))
    before, ids = state(box), box.ids()
    ran = box.run("restore", str(bad), "--yes")
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert f"error: FILE: {bad} is damaged: " in ran.stderr
    assert "; nothing was changed" in ran.stderr
    assert state(box) == before and box.ids() == ids and box.ui_ok()


def test_an_archive_of_a_newer_open_webui_is_refused_saying_which(box: Box, tmp_path) -> None:
    """A backup the agent took beside an Open WebUI 0.99.0 (its image's tag says so; it does
    not answer here), brought back to the 0.6.0 stand-in that runs."""
    other = yaml.safe_load(box.config.read_text())
    other["ui"]["port"] = free_port()  # closed: the version comes from the tag
    other["images"]["webui"] = "ghcr.io/open-webui/open-webui:v0.99.0"
    config = tmp_path / "newer.yaml"
    config.write_text(yaml.safe_dump(other))
    ran = agent("backup", "--json", "--config", str(config))
    assert ran.returncode == 0, ran.stderr[-3000:]
    newer = Path(json.loads(ran.stdout)["path"])
    assert json.loads(ran.stdout)["open_webui"]["version"] == "0.99.0"
    before, ids = state(box), box.ids()
    ran = box.run("restore", str(newer), "--yes")
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert (
        f"error: FILE: {newer.name} is from Open WebUI 0.99.0 (schema alembic standin-1), newer "
        "than the 0.6.0+standin running here (read from its /api/version): it would not read "
        "that schema; nothing was changed"
    ) in ran.stderr
    assert "fix: move Open WebUI to 0.99.0 or newer first" in ran.stderr
    assert state(box) == before and box.ids() == ids
    newer.unlink()


def test_a_full_disk_fails_the_backup_and_leaves_no_partial_archive(box: Box, tmpfs) -> None:
    small = tmpfs(box.folder / "small", "64k")
    (box.data / "uploads" / "big.bin").write_bytes(os.urandom(200_000))
    try:
        ran = box.run("backup", env={"BACKUP_DIR": str(small)})
    finally:
        (box.data / "uploads" / "big.bin").unlink()
    assert ran.returncode == 1, ran.stdout
    assert f"error: the backup did not fit in {small}: no space left on the device" in ran.stderr
    assert "no archive was written, the earlier backups are kept" in ran.stderr
    assert os.listdir(small) == []  # no partial archive, no staging folder
    checks = {c["id"]: c for c in json.loads(box.run("doctor", "--json").stdout)["checks"]}
    assert checks["backup.last"]["status"] == "warn"
    assert "the last backup failed at " in checks["backup.last"]["summary"]


def _archive_with(box: Box, knobs: dict[str, Any]) -> Path:
    """A backup of the data folder with the stand-in's knobs in it (read at start only)."""
    knob = box.data / "standin.json"
    knob.write_text(json.dumps(knobs))
    try:
        return box.backup()
    finally:
        knob.unlink()


def test_a_restore_the_ui_does_not_come_up_on_is_undone(box: Box) -> None:
    broken = _archive_with(box, {"health": "fail"})
    box.backup()  # the record says a good one is the last
    before = state(box)
    ran = box.run("restore", str(broken), "--yes")
    assert ran.returncode == 1, ran.stdout
    assert "error: Open WebUI" in ran.stderr and "not ready after 20s" in ran.stderr
    assert "the restore was undone: the data from before serves again (the restored copy is " in (
        ran.stderr
    )
    assert state(box) == before and box.ui_ok()
    kept = sorted(box.folder.glob("ui_data.restore-failed-*"))
    assert len(kept) == 1 and (kept[0] / "standin.json").exists()
    assert not box.journal.exists()


def test_a_restore_killed_midway_is_repaired_by_up_with_nothing_lost(box: Box) -> None:
    slow = _archive_with(box, {"load_seconds": 60})
    before = state(box)
    child = box.spawn("restore", str(slow), "--yes")
    try:
        for _ in range(600):
            text = box.journal.read_text() if box.journal.exists() else ""
            if '"phase": "starting"' in text:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the restore never swapped the folders")
        time.sleep(1.0)  # in the gate: the UI is loading on the restored folder
        running = box.run("status").stdout  # the lock held: the watchdog stands back
        assert f"change running: restore {slow.name} (pid {child.pid}, since " in running
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert (box.data / "standin.json").exists()  # the restored one is in place, half done
    status = box.run("status").stdout
    assert (
        "CHANGE HALF DONE: an interrupted restore left Open WebUI's data folder half swapped"
        in (status)
    )
    again = box.run("restore", str(slow), "--yes")
    assert again.returncode == 1
    assert "error: an interrupted restore is not repaired yet; nothing was changed" in again.stderr
    assert "fix: run `sandbox-agent up` (it repairs it), then restore again" in again.stderr
    ran = box.run("up")
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "an interrupted restore is repaired first" in ran.stdout
    assert state(box) == before and box.ui_ok()  # the data from before, nothing lost
    [kept] = box.folder.glob("ui_data.restore-interrupted-*")
    assert (kept / "standin.json").exists()
    assert not box.journal.exists()
    assert not list(box.folder.glob("ui_data.restoring-*"))


def test_a_restore_killed_while_it_unpacks_changed_nothing(box: Box) -> None:
    """Killed before the swap: the data folder was never touched and no change is pending;
    the half-unpacked folder is swept by the next restore, which goes through."""
    big = box.data / "uploads" / "big.bin"
    big.write_bytes(os.urandom(60_000_000))  # incompressible: the unpack takes a while
    try:
        archive = box.backup()
    finally:
        big.unlink()
    before, ids = state(box), box.ids()
    child = box.spawn("restore", str(archive), "--yes")
    try:
        for _ in range(3000):
            if list(box.folder.glob("ui_data.restoring-*/uploads")):
                break
            time.sleep(0.01)
        else:
            pytest.fail("the restore never began to unpack")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert not box.journal.exists() and state(box) == before and box.ids() == ids
    assert "CHANGE HALF DONE" not in box.run("status").stdout
    assert list(box.folder.glob("ui_data.restoring-*"))  # what it left
    ran = box.run("restore", str(archive), "--yes")
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert not list(box.folder.glob("ui_data.restoring-*"))
    assert (box.data / "uploads" / "big.bin").stat().st_size == 60_000_000 and box.ui_ok()
