"""host.* checks against a laid-out host tree: os-release, proc/meminfo, real filesystems
mounted where the models and Docker's images go."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import host, settings
from agent.checks import host as host_checks
from agent.checks.base import DoctorContext

GIB = 1024**3


def ctx_with(tmp_path: Path, os_release: str | None = None, meminfo: str | None = None):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    if os_release is not None:
        (root / "etc" / "os-release").write_text(os_release)
    if meminfo is not None:
        (root / "proc").mkdir(exist_ok=True)
        (root / "proc" / "meminfo").write_text(meminfo)
    s = settings.load(tmp_path / "none.yaml")  # paths.models is /opt/models: found under root
    return DoctorContext(settings=s, root=root)


@pytest.mark.parametrize(
    "text, status, words",
    [
        pytest.param(
            'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\nVERSION_ID="24.04"\n',
            "ok",
            "Ubuntu 24.04.1 LTS is supported",
            id="ubuntu-24.04",
        ),
        pytest.param(
            'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nID=ubuntu\nVERSION_ID="22.04"\n',
            "ok",
            "is supported",
            id="ubuntu-22.04",
        ),
        pytest.param(
            'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
            "ok",
            "is supported",
            id="debian-12",
        ),
        pytest.param(
            'PRETTY_NAME="Ubuntu 20.04.6 LTS"\nID=ubuntu\nVERSION_ID="20.04"\n',
            "warn",
            "Ubuntu 20.04.6 LTS is not a supported system",
            id="ubuntu-20.04",
        ),
        pytest.param(
            None,
            "warn",
            "an unknown system (no /etc/os-release) is not a supported system",
            id="missing",
        ),
    ],
)
def test_host_os(tmp_path: Path, text: str | None, status: str, words: str) -> None:
    check = host_checks.check_os(ctx_with(tmp_path, text))
    assert check.status == status and words in check.summary
    if status == "warn":
        assert check.fix == "deploy the StackScript on Ubuntu 24.04 (or 22.04, Debian 12)"


def test_os_release_falls_back_to_usr_lib(tmp_path: Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/os-release").write_text("ID=debian\nVERSION_ID='12'\n")
    assert host.os_release(tmp_path) == host.OsRelease("debian", "12", None)
    assert host.os_release(tmp_path).supported


def meminfo(total_gib: float, available_gib: float) -> str:
    kb = lambda gib: int(gib * GIB / 1024)  # noqa: E731
    return (
        f"MemTotal:       {kb(total_gib)} kB\nMemFree:        1024 kB\n"
        f"MemAvailable:   {kb(available_gib)} kB\nBuffers:        1024 kB\n"
    )


@pytest.mark.parametrize(
    "total, status, summary",
    [
        pytest.param(64, "ok", "64.0 GiB of memory", id="plenty"),
        pytest.param(12, "warn", "12.0 GiB of memory: loading large models may fail", id="tight"),
        pytest.param(4, "fail", "4.0 GiB of memory is too little for vLLM", id="too-little"),
    ],
)
def test_host_memory(tmp_path: Path, total: float, status: str, summary: str) -> None:
    check = host_checks.check_memory(ctx_with(tmp_path, meminfo=meminfo(total, total / 2)))
    assert (check.status, check.summary) == (status, summary)
    assert check.detail == f"{total:.1f} GiB total, {total / 2:.1f} GiB available"


def test_host_memory_unreadable_is_a_warning(tmp_path: Path) -> None:
    ctx = ctx_with(tmp_path)
    check = host_checks.check_memory(ctx)
    assert (check.status, check.summary) == ("warn", "cannot tell how much memory this machine has")
    assert check.detail == f"{ctx.root}/proc/meminfo cannot be read"


def test_memory_reads_this_machine(tmp_path: Path) -> None:
    mem = host.memory()  # the real /proc/meminfo: what the box's doctor reads
    assert mem is not None and mem.total > 0 and 0 < mem.available <= mem.total


@pytest.mark.parametrize(
    ("env", "status", "summary"),
    [
        ({}, "ok", "the watchdog's metrics are on this box only (127.0.0.1)"),
        ({"WATCH_METRICS_BIND": "::1"}, "ok", "the watchdog's metrics are on this box only ([::1])"),
        ({"WATCH_METRICS_BIND": "::ffff:127.0.0.1"}, "ok", "on this box only (127.0.0.1)"),
        ({"WATCH_METRICS_BIND": "0.0.0.0", "WATCH_METRICS_PORT": "0"}, "ok", "no metrics server"),
        ({"WATCH_METRICS_BIND": "0.0.0.0"}, "warn",
         "the watchdog's metrics on 0.0.0.0:8471 are open to anyone who reaches this box"),
        ({"WATCH_METRICS_BIND": "::", "WATCH_METRICS_PORT": "9"}, "warn",
         "the watchdog's metrics on [::]:9 are open to anyone who reaches this box"),
        ({"WATCH_METRICS_BIND": "10.0.0.5"}, "warn",
         "the watchdog's metrics on 10.0.0.5:8471 are open to anyone who reaches 10.0.0.5"),
    ],
)  # fmt: skip
def test_metrics_off_loopback_are_a_warning_with_the_fix(
    tmp_path: Path, env: dict[str, str], status: str, summary: str
) -> None:
    """Issue 14 g: a non-loopback watch.metrics_bind serves service states and GPU UUIDs to
    whoever asks."""
    s = settings.load(tmp_path / "none.yaml", env=env)
    found = host_checks.check_metrics_bind(DoctorContext(settings=s, root=tmp_path))
    assert (found.status, found.id) == (status, "host.metrics")
    assert summary in found.summary
    if status == "warn":
        assert "every GPU's UUID" in found.detail
        assert found.fix.startswith("set watch.metrics_bind: 127.0.0.1 (WATCH_METRICS_BIND)")
