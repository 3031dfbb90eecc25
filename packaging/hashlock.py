"""A release's requirements.txt: every runtime dependency pinned, each with the sha256 of every
wheel a box may install, and the StackScript stamped with the agent wheel's and that file's.

The targets are the interpreters and machines the StackScript deploys on: CPython 3.10 to 3.13
(Ubuntu 22.04 has 3.10, Debian 12 3.11, Ubuntu 24.04 3.12) on manylinux x86_64 and aarch64. A
wheel counts when one of its tags is one that a target's pip accepts, and every such wheel of
the pinned version is hashed, so whichever of them the box's pip prefers is allowed and nothing
else is. What each target needs is walked from the agent wheel's metadata through the
dependencies' wheels with the markers evaluated for that target (tomli and exceptiongroup only
on 3.10); a dependency needed on some targets only carries a marker saying where.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.parser import HeaderParser
from functools import cached_property
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

PYTHONS = ("3.10", "3.11", "3.12", "3.13")
MACHINES = ("x86_64", "aarch64")
# glibc of the supported OSes: Ubuntu 22.04 2.35, Debian 12 2.36, Ubuntu 24.04 2.39. pip on a
# box prefers the newest manylinux wheel its glibc allows, so each is downloaded for.
GLIBCS = (35, 36, 39)
# What build.py stamps into stackscript.sh: a line `NAME=''` each, in the template.
STAMPS = ("RELEASE_URL", "AGENT_WHEEL", "AGENT_SHA256", "REQUIREMENTS_SHA256")
PIP_DOWNLOAD = (
    *(sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check"),
    *("--no-deps", "--only-binary=:all:"),
)
URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%+=,@-]+)*")


class LockError(Exception):
    """The release cannot be locked; the message says what to change."""


@dataclass(frozen=True, order=True)
class Target:
    python: str  # "3.11"
    machine: str  # "x86_64"

    def __str__(self) -> str:
        return f"cp{self.python.replace('.', '')}-manylinux-{self.machine}"

    def platforms(self, glibc: int = max(GLIBCS)) -> list[str]:
        """manylinux platform tags, best first, as pip orders them on a box with that glibc."""
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        found = []
        for minor in range(glibc, 4, -1):
            found.append(f"manylinux_2_{minor}_{self.machine}")
            if minor in legacy:
                found.append(f"{legacy[minor]}_{self.machine}")
        return found

    @cached_property
    def tags(self) -> frozenset[Tag]:
        version = tuple(int(part) for part in self.python.split("."))
        interpreter = f"cp{self.python.replace('.', '')}"
        platforms = self.platforms()
        return frozenset(
            [
                *cpython_tags(version, [interpreter], platforms),
                *compatible_tags(version, interpreter, platforms),
            ]
        )

    def environment(self) -> dict[str, str]:
        """The marker environment of this target's pip (PEP 508)."""
        full = f"{self.python}.0"
        return {
            "implementation_name": "cpython",
            "implementation_version": full,
            "os_name": "posix",
            "platform_machine": self.machine,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": full,
            "python_version": self.python,
            "sys_platform": "linux",
            "extra": "",
        }


TARGETS = tuple(Target(python, machine) for python in PYTHONS for machine in MACHINES)


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str  # canonical
    version: Version
    tags: frozenset[Tag]

    def fits(self, targets: Iterable[Target]) -> bool:
        return any(self.tags & target.tags for target in targets)

    def requires(self) -> list[Requirement]:
        with zipfile.ZipFile(self.path) as archive:
            names = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            if len(names) != 1:
                raise LockError(f"{self.path.name}: not a wheel (no single .dist-info/METADATA)")
            headers = HeaderParser().parsestr(archive.read(names[0]).decode())
        return [Requirement(text) for text in headers.get_all("Requires-Dist") or []]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel(path: Path) -> Wheel:
    name, version, _, tags = parse_wheel_filename(path.name)
    return Wheel(path, name, version, tags)


def wheels_in(folder: Path) -> list[Wheel]:
    found = []
    for path in sorted(folder.glob("*.whl")):
        try:
            found.append(wheel(path))
        except InvalidWheelFilename:
            continue
    return found


@dataclass
class Lock:
    agent: Wheel
    agent_sha256: str
    pins: dict[str, str]
    targets: tuple[Target, ...]
    needed: dict[str, set[Target]] = field(default_factory=dict)  # name -> where
    hashes: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> file -> sha256
    gaps: dict[Target, list[str]] = field(default_factory=dict)  # pins without a wheel there

    def complete(self) -> list[Target]:
        return [t for t in self.targets if not self.gaps.get(t)]


def lock(
    agent_wheel: Path, folder: Path, pins: dict[str, str], targets: tuple[Target, ...] = TARGETS
) -> Lock:
    """What each target needs, from the wheels in `folder` (the agent's own left out)."""
    agent = wheel(agent_wheel)
    if not agent.fits(targets):
        raise LockError(f"{agent_wheel.name} installs on none of the targets")
    found = [w for w in wheels_in(folder) if w.name != agent.name]
    result = Lock(agent, sha256(agent_wheel), pins, targets)
    for target in targets:
        _walk(result, target, found)
    for name, where in result.needed.items():
        version = Version(pins[name])
        files = [w for w in found if w.name == name and w.version == version and w.fits(where)]
        if files:
            result.hashes[name] = {w.path.name: sha256(w.path) for w in files}
    return result


def _walk(result: Lock, target: Target, found: list[Wheel]) -> None:
    env = target.environment()
    todo: list[tuple[Requirement, str, tuple[str, ...]]] = []
    seen: set[tuple[str, str]] = set()

    def expand(requires: list[Requirement], by: str, extras: tuple[str, ...]) -> None:
        for req in requires:
            if req.marker is None or any(
                req.marker.evaluate({**env, "extra": extra}) for extra in ("", *extras)
            ):
                todo.append((req, by, extras))

    expand(result.agent.requires(), result.agent.name, ())
    while todo:
        req, by, _ = todo.pop()
        name = canonicalize_name(req.name)
        version = result.pins.get(name)
        if version is None:
            raise LockError(
                f"{name} (required by {by} on {target}) has no pin in packaging/constraints.txt: "
                "run `python packaging/build.py constraints`, or pin it there by hand when it is "
                "not installed here"
            )
        if not req.specifier.contains(version, prereleases=True):
            raise LockError(f"{name}=={version} does not satisfy {by}'s requirement `{req}`")
        result.needed.setdefault(name, set()).add(target)
        extras = tuple(sorted(e for e in ("", *req.extras) if (name, e) not in seen))
        if not extras:
            continue
        seen.update((name, e) for e in extras)
        pinned = Version(version)
        fits = [w for w in found if w.name == name and w.version == pinned and w.fits([target])]
        if not fits:
            result.gaps.setdefault(target, []).append(f"{name}=={version}")
            continue
        expand(fits[0].requires(), name, tuple(e for e in extras if e))


def marker(where: set[Target], targets: tuple[Target, ...]) -> str:
    """The PEP 508 marker true on exactly the targets in `where` ("" when it is all of them)."""
    if where >= set(targets):
        return ""
    parts = []
    for python in sorted({t.python for t in targets}, key=Version):
        here = {t for t in targets if t.python == python}
        if here <= where:
            parts.append(f'python_version == "{python}"')
        else:
            parts += [
                f'(python_version == "{python}" and platform_machine == "{t.machine}")'
                for t in sorted(here & where)
            ]
    return " or ".join(parts)


def requirements_txt(result: Lock, header: str) -> str:
    """The agent's wheel (relative to the file's folder) and every pin, each with its hashes."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines.append(f"./{result.agent.path.name} --hash=sha256:{result.agent_sha256}")
    for name in sorted(result.hashes):
        where = marker(result.needed[name], result.targets)
        first = f"{name}=={result.pins[name]}" + (f" ; {where}" if where else "")
        hashes = sorted(set(result.hashes[name].values()))
        lines.append(" \\\n    ".join([first, *(f"--hash=sha256:{h}" for h in hashes)]))
    return "\n".join(lines) + "\n"


def download(
    pins: dict[str, str],
    folder: Path,
    targets: tuple[Target, ...] = TARGETS,
    glibcs: tuple[int, ...] = GLIBCS,
    pip_args: tuple[str, ...] = (),
) -> None:
    """Every pin's wheel for each target and glibc into `folder`, from the index pip is
    configured with (PIP_INDEX_URL, pip.conf) or `pip_args` (e.g. --no-index --find-links)."""
    requirements = [f"{name}=={version}" for name, version in pins.items()]
    for target in targets:
        for glibc in glibcs:
            base = [
                *PIP_DOWNLOAD,
                *("--implementation", "cp", "--python-version", target.python),
                *(f"--platform={p}" for p in target.platforms(glibc)),
                *("-d", str(folder), *pip_args),
            ]
            if subprocess.run([*base, *requirements], capture_output=True).returncode != 0:
                # one of them has no wheel there (a gap lock() reports); the others still come
                for requirement in requirements:
                    subprocess.run([*base, requirement], capture_output=True)


def base_url(text: str) -> str:
    url = text.rstrip("/")
    if not URL.fullmatch(url):
        raise ValueError(
            f"--base-url {text!r} is not an http(s) URL of plain characters "
            "(letters, digits and ._~%+=,@- in its path; no query, no quotes)"
        )
    return url


def stamp(template: str, values: dict[str, str]) -> str:
    """stackscript.sh with each `NAME=''` line of STAMPS set to its value, single-quoted."""
    for name in STAMPS:
        value = values[name]
        if not re.fullmatch(r"[A-Za-z0-9._~:/%+=,@-]+", value):
            raise ValueError(f"{name}: {value!r} cannot be stamped (plain characters only)")
        line = f"\n{name}=''\n"
        if template.count(line) != 1:
            raise LockError(f"the template has no single `{name}=''` line to stamp")
        template = template.replace(line, f"\n{name}='{value}'\n")
    return template
