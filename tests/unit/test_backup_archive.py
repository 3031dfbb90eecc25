"""`backup` and the archive it writes, against real SQLite databases and real files: a
consistent snapshot while a writer keeps writing (and a raw copy that is not), every member
checked on the way back, nothing trusted in a hostile archive, a full disk that leaves no
partial archive, retention, and one backup at a time."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from agent import backup
from agent.backup import archive, layout, sealed, store, unpack
from agent.errors import AgentError, BadInput
from tests.unit.backup_support import REVISION, lay_out_ui_data, make_settings, rows, tree


@pytest.fixture
def box(write_config, tmp_path: Path):  # noqa: ANN201
    s = make_settings(write_config, tmp_path)
    db = lay_out_ui_data(s.paths.ui_data)
    yield s
    db.close()


def test_a_backup_restores_every_file_and_each_database_as_it_was(box, tmp_path: Path) -> None:
    before = rows(box.paths.ui_data / "webui.db")
    result = backup.backup(box)
    assert result.path.parent == box.paths.state / "backups"
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(result.path.parent.stat().st_mode) == 0o700
    assert result.databases == ("data/webui.db", "data/vector_db/chroma.sqlite3")
    assert result.schema == {"alembic": REVISION, "migratehistory": None}
    assert result.open_webui["version"] == "0.12.4"  # the UI is not up: the image's tag says
    assert result.skipped == ("cache/escape: a link to /etc/passwd, outside the folder",)
    with tarfile.open(result.path) as tar:
        names = tar.getnames()
    assert names[0] == layout.HEADER and names[-1] == layout.MANIFEST
    assert not any(n.endswith(("-wal", "-shm")) for n in names)  # never beside its database
    assert "settings/config.yaml" in names and not any(n.startswith("secrets/") for n in names)
    got = unpack.unpack(result.path, tmp_path / "out", lambda _: None)
    expected = {
        k: v for k, v in tree(box.paths.ui_data).items() if not k.endswith(("-wal", "-shm"))
    }
    expected.pop("cache/escape")
    restored = tree(got.folder)
    databases = ("webui.db", "vector_db/chroma.sqlite3")
    assert {k: v for k, v in restored.items() if k not in databases} == {
        k: v for k, v in expected.items() if k not in databases
    }  # every upload byte for byte, the cache's link as a link
    assert set(databases) <= set(restored)
    assert rows(got.folder / "webui.db") == before  # the database's content, WAL included
    assert layout.read_schema(got.folder / "webui.db").alembic == REVISION
    chroma = "SELECT v FROM embeddings"
    assert rows(got.folder / "vector_db/chroma.sqlite3", chroma) == rows(
        box.paths.ui_data / "vector_db/chroma.sqlite3", chroma
    )
    assert stat.S_IMODE((got.folder / "uploads" / "photo.bin").stat().st_mode) == 0o644


def test_backup_list_reads_each_archive_header(box) -> None:
    first = backup.backup(box)
    listed = backup.listing(box)
    assert [a.path for a in listed.backups] == [first.path]
    [item] = listed.backups
    assert (item.reason, item.open_webui, item.schema, item.with_secrets) == (
        "manual",
        "0.12.4",
        f"alembic {REVISION}",
        False,
    )


WRITER = """
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30)
db.execute("PRAGMA journal_mode=wal")
db.execute("CREATE TABLE IF NOT EXISTS load (id INTEGER PRIMARY KEY, body TEXT)")
db.commit()
n = 0
while True:
    db.execute("INSERT INTO load (body) VALUES (?)", ("x" * 300,))
    db.commit()
    n += 1
    if n % 50 == 0:
        open(sys.argv[2] + ".new", "w").write(str(n))
        os.replace(sys.argv[2] + ".new", sys.argv[2])
"""


@pytest.fixture
def writer(box):  # noqa: ANN201
    """A process that writes to webui.db as fast as it can, one transaction per row, and says
    how many rows it has committed."""
    count = box.paths.ui_data.parent / "committed"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(box.paths.ui_data / "webui.db"), str(count)]
    )

    def committed() -> int:
        for _ in range(200):
            with contextlib.suppress(OSError, ValueError):
                return int(count.read_text())
            time.sleep(0.05)
        raise AssertionError("the writer committed nothing")

    committed()
    yield committed
    child.kill()
    child.wait()


def test_a_backup_during_a_stream_of_writes_is_a_consistent_database(box, writer, tmp_path):
    for attempt in range(3):
        floor = writer()  # committed before the backup began
        result = backup.backup(box)
        got = unpack.unpack(result.path, tmp_path / f"out{attempt}", lambda _: None)
        assert archive.integrity(got.folder / "webui.db") == "ok"
        ids = [r[0] for r in rows(got.folder / "webui.db", "SELECT id FROM load ORDER BY id")]
        assert len(ids) >= floor  # nothing committed before it began is lost
        assert ids == list(range(1, len(ids) + 1))  # a prefix of the stream: no torn state
        assert rows(got.folder / "webui.db", "SELECT count(*) FROM chat") == [(200,)]


def test_a_raw_copy_under_the_same_load_loses_what_the_wal_holds(box, writer, tmp_path) -> None:
    """What the online API is for: the database file copied as it is, without its -wal (what a
    plain copy of the file gives), misses the transactions not yet checkpointed into it. (A
    checkpoint can land between reading the count and the copy: three tries.)"""
    found = []
    for attempt in range(3):
        floor = writer()
        raw = tmp_path / f"raw{attempt}.db"
        shutil.copyfile(box.paths.ui_data / "webui.db", raw)
        try:
            held = rows(raw, "SELECT count(*) FROM load")[0][0]
        except sqlite3.DatabaseError:
            held = -1  # not even readable
        found.append((held, floor))
        online = tmp_path / f"online{attempt}.db"
        archive.online_copy(box.paths.ui_data / "webui.db", online)
        assert rows(online, "SELECT count(*) FROM load")[0][0] >= floor
    assert any(held < floor for held, floor in found), f"every raw copy held all rows: {found}"


def _flip(path: Path, at: int) -> Path:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x20
    bad = path.with_name("bad.tar.gz")
    bad.write_bytes(bytes(data))
    return bad


def test_one_changed_byte_anywhere_is_refused_and_nothing_is_kept(box, tmp_path: Path) -> None:
    """Every byte counts, also one whose change still inflates to the same data (deflate has
    such bits: the seal over the file's own bytes sees them)."""
    good = backup.backup(box).path
    size = good.stat().st_size
    places = sorted({*range(0, 64, 3), *range(64, size, max(1, size // 60)), size - 9, size - 1})
    for at in places:
        bad = _flip(good, at)
        with pytest.raises(unpack.Damaged) as caught:
            unpack.unpack(bad, tmp_path / f"out{at}", lambda _: None)
        assert caught.value.exit_code == 2 and caught.value.key == "FILE", at
        assert f"FILE: {bad} is damaged: " in caught.value.message
        assert caught.value.message.endswith("; nothing was changed")


def test_an_archive_that_is_not_sealed_is_refused(box, tmp_path: Path) -> None:
    """Unpacked and packed again by hand (tar and gzip): the members may well be intact, but
    nothing says the file is the one the backup wrote."""
    good = backup.backup(box).path
    plain = tmp_path / "plain.tar.gz"
    plain.write_bytes(gzip.compress(gzip.decompress(good.read_bytes())))
    with pytest.raises(unpack.Damaged) as caught:
        unpack.unpack(plain, tmp_path / "out", lambda _: None)
    assert "its gzip header is not the one a backup writes" in caught.value.message


def _seal(path: Path, tar_bytes: bytes) -> Path:
    """What a forger can do too: the seal is a checksum, not a signature."""
    with path.open("wb") as out:
        writer = sealed.SealedWriter(out, 1)
        writer.write(tar_bytes)
        writer.close()
    return path


def _repack(good: Path, change) -> Path:  # noqa: ANN001
    """The archive with one member's bytes changed and packed again, its gzip CRC and seal
    right: only the manifest's sha256 can tell."""
    out = io.BytesIO()
    with (
        tarfile.open(good) as src,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for entry in src.getmembers():
            data = src.extractfile(entry).read() if entry.isreg() else None
            if data is not None:
                data = change(entry.name, data)
                entry.size = len(data)
            dst.addfile(entry, io.BytesIO(data) if data is not None else None)
    return _seal(good.with_name("tampered.tar.gz"), out.getvalue())


def test_a_changed_file_in_a_whole_gzip_stream_fails_its_sha256(box, tmp_path: Path) -> None:
    good = backup.backup(box).path
    bad = _repack(good, lambda name, data: data.replace(b"hello", b"HELLO"))
    with pytest.raises(unpack.Damaged) as caught:
        unpack.unpack(bad, tmp_path / "out", lambda _: None)
    assert "data/uploads/9201b691_note.txt does not match its entry in the manifest" in str(
        caught.value
    )


def test_a_damaged_database_in_an_archive_fails_integrity_check(box, tmp_path: Path) -> None:
    good = backup.backup(box).path

    def break_db(name: str, data: bytes) -> bytes:
        if name == "data/webui.db":
            data = data[:4096] + b"\xff" * 4096 + data[8192:]  # a page of garbage
        if name == layout.MANIFEST:  # the manifest written to match: only SQLite can tell
            manifest = json.loads(data)
            for f in manifest["files"]:
                if f["path"] == "data/webui.db":
                    f["sha256"] = _sha(break_db("data/webui.db", _member(good, "data/webui.db")))
            data = json.dumps(manifest).encode()
        return data

    bad = _repack(good, break_db)
    with pytest.raises(unpack.Damaged) as caught:
        unpack.unpack(bad, tmp_path / "out", lambda _: None)
    assert "its data/webui.db fails SQLite's integrity_check" in str(caught.value)


def _member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        return tar.extractfile(name).read()


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _hostile(tmp_path: Path, add) -> Path:  # noqa: ANN001
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        head = json.dumps({"format": 1}).encode()
        entry = tarfile.TarInfo(layout.HEADER)
        entry.size = len(head)
        tar.addfile(entry, io.BytesIO(head))
        add(tar)
    return _seal(tmp_path / "hostile.tar.gz", out.getvalue())


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    entry = tarfile.TarInfo(name)
    entry.size = len(data)
    tar.addfile(entry, io.BytesIO(data))


def _link(tar: tarfile.TarFile, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> None:
    entry = tarfile.TarInfo(name)
    entry.type, entry.linkname = kind, target
    tar.addfile(entry)


@pytest.mark.parametrize(
    "add, words",
    [
        pytest.param(
            lambda t: _file(t, "data/../../escaped"), "a name no backup writes", id="dotdot"
        ),
        pytest.param(lambda t: _file(t, "/etc/escaped"), "a name no backup writes", id="absolute"),
        pytest.param(
            lambda t: _file(t, "data/sub/file"), "comes before its folder", id="no-folder"
        ),
        pytest.param(
            lambda t: (_link(t, "data/up", "../.."), None),
            "a link out of the folder",
            id="link-out",
        ),
        pytest.param(
            lambda t: (_link(t, "data/in", "."), _file(t, "data/in/x")),
            "comes before its folder (or lies under a link)",
            id="under-a-link",
        ),
        pytest.param(
            lambda t: _link(t, "data/hard", "/etc/passwd", tarfile.LNKTYPE),
            "of a kind no backup writes",
            id="hardlink",
        ),
        pytest.param(
            lambda t: (_file(t, "data/a"), _file(t, "data/a")), "appears twice", id="twice"
        ),
    ],
)
def test_a_hostile_archive_writes_nothing_outside_and_is_refused(
    tmp_path: Path, add, words
) -> None:
    (tmp_path / "work").mkdir()
    path = _hostile(tmp_path, add)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(unpack.Damaged) as caught:
        unpack.unpack(path, tmp_path / "work" / "into", lambda _: None)
    assert words in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not Path("/etc/escaped").exists()


def test_a_full_disk_fails_clearly_and_leaves_no_partial_archive(write_config, tmp_path, tmpfs):
    small = tmpfs(tmp_path / "small", "256k")
    s = make_settings(write_config, tmp_path, backup={"dir": str(small / "backups")})
    lay_out_ui_data(s.paths.ui_data).close()
    (s.paths.ui_data / "uploads" / "big.bin").write_bytes(os.urandom(600_000))  # incompressible
    (small / "backups").mkdir(mode=0o700)
    old = small / "backups" / "open-webui-20260101T000000Z.tar.gz"
    old.write_bytes(b"an earlier backup")
    with pytest.raises(AgentError) as caught:
        backup.backup(s)
    assert caught.value.exit_code == 1
    assert f"the backup did not fit in {small / 'backups'}: no space left on the device" in (
        caught.value.message
    )
    assert "no archive was written, the earlier backups are kept" in caught.value.message
    assert "set backup.dir (BACKUP_DIR) to a folder on a larger disk" in caught.value.fix
    assert sorted(p.name for p in (small / "backups").iterdir()) == [old.name]  # no partial
    failed = store.read_record(s.paths.state)["failed"]
    assert "no space left on the device" in failed["error"]
    notice = (tmp_path / "motd.d" / store.NOTICE).read_text()
    assert "LAST BACKUP FAILED at " in notice and "no space left" in notice


def test_the_newest_backup_keep_are_kept(write_config, tmp_path: Path) -> None:
    s = make_settings(write_config, tmp_path, backup={"keep": 2})
    lay_out_ui_data(s.paths.ui_data).close()
    made = [backup.backup(s).path for _ in range(3)]
    assert len(set(made)) == 3  # the same second: a serial keeps them apart
    assert store.archives(s.backup_dir) == made[:0:-1]  # newest first, the oldest gone
    assert backup.backup(s).removed == (made[1],)


def test_a_killed_backup_leaves_what_the_next_one_sweeps(box) -> None:
    folder = box.backup_dir
    folder.mkdir(parents=True, mode=0o700)
    (folder / ".open-webui-abc.tar.gz.partial").write_bytes(b"half")
    (folder / ".open-webui-xyz.partial").mkdir()
    result = backup.backup(box)
    assert sorted(p.name for p in folder.iterdir()) == [result.path.name]


def test_a_second_backup_while_one_runs_is_refused_naming_it(box) -> None:
    with store.exclusive(box.paths.state, "backup"), pytest.raises(backup.BackupRunning) as caught:
        backup.backup(box)
    assert "a backup or restore is already running: backup (pid " in caught.value.message
    assert caught.value.exit_code == 1
    assert "failed" not in store.read_record(box.paths.state)  # no failure is recorded


def test_secrets_go_in_only_when_asked(box) -> None:
    box.paths.secrets.mkdir(mode=0o700)
    (box.paths.secrets / "api_key").write_text("sk-very-secret-key-1234")
    plain = backup.backup(box)
    asked = backup.backup(box, with_secrets=True)
    with tarfile.open(plain.path) as tar:
        assert not any(n.startswith("secrets/") for n in tar.getnames())
    assert _member(asked.path, "secrets/api_key") == b"sk-very-secret-key-1234"
    assert stat.S_IMODE(asked.path.stat().st_mode) == 0o600
    assert json.loads(_member(asked.path, layout.MANIFEST))["with_secrets"] is True
    assert asked.with_secrets and not plain.with_secrets


@pytest.mark.parametrize(
    "output, words",
    [
        pytest.param("{tmp}", "is a folder", id="a-folder"),
        pytest.param("{tmp}/nowhere/b.tar.gz", "is not an existing folder", id="no-folder"),
        pytest.param("{data}/b.tar.gz", "is inside the data folder", id="inside-the-data"),
    ],
)
def test_a_bad_output_is_refused_naming_it(box, tmp_path: Path, output: str, words: str) -> None:
    given = Path(output.format(tmp=tmp_path, data=box.paths.ui_data))
    with pytest.raises(BadInput) as caught:
        backup.backup(box, output=given)
    assert caught.value.key == "--output" and words in caught.value.message
    assert not box.backup_dir.exists()


def test_output_writes_there_and_leaves_backup_dir_alone(box, tmp_path: Path) -> None:
    result = backup.backup(box, output=tmp_path / "mine.tar.gz")
    assert result.path == tmp_path / "mine.tar.gz" and result.path.is_file()
    assert store.archives(box.backup_dir) == []


def test_a_damaged_database_in_the_data_folder_is_not_backed_up(box) -> None:
    chroma = box.paths.ui_data / "vector_db" / "chroma.sqlite3"
    data = bytearray(chroma.read_bytes())
    data[100:4096] = b"\x13" * (4096 - 100)  # the schema page overwritten
    chroma.write_bytes(bytes(data))
    with pytest.raises(archive.SourceDamaged) as caught:
        backup.backup(box)
    assert "vector_db/chroma.sqlite3 in the data folder is damaged" in caught.value.message
    assert store.archives(box.backup_dir) == []


def test_nothing_to_back_up_says_so(write_config, tmp_path: Path) -> None:
    s = make_settings(write_config, tmp_path)
    with pytest.raises(AgentError) as caught:
        backup.backup(s)
    assert f"there is nothing to back up: {s.paths.ui_data} (paths.ui_data) is not a folder" in (
        caught.value.message
    )


def test_a_backup_leaves_the_data_folder_as_it_was(write_config, tmp_path: Path) -> None:
    """No byte changed and no file added: a read-only connection to a WAL database would
    leave a -wal and -shm behind, a checkpoint would rewrite it."""
    s = make_settings(write_config, tmp_path)
    lay_out_ui_data(s.paths.ui_data).close()  # closed: no -wal, no -shm
    before = tree(s.paths.ui_data)
    backup.backup(s)
    assert tree(s.paths.ui_data) == before


def test_a_large_folder_says_how_far_it_got(box) -> None:
    (box.paths.ui_data / "uploads" / "big.bin").write_bytes(os.urandom(5_000_000))
    ticks = iter(range(0, 10_000, 3))  # every read a little later than the last line
    said: list[str] = []
    backup.backup(box, progress=said.append, clock=lambda: float(next(ticks)))
    shares = [line for line in said if line.startswith("  ") and "% (" in line]
    assert len(shares) > 3, said
    assert shares[-1].startswith("  100% (") and shares[-1].endswith(" of 5.1 MB)"), shares[-1]
    assert said[:2] == [
        "snapshot of webui.db (SQLite's online backup, the UI keeps running)",
        "snapshot of vector_db/chroma.sqlite3 (SQLite's online backup, the UI keeps running)",
    ]
