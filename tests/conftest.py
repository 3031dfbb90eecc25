"""Fixtures every tier shares.

Unit tests fail loudly on any real command they did not ask for (STYLE.md: an autouse guard
on the one command runner); a test opts in with the `real_commands` fixture, or serves a table
of canned answers with `fake_commands`.
"""

from __future__ import annotations

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
# module-scoped stacks are built once); every test that uses the ACME CA (fixed ports) goes to
# slice 1, which holds the one pebble.


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slice",
        default=None,
        help="K/N: run only the K-th of N disjoint slices of the collected tests (1-based)",
    )


def _slice_of(item: pytest.Item, count: int, modules: list[str]) -> int:
    if "pebble" in getattr(item, "fixturenames", ()):
        return 1
    return modules.index(item.nodeid.split("::", 1)[0]) % count + 1


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
    modules = sorted({item.nodeid.split("::", 1)[0] for item in items})
    keep = [item for item in items if _slice_of(item, count, modules) == index]
    dropped = [item for item in items if item not in keep]
    config.hook.pytest_deselected(items=dropped)
    items[:] = keep
