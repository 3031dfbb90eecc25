"""A wheelhouse of the agent as the release builds it (packaging/build.py: the agent's wheel,
every pinned dependency's wheel for this interpreter, requirements.txt with their sha256): what
the StackScript installs with `--no-index --require-hashes` from an offline bundle, and the
folder a box's pip takes a release's dependencies from (PIP_FIND_LINKS) in the tests. The
dependencies' wheels are downloaded once into a cache keyed by the hash of the constraints, the
project's requirements and the Python version, so only the agent's own wheel is built again."""

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
RECIPE = b"2"  # bump when how the dependencies are fetched changes


def build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("packaging_build", REPO / "packaging/build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dependency_wheels() -> Path:
    """The cached folder of every pinned dependency's wheel (no agent wheel in it)."""
    build = build_module()
    key = hashlib.sha256(
        RECIPE
        + build.CONSTRAINTS.read_bytes()
        + (REPO / "pyproject.toml").read_bytes()
        + sys.version.split()[0].encode()
    ).hexdigest()[:16]
    deps = CACHE / key
    with file_lock(CACHE / ".lock", lambda _: None):
        if not (deps / ".complete").exists():
            shutil.rmtree(deps, ignore_errors=True)
            with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
                build.download_deps(Path(tmp))
                (Path(tmp) / ".complete").touch()
                Path(tmp).rename(deps)
                Path(tmp).mkdir()  # for TemporaryDirectory's clean-up
    return deps


def wheelhouse(target: Path) -> Path:
    """`target` filled with the dependency wheels (cached), a fresh wheel of the checkout and
    requirements.txt locking them."""
    return build_module().build_wheelhouse(target, deps_cache=dependency_wheels())
