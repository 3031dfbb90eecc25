"""Fixtures every tier shares.

Unit tests fail loudly on any real command they did not ask for (STYLE.md: an autouse guard
on the one command runner); a test opts in with the `real_commands` fixture, or serves a table
of canned answers with `fake_commands`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent import proc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # so tests can import tests.fakes.*


class UnexpectedCommand(BaseException):
    """A BaseException, as cloud-init's guard is: no `except Exception` in the agent (doctor's
    runner, the CLI's last line of defence, a step runner, the watch loop) can swallow it."""


def _refuse(argv: Any, **_: Any) -> proc.Completed:
    raise UnexpectedCommand(
        f"test ran a real command {list(argv)!r}: use the `fake_commands` table or `real_commands`"
    )


@pytest.fixture(autouse=True)
def command_guard() -> Iterator[None]:
    previous = proc.set_runner(_refuse)
    yield
    proc.set_runner(previous if previous is not _refuse else None)


@pytest.fixture
def real_commands() -> Iterator[None]:
    previous = proc.set_runner(None)
    yield
    proc.set_runner(previous)


@dataclass
class CommandTable:
    """Patterns (a regex on the joined argv) -> canned (rc, stdout, stderr), in order."""

    rules: list[tuple[re.Pattern[str], int, str, str]] = field(default_factory=list)
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def on(self, pattern: str, *, rc: int = 0, stdout: str = "", stderr: str = "") -> CommandTable:
        self.rules.append((re.compile(pattern), rc, stdout, stderr))
        return self

    def __call__(self, argv: Any, **_: Any) -> proc.Completed:
        line = " ".join(argv)
        self.calls.append(tuple(argv))
        for rx, rc, out, err in self.rules:
            if rx.search(line):
                return proc.Completed(tuple(argv), rc, out, err)
        raise UnexpectedCommand(f"no canned answer for {line!r}")


@pytest.fixture
def fake_commands() -> Iterator[CommandTable]:
    table = CommandTable()
    previous = proc.set_runner(table)
    yield table
    proc.set_runner(previous)


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config.yaml whose paths all live under tmp_path; returns its path."""

    def write(data: dict[str, Any] | None = None, name: str = "config.yaml") -> Path:
        base = {
            "paths": {
                "models": str(tmp_path / "models"),
                "ui_data": str(tmp_path / "open-webui"),
                "stack": str(tmp_path / "stack"),
                "state": str(tmp_path / "state"),
                "secrets": str(tmp_path / "secrets"),
            }
        }
        for key, value in (data or {}).items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(base))
        return path

    return write


def agent_env(**extra: str) -> dict[str, str]:
    """The environment a test hands to a `sandbox-agent` subprocess: no stray settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_AGENT_", "FAKE_NVML"))}
    env.pop("HF_TOKEN", None)
    # No test asks the real Linode metadata service (a link-local address): a closed port.
    env["SANDBOX_AGENT_METADATA_URL"] = "http://127.0.0.1:9/v1"
    env.update(extra)
    return env


@pytest.fixture
def tmpfs() -> Iterator[Any]:
    """`tmpfs(path, "40g")` mounts a real filesystem of that size at `path` (tmpfs takes no
    memory for its size, only for what is written; we are root here and in CI)."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            # 0755 as a data volume is mounted (a tmpfs is 1777 by default: open to all, which
            # a data folder may not be)
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
            check=True,
        )
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def small_fs(tmp_path: Path, tmpfs: Any) -> Path:
    """A real 20 MiB filesystem."""
    return tmpfs(tmp_path / "small-fs", "20m")


@pytest.fixture(scope="session")
def fake_nvml_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the fake libnvidia-ml.so.1 (compiled once per content hash)."""
    from tests.fakes import nvml

    return nvml.build_fake_nvml(tmp_path_factory.mktemp("fake-nvml"))


AGENT = str(Path(sys.executable).with_name("sandbox-agent"))


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real ACME CA (pebble) and its mock DNS on 127.0.0.1, for the whole session (every
    tier: the proxy's integration tests, the browser over https, the systemd box).

    Issuances are counted from pebble's start: take ``pebble.issued()`` before an action and
    compare after. A test that points a name elsewhere (``pebble.answer``) puts it back
    (``pebble.forget``)."""
    import contextlib

    from tests.fakes import acme

    with contextlib.ExitStack() as stack:
        try:
            ca = stack.enter_context(acme.running_pebble(tmp_path_factory.mktemp("pebble")))
        except acme.AcmeFixtureError as exc:
            pytest.fail(f"the ACME fixture did not start: {exc}")
        yield ca


# --- slices: tests/run.sh runs the suite as several pytest processes at once ---------------
# Most of the suite waits on containers and services, not on the CPU, so a few processes over
# disjoint slices of it finish sooner on 2 cores. A module stays whole in one slice (its
# module-scoped stacks are built once); a module with a test that uses the ACME CA (fixed
# ports) goes to slice 1, which holds the one pebble. (tests/run.sh runs the browser tier
# after the slices, alone.) Modules go longest first to the slice
# with the least time, by the seconds each took at the last run (kept beside the test images'
# cache); a module never timed counts as DEFAULT_SECONDS.

DURATIONS = Path(os.environ.get("SANDBOX_TEST_CACHE", "/var/cache/sandbox-agent-test"))
DURATIONS = DURATIONS / "durations.json"
DEFAULT_SECONDS = 5.0
_spent: dict[str, float] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slice",
        default=None,
        help="K/N: run only the K-th of N disjoint slices of the collected tests (1-based)",
    )


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


# Seconds per module from a full run, kept in the tree: a fresh machine (no cache yet) slices
# by these, not by DEFAULT_SECONDS for all (`python tests/conftest.py` copies the cache here).
SEED = Path(__file__).resolve().parent / "durations.json"


def _read_durations(path: Path = DURATIONS) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def assign_slices(
    modules: list[str], pinned: set[str], count: int, seconds: dict[str, float]
) -> dict[str, int]:
    """module -> slice (1-based): the pinned ones to slice 1, then longest first to the slice
    with the least time so far."""
    load = [0.0] * count
    slices: dict[str, int] = {}
    for module in sorted(pinned):
        slices[module] = 1
        load[0] += seconds.get(module, DEFAULT_SECONDS)
    rest = sorted(set(modules) - pinned, key=lambda m: (-seconds.get(m, DEFAULT_SECONDS), m))
    for module in rest:
        least = min(range(count), key=lambda i: (load[i], i))
        slices[module] = least + 1
        load[least] += seconds.get(module, DEFAULT_SECONDS)
    return slices


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = config.getoption("--slice")
    if not wanted:
        return
    try:
        index, count = (int(part) for part in str(wanted).split("/"))
        if not 1 <= index <= count:
            raise ValueError
    except ValueError:
        raise pytest.UsageError(f"--slice {wanted}: use K/N with 1 <= K <= N") from None
    modules = sorted({_module(item.nodeid) for item in items})
    pinned = {_module(i.nodeid) for i in items if "pebble" in getattr(i, "fixturenames", ())}
    slices = assign_slices(modules, pinned, count, {**_read_durations(SEED), **_read_durations()})
    keep = [item for item in items if slices[_module(item.nodeid)] == index]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _spent[_module(report.nodeid)] = _spent.get(_module(report.nodeid), 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """This run's seconds per module merged into the durations file (the slices write at
    once: under a lock, read, update, write a temp file and rename)."""
    # only a full run's slices: a run of a few tests would make a long module look short
    if not _spent or not session.config.getoption("--slice"):
        return
    if session.config.getoption("collectonly"):
        return
    import fcntl

    try:
        DURATIONS.parent.mkdir(parents=True, exist_ok=True)
        with open(DURATIONS.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            merged = {**_read_durations(), **{k: round(v, 2) for k, v in _spent.items()}}
            tmp = DURATIONS.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, DURATIONS)
    except OSError:
        pass  # a read-only cache: the next run slices by the defaults


if __name__ == "__main__":  # the seed from this machine's last full run, for the tree
    seconds = {k: v for k, v in _read_durations().items() if Path(k).exists()}
    SEED.write_text(json.dumps(seconds, indent=1, sort_keys=True) + "\n")
    print(f"{SEED}: {len(seconds)} modules")
