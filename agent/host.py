"""The host's own facts, read under a root: OS release, free disk, memory.

`root` is `/` on a box; tests point it at a folder laid out like one (etc/os-release,
proc/meminfo, a small filesystem mounted where the models go), so the real code reads a real
file tree. doctor's host checks and the bootstrap's preflight read the same facts.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

GIB = 1024**3
SUPPORTED = {("ubuntu", "22.04"), ("ubuntu", "24.04"), ("debian", "12")}


@dataclass(frozen=True)
class OsRelease:
    id: str
    version_id: str
    pretty_name: str | None

    @property
    def supported(self) -> bool:
        return (self.id, self.version_id) in SUPPORTED


def os_release(root: Path = Path("/")) -> OsRelease:
    """/etc/os-release (or /usr/lib/os-release); empty fields when neither exists."""
    fields: dict[str, str] = {}
    for name in ("etc/os-release", "usr/lib/os-release"):
        path = root / name
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    fields[key.strip()] = value.strip().strip('"').strip("'")
            break
    return OsRelease(fields.get("ID", ""), fields.get("VERSION_ID", ""), fields.get("PRETTY_NAME"))


def under(root: Path, path: Path) -> Path:
    """An absolute path of the box, as found under `root`."""
    return root / Path(path).relative_to("/") if Path(path).is_absolute() else root / path


@dataclass(frozen=True)
class DiskSpace:
    path: Path  # the folder measured, as the box names it (the nearest that exists)
    free: int
    total: int

    @property
    def free_gib(self) -> float:
        return self.free / GIB

    @property
    def total_gib(self) -> float:
        return self.total / GIB


def disk_space(path: Path, root: Path = Path("/")) -> DiskSpace:
    """Free and total bytes of the filesystem that holds (or will hold) `path`."""
    place = Path(path)
    while not under(root, place).exists() and place != place.parent:
        place = place.parent
    usage = shutil.disk_usage(under(root, place))
    return DiskSpace(place, usage.free, usage.total)


@dataclass(frozen=True)
class Memory:
    total: int
    available: int

    @property
    def total_gib(self) -> float:
        return self.total / GIB

    @property
    def available_gib(self) -> float:
        return self.available / GIB


def memory(root: Path = Path("/")) -> Memory | None:
    """MemTotal and MemAvailable from proc/meminfo (kB there); None when it cannot be read."""
    found: dict[str, int] = {}
    try:
        text = (root / "proc/meminfo").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isascii() and words[0].isdigit():
            found[key.strip()] = int(words[0]) * 1024
    if "MemTotal" not in found:
        return None
    return Memory(found["MemTotal"], found.get("MemAvailable", found.get("MemFree", 0)))
