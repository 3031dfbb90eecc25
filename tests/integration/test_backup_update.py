"""`update` of Open WebUI on the real engine, against the data a new version migrates on its
first start: a backup first, and when the new image migrates `webui.db` and then fails its
gate (or the update is killed with -9 after it migrated), the data folder goes back byte for
byte before the old image starts, and the old image serves it.

One stack for the module; the tests run in order against it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator

import pytest

from tests.integration.backup_support import REVISION, Box, alembic, running_box, state

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    yield from running_box(tmp_path_factory.mktemp("update"))


def image(box: Box, name: str, *env: str) -> str:
    """A new 'Open WebUI': the stand-in with knobs (STANDIN_MIGRATE: it migrates at start)."""
    tag = f"sandbox-test/webui-{name}:{box.project}"
    dockerfile = f"FROM {box.images[1]}\n" + "".join(f"ENV {e}\n" for e in env)
    box.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return tag


def ui_image(box: Box) -> str:
    [ui] = [c for c in box.client.containers.list() if c.name == f"{box.project}-open-webui-1"]
    return str(ui.attrs["Config"]["Image"])


def test_an_update_that_migrates_then_fails_leaves_the_data_byte_identical(box: Box) -> None:
    broken = image(box, "migrates-fails", "STANDIN_MIGRATE=standin-2", "STANDIN_HEALTH=fail")
    try:
        before = state(box)
        ran = box.run("update", "--webui-image", broken, "--yes", timeout=300)
        assert ran.returncode == 1, ran.stdout
        assert "backing up Open WebUI's data before it moves" in ran.stdout
        assert "copying the data folder while the UI is stopped" in ran.stdout
        assert "error: Open WebUI" in ran.stderr and "not ready after 20s" in ran.stderr
        assert "rolled back: the previous configuration serves again" in ran.stderr
        assert state(box) == before  # settings, and every byte of the data folder
        assert alembic(box.data) == REVISION
        assert ui_image(box) == box.images[1] and box.ui_ok()  # the old image serves it
        [failed] = box.folder.glob("ui_data.failed-update-*")  # kept, never deleted
        assert alembic(failed) == "standin-2"  # the new one did migrate, in there
        assert not list(box.folder.glob("ui_data.before-update-*"))
        assert not box.journal.exists()
        listed = json.loads(box.run("backup", "list", "--json").stdout)["backups"]
        assert [b["reason"] for b in listed] == ["before update"]
    finally:
        box.client.images.remove(broken, force=True)


def test_an_update_killed_after_the_new_ui_migrated_is_repaired_by_up(box: Box) -> None:
    slow = image(box, "migrates-slow", "STANDIN_MIGRATE=standin-3", "STANDIN_LOAD_SECONDS=60")
    try:
        before = state(box)
        child = box.spawn("update", "--webui-image", slow, "--yes")
        try:
            for _ in range(1200):
                text = box.journal.read_text() if box.journal.exists() else ""
                with contextlib.suppress(sqlite3.Error):  # while it migrates: locked
                    if '"data"' in text and alembic(box.data) == "standin-3":
                        break
                time.sleep(0.1)
            else:
                pytest.fail("the new Open WebUI never migrated the data folder")
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        assert "an interrupted update left the settings half changed" in box.run("status").stdout
        ran = box.run("up", timeout=300)
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert "an interrupted update is repaired first" in ran.stdout
        assert "the data folder from before is back" in ran.stdout
        assert state(box) == before and alembic(box.data) == REVISION
        assert ui_image(box) == box.images[1] and box.ui_ok()
        assert not box.journal.exists()
    finally:
        box.client.images.remove(slow, force=True)


def test_a_good_update_of_open_webui_keeps_its_backup_and_drops_its_copy(box: Box) -> None:
    second = image(box, "second")  # the same stand-in under another reference
    try:
        chats = box.chats()
        ran = box.run("update", "--webui-image", second, "--yes", timeout=300)
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert ui_image(box) == second and box.ui_ok() and box.chats() == chats
        assert not list(box.folder.glob("ui_data.before-update-*"))  # the copy went
        listed = json.loads(box.run("backup", "list", "--json").stdout)["backups"]
        assert [b["reason"] for b in listed][:1] == ["before update"]
        ran = box.run("update", "--webui-image", box.images[1], "--yes", timeout=300)
        assert ran.returncode == 0, ran.stderr[-3000:]
    finally:
        box.client.images.remove(second, force=True)
