"""A stand-in's HOST_FILES: what images.py copies from the host into an image's build, and
how their content reaches the image's tag (no Docker needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.fakes import host_files, images


def _folder(tmp_path: Path, manifest: str) -> Path:
    folder = tmp_path / "image"
    folder.mkdir()
    (folder / "Dockerfile").write_text("FROM scratch\n")
    (folder / host_files.MANIFEST).write_text(manifest)
    return folder


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    host_files.digest_into(folder, digest)
    return digest.hexdigest()


def test_a_changed_host_file_changes_the_digest(tmp_path: Path) -> None:
    binary = tmp_path / "usr" / "bin" / "tool"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"version 1")
    folder = _folder(tmp_path, f"# comment\n{binary} some-package  # why\n")
    first = _digest(folder)
    assert _digest(folder) == first
    binary.write_bytes(b"version 2")
    assert _digest(folder) != first


def test_stage_copies_host_files_under_host(tmp_path: Path) -> None:
    binary = tmp_path / "opt" / "tool"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"\x7fELF")
    binary.chmod(0o755)
    folder = _folder(tmp_path, f"{binary} pkg\n")
    with host_files.build_context(folder, tmp_path / "work") as context:
        staged = context / "host" / binary.relative_to("/")
        assert staged.read_bytes() == b"\x7fELF"
        assert staged.stat().st_mode & 0o777 == 0o755
        assert (context / "Dockerfile").is_file()
    assert not context.exists()


def test_a_folder_without_host_files_is_built_as_it_is(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    with host_files.build_context(folder, tmp_path / "work") as context:
        assert context == folder


def test_a_missing_host_file_names_its_package(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "/nonexistent/bin/caddy caddy\n")
    with pytest.raises(host_files.HostFileMissing) as missing:
        _digest(folder)
    assert str(missing.value) == (
        "/nonexistent/bin/caddy is not on this machine; the stand-in image copies it from the "
        "host: run `apt-get install -y caddy` (tests/run.sh does) and try again"
    )


@pytest.mark.parametrize("line", ["relative/path pkg", "/usr/bin/caddy", "/a b c"])
def test_a_malformed_line_is_named(tmp_path: Path, line: str) -> None:
    folder = _folder(tmp_path, f"# first\n{line}\n")
    with pytest.raises(host_files.HostFileMissing, match=r"HOST_FILES:2: expected"):
        host_files.listed(folder)


def test_the_caddy_standin_lists_caddy_and_busybox() -> None:
    listed = dict(host_files.listed(images.IMAGES_DIR / "caddy-standin"))
    assert listed[Path("/usr/bin/caddy")] == "caddy"
    assert listed[Path("/bin/busybox")] == "busybox-static"
