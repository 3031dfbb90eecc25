"""A wheelhouse of the agent's dependencies (from PyPI with `pip wheel`, cached by the hash
of the dependency list) plus a wheel of this checkout: what `pip install --no-index
--find-links DIR sandbox-agent` needs inside a box that has no index of its own."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]
CACHE = Path("/var/tmp/sandbox-test-wheelhouse")


def dependencies() -> list[str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(data["project"]["dependencies"])


def wheelhouse(target: Path) -> Path:
    """`target` filled with the dependency wheels (cached) and a fresh wheel of the checkout."""
    deps = dependencies()
    digest = hashlib.sha256("\n".join(sorted(deps)).encode()).hexdigest()[:16]
    cached = CACHE / digest
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cached / ".complete").exists():
            cached.mkdir(exist_ok=True)
            subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                 "-w", str(cached), *deps],
                check=True,
            )  # fmt: skip
            (cached / ".complete").touch()
    target.mkdir(parents=True, exist_ok=True)
    for wheel in cached.glob("*.whl"):
        shutil.copy2(wheel, target / wheel.name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(target), str(REPO)],
        check=True, cwd=target,
    )  # fmt: skip
    return target
