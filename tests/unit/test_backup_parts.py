"""The backup's smaller parts: where backups may live, how versions compare and a newer
archive is refused, doctor's and status's words, the timer's units, and the copy an update
keeps of the data folder."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent import backup, settings, unitfile
from agent.backup import layout, store, swap
from agent.backup.restore import check_version, resolve
from agent.checks import backup as backup_check
from agent.checks.base import DoctorContext
from agent.cli import main
from agent.cli.stack import backup_text
from agent.errors import AgentError, BadInput
from agent.watchdog import backup_timer as timer
from tests.unit.backup_support import lay_out_ui_data, make_settings, tree


def test_backups_may_live_in_the_state_folder_and_default_there(write_config, tmp_path) -> None:
    s = settings.load(write_config())
    assert s.backup.dir is None and s.backup_dir == tmp_path / "state" / "backups"
    s = settings.load(write_config({"backup": {"dir": str(tmp_path / "state" / "kept")}}))
    assert s.backup_dir == tmp_path / "state" / "kept"
    assert settings.load(Path("/x/c.yaml")).backup_dir == Path("/var/lib/sandbox-agent/backups")


@pytest.mark.parametrize(
    "folder, words",
    [
        pytest.param("state", "and paths.state ({tmp}/state) overlap", id="the-state-itself"),
        pytest.param("open-webui/b", "and paths.ui_data ({tmp}/open-webui) overlap", id="in-ui"),
        pytest.param("models/b", "and paths.models ({tmp}/models) overlap", id="in-models"),
        pytest.param("secrets/b", "and paths.secrets ({tmp}/secrets) overlap", id="in-secrets"),
    ],
)
def test_a_backup_dir_that_overlaps_data_is_refused_naming_it(
    write_config, tmp_path: Path, folder: str, words: str
) -> None:
    with pytest.raises(BadInput) as caught:
        settings.load(write_config(), env={"BACKUP_DIR": str(tmp_path / folder)})
    assert caught.value.key == "backup.dir (from environment BACKUP_DIR)"
    assert words.format(tmp=tmp_path) in caught.value.message


def test_the_state_folder_may_not_lie_inside_the_backup_dir(write_config, tmp_path) -> None:
    with pytest.raises(BadInput) as caught:
        settings.load(write_config({"backup": {"dir": str(tmp_path)}}))
    assert "overlap" in caught.value.message


@pytest.mark.parametrize("bad", ["7 days", "0", "-1", "1001"])
def test_a_bad_keep_is_refused(write_config, bad: str) -> None:
    with pytest.raises(BadInput) as caught:
        settings.load(write_config(), env={"BACKUP_KEEP": bad})
    assert caught.value.key == "backup.keep (from environment BACKUP_KEEP)"
    assert "use a whole number from 1 to 1000" in caught.value.message


@pytest.mark.parametrize(
    "a, b, newer",
    [
        ("0.13.0", "0.12.4", True),
        ("0.12.10", "0.12.4", True),
        ("v0.12.4", "0.12.4", False),
        ("0.12.4", "0.12.4+standin", False),
        ("0.12", "0.12.1", False),
        ("1.0.0", "0.99.9", True),
        ("0.12.4", None, False),
        ("main", "0.12.4", False),
    ],
)
def test_versions_compare_by_their_numbers(a, b, newer: bool) -> None:
    assert layout.newer(a, b) is newer


@pytest.mark.parametrize(
    "image, version",
    [
        ("ghcr.io/open-webui/open-webui:v0.12.4", "0.12.4"),
        ("ghcr.io/open-webui/open-webui:0.13.0", "0.13.0"),
        ("ghcr.io/open-webui/open-webui:main", None),
        ("ghcr.io/open-webui/open-webui:v0.12.4-cuda", None),
        ("localhost:5000/open-webui", None),
        ("ghcr.io/open-webui/open-webui@sha256:" + "a" * 64, None),
    ],
)
def test_an_image_tag_names_its_release(image: str, version: str | None) -> None:
    assert layout.image_version(image) == version


def test_an_archive_of_a_newer_open_webui_is_refused_saying_which(write_config, tmp_path) -> None:
    s = make_settings(write_config, tmp_path)  # the UI is not up: the image's tag, v0.12.4
    header = {"format": 1, "open_webui": {"version": "0.13.1"}, "schema": {"alembic": "ffee"}}
    with pytest.raises(BadInput) as caught:
        check_version(s, tmp_path / "b.tar.gz", header)
    assert caught.value.exit_code == 2
    assert caught.value.message == (
        "FILE: b.tar.gz is from Open WebUI 0.13.1 (schema alembic ffee), newer than the 0.12.4 "
        "running here (read from the tag of ghcr.io/open-webui/open-webui:v0.12.4): it would "
        "not read that schema; nothing was changed"
    )
    assert "--webui-image ghcr.io/open-webui/open-webui:v0.13.1" in caught.value.fix
    older = {**header, "open_webui": {"version": "0.11.0"}}
    assert check_version(s, tmp_path / "b.tar.gz", older) == ("0.11.0", "0.12.4")
    with pytest.raises(BadInput) as caught:
        check_version(s, tmp_path / "b.tar.gz", {**header, "format": 2})
    assert "was written by a newer sandbox-agent (format 2)" in caught.value.message


def test_restore_of_a_file_that_is_not_there_names_it(write_config, tmp_path: Path) -> None:
    s = make_settings(write_config, tmp_path)
    with pytest.raises(BadInput) as caught:
        resolve(s, Path("open-webui-20260101T000000Z.tar.gz"))
    assert caught.value.message == (
        f"FILE: open-webui-20260101T000000Z.tar.gz is not a backup file here (nor in "
        f"{s.backup_dir})"
    )
    s.backup_dir.mkdir(parents=True)
    (s.backup_dir / "open-webui-20260101T000000Z.tar.gz").write_bytes(b"x")
    found = resolve(s, Path("open-webui-20260101T000000Z.tar.gz"))
    assert found == s.backup_dir / "open-webui-20260101T000000Z.tar.gz"


def test_restore_of_a_file_that_is_no_backup_is_refused(write_config, tmp_path: Path) -> None:
    s = make_settings(write_config, tmp_path)
    lay_out_ui_data(s.paths.ui_data).close()
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive at all")
    before = tree(s.paths.ui_data)
    with pytest.raises(BadInput) as caught:
        backup.restore(s, junk, tmp_path / "config.yaml")
    assert caught.value.message == (
        f"FILE: {junk} is damaged: its header cannot be read (not a sandbox-agent backup?); "
        "nothing was changed"
    )
    assert tree(s.paths.ui_data) == before


def _doctor(s: settings.Settings) -> backup_check.Check:
    return backup_check.check_last(DoctorContext(settings=s))


def test_doctor_warns_without_a_recent_backup_and_says_the_last(write_config, tmp_path) -> None:
    s = make_settings(write_config, tmp_path)
    found = _doctor(s)
    assert found.status == "warn" and found.summary.startswith("no backup of Open WebUI's data yet")
    assert "sandbox-agent backup" in found.fix and "sandbox-agent-backup.timer" in found.fix
    s.backup_dir.mkdir(parents=True)
    old = s.backup_dir / layout.archive_name(time.time() - 3 * 86400)
    old.write_bytes(b"x" * 1000)
    found = _doctor(s)
    assert found.status == "warn" and found.summary == "the last backup is 3.0 days old (1.0 KB)"
    new = s.backup_dir / layout.archive_name(time.time() - 7200)
    new.write_bytes(b"x" * 2000)
    found = _doctor(s)
    assert found.status == "ok" and found.summary == "the last backup is 2 h old (2.0 KB)"
    assert found.detail == str(new)


def test_doctor_and_status_say_a_failed_run(write_config, tmp_path, tmpfs) -> None:
    s = make_settings(write_config, tmp_path)
    store.record(s, done=None, failed={"error": "no space left", "fix": "free space"})
    found = _doctor(s)
    assert found.status == "warn" and found.summary.startswith("the last backup failed at ")
    assert found.summary.endswith(": no space left") and found.fix == "free space"
    assert _doctor(make_settings(write_config, tmp_path, ui={"enabled": False})).status == "skip"
    record = {"last": None, "failed": store.read_record(s.paths.state)["failed"]}
    lines = list(backup_text(record))
    assert lines[0] == "last backup: none yet (`sandbox-agent backup` makes one)"
    assert lines[1].startswith("  LAST BACKUP FAILED at ") and lines[1].endswith("no space left")


def test_a_backup_says_itself_on_the_login_message(write_config, tmp_path: Path) -> None:
    s = make_settings(write_config, tmp_path)
    lay_out_ui_data(s.paths.ui_data).close()
    done = backup.backup(s)
    notice = (tmp_path / "motd.d" / store.NOTICE).read_text()
    assert notice.startswith("sandbox-agent backup:\n  last backup ")
    assert f"): {done.path}\n" in notice
    assert json.loads((s.paths.state / store.RECORD).read_text())["done"]["path"] == str(done.path)


@pytest.mark.parametrize(
    "config, line",
    [
        (None, "ExecStart=/opt/v/bin/sandbox-agent backup --daily\n"),
        (
            "/etc/my dir/c.yaml",
            'ExecStart=/opt/v/bin/sandbox-agent backup --daily --config "/etc/my dir/c.yaml"\n',
        ),
        (
            "/etc/100%/c.yaml",
            "ExecStart=/opt/v/bin/sandbox-agent backup --daily --config /etc/100%%/c.yaml\n",
        ),
    ],
)
def test_the_backup_unit_names_this_agent_and_its_settings(config, line: str) -> None:
    text = timer.render_service(
        unitfile.packaged(timer.SERVICE).read_text(),
        "/opt/v/bin/sandbox-agent",
        Path(config) if config else None,
    )
    assert line in text and text.count("ExecStart=") == 1
    assert "Type=oneshot" in text and "IOSchedulingClass=idle" in text


def test_the_timer_is_daily_and_catches_up_after_a_day_off() -> None:
    text = unitfile.packaged(timer.TIMER).read_text()
    assert "\nOnCalendar=daily\n" in text and "\nPersistent=true\n" in text
    assert "\nWantedBy=timers.target\n" in text


def test_an_update_copy_is_the_same_bytes_links_and_modes(tmp_path: Path) -> None:
    source = tmp_path / "ui"
    lay_out_ui_data(source).close()
    os.chmod(source / "uploads", 0o750)
    swap.copy_tree(source, tmp_path / "copy")
    assert tree(tmp_path / "copy") == tree(source)
    for rel in ("", "uploads", "uploads/photo.bin", "webui.db"):
        a, b = (source / rel).lstat(), (tmp_path / "copy" / rel).lstat()
        assert (a.st_mode, a.st_uid, a.st_mtime_ns) == (b.st_mode, b.st_uid, b.st_mtime_ns), rel


def test_put_back_with_nothing_set_aside_leaves_the_data_folder(write_config, tmp_path) -> None:
    """Killed before the copy was whole: the data folder is the one from before; the half copy
    goes. (No container is touched: nothing was swapped.)"""
    s = make_settings(write_config, tmp_path)
    lay_out_ui_data(s.paths.ui_data).close()
    before = tree(s.paths.ui_data)
    aside = layout.aside(s.paths.ui_data, "before-update", time.time())
    half = aside.with_name(aside.name + swap.COPYING)
    half.mkdir()
    data = {"live": str(s.paths.ui_data), "aside": str(aside), "discard": "failed-update"}
    assert swap.put_back(s, data) is None
    assert tree(s.paths.ui_data) == before and not half.exists()


def test_cli_backup_and_list_print_what_was_kept(write_config, tmp_path: Path) -> None:
    s = make_settings(write_config, tmp_path)
    lay_out_ui_data(s.paths.ui_data).close()
    config = str(s.source)
    runner = CliRunner()
    ran = runner.invoke(main, ["backup", "--config", config])
    assert ran.exit_code == 0, ran.output
    assert "backup written: " in ran.output and "the archive is 0600" in ran.output
    assert "databases (online snapshots): webui.db, vector_db/chroma.sqlite3" in ran.output
    listed = runner.invoke(main, ["backup", "--config", config, "list", "--json"])
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.output[listed.output.index("{") :])
    assert [b["reason"] for b in data["backups"]] == ["manual"]
    assert data["folder"] == str(s.backup_dir) and data["keep"] == 7
    ran = runner.invoke(main, ["restore", "--config", config, "nothing.tar.gz", "--yes"])
    assert ran.exit_code == 2 and "error: FILE: nothing.tar.gz is not a backup file" in ran.output


def test_an_update_is_refused_when_the_copy_of_the_data_would_not_fit(
    write_config, tmp_path, tmpfs
):
    disk = tmpfs(tmp_path / "disk", "4m")
    s = make_settings(write_config, tmp_path, paths={"ui_data": str(disk / "open-webui")})
    lay_out_ui_data(s.paths.ui_data).close()
    with pytest.raises(AgentError) as caught:
        swap.check_room_for_copy(s)
    assert caught.value.message.startswith(
        f"there is no room beside {s.paths.ui_data} for the copy an update keeps of it"
    )
    assert caught.value.message.endswith("; nothing was changed")
    swap.check_room_for_copy(make_settings(write_config, tmp_path))  # /tmp has room
