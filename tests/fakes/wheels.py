"""Small real wheels (zip files with METADATA, WHEEL and RECORD, as pip reads them) for the
tests of the release's lock and of pip's hash checking: a name, a version, tags in the file
name, Requires-Dist lines and one module whose text a test may change by one byte."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def make_wheel(
    folder: Path,
    name: str,
    version: str,
    tag: str = "py3-none-any",
    requires: tuple[str, ...] = (),
    module: str = "VALUE = 1\n",
) -> Path:
    """folder/<name>-<version>-<tag>.whl, installable by pip (pure: its module goes to purelib)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = name.replace("-", "_")
    info = f"{stem}-{version}.dist-info"
    files = {
        f"{stem}_pkg.py": module.encode(),
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {r}\n" for r in requires)
        ).encode(),
        f"{info}/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
        ).encode(),
    }
    record = (
        "".join(f"{path},sha256={_digest(data)},{len(data)}\n" for path, data in files.items())
        + f"{info}/RECORD,,\n"
    )
    path = folder / f"{stem}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
        archive.writestr(f"{info}/RECORD", record)
    return path


def rebuilt(path: Path, change: bytes = b"# another build\n") -> Path:
    """The wheel at `path` built again with the same name and version and one file changed:
    what a swapped release looks like. Returns `path`, rewritten in place."""
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    target = next(i for i, (info, _) in enumerate(members) if info.filename.endswith(".py"))
    info, data = members[target]
    members[target] = (info, data + change)
    path.unlink()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            archive.writestr(info, data)
    return path


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
