"""A wheelhouse of the agent as the release builds it (packaging/build.py: the agent's wheel,
every dependency's wheel under the pinned constraints, constraints.txt): what
`pip install --no-index --find-links DIR sandbox-agent` needs inside a box that has no index of
its own. The dependencies' wheels are cached by the hash of the constraints, the project's
requirements and the Python version, so only the agent's own wheel is built again."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from tests.fakes.images import file_lock

REPO = Path(__file__).resolve().parents[2]
CACHE = Path("/var/tmp/sandbox-test-wheelhouse")


def build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("packaging_build", REPO / "packaging/build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wheelhouse(target: Path) -> Path:
    """`target` filled with the dependency wheels (cached) and a fresh wheel of the checkout."""
    build = build_module()
    key = hashlib.sha256(
        build.CONSTRAINTS.read_bytes()
        + (REPO / "pyproject.toml").read_bytes()
        + sys.version.split()[0].encode()
    ).hexdigest()[:16]
    deps = CACHE / key
    with file_lock(CACHE / ".lock", lambda _: None):
        if not (deps / ".complete").exists():
            with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
                build.build_wheelhouse(Path(tmp))
                deps.mkdir(parents=True, exist_ok=True)
                for wheel in Path(tmp).glob("*.whl"):
                    if not wheel.name.startswith("sandbox_agent-"):
                        shutil.copy2(wheel, deps / wheel.name)
            (deps / ".complete").touch()
    return build.build_wheelhouse(target, deps_cache=deps)
