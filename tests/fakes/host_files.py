"""Files a stand-in image takes from the host, listed in its folder's HOST_FILES.

Some stand-ins need a binary that only a Debian package on the host carries here (no registry,
no Go toolchain): the Caddy stand-in takes Debian's /usr/bin/caddy and busybox's static binary.
HOST_FILES names them, one ``PATH PACKAGE`` a line (``#`` starts a comment). images.py stages
each under ``host/<PATH>`` in a copy of the folder before ``docker build`` (the Dockerfile
COPYs them from there) and hashes their content into the image's tag, so an upgraded package
gives a new image.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MANIFEST = "HOST_FILES"


class HostFileMissing(RuntimeError):
    """A file HOST_FILES lists is not on this machine; the message names its package."""


def listed(folder: Path) -> list[tuple[Path, str]]:
    """(host path, Debian package) for each line of the folder's HOST_FILES; [] without one."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return []
    entries = []
    for number, raw in enumerate(manifest.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[0].startswith("/"):
            raise HostFileMissing(
                f"{manifest}:{number}: expected `ABSOLUTE_PATH DEBIAN_PACKAGE`, got {raw!r}"
            )
        entries.append((Path(fields[0]), fields[1]))
    return entries


def _checked(path: Path, package: str) -> Path:
    if not path.is_file():
        raise HostFileMissing(
            f"{path} is not on this machine; the stand-in image copies it from the host: "
            f"run `apt-get install -y {package}` (tests/run.sh does) and try again"
        )
    return path


def digest_into(folder: Path, digest: Any) -> None:
    """Feed each listed file's path and content into ``digest`` (a hashlib object)."""
    for path, package in listed(folder):
        content = hashlib.sha256(_checked(path, package).read_bytes()).digest()
        digest.update(b"host:" + str(path).encode() + b"\0" + content)


def stage(folder: Path, context: Path) -> None:
    """Copy the image folder to ``context`` (which must not exist) with the host files under
    ``context/host/``."""
    shutil.copytree(folder, context, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path, package in listed(folder):
        target = context / "host" / path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(_checked(path, package), target)


@contextlib.contextmanager
def build_context(folder: Path, work_root: Path) -> Iterator[Path]:
    """The folder to hand ``docker build``: the image folder itself without HOST_FILES, else a
    staged copy under ``work_root``, removed afterwards."""
    if not listed(folder):
        yield folder
        return
    work_root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"sandbox-test-{folder.name}-", dir=work_root))
    try:
        context = workdir / "context"
        stage(folder, context)
        yield context
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
