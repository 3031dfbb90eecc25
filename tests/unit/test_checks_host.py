"""host.* checks against a laid-out host tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import settings
from agent.checks import host
from agent.checks.base import DoctorContext


def ctx_with(tmp_path: Path, os_release: str | None) -> DoctorContext:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    if os_release is not None:
        (root / "etc" / "os-release").write_text(os_release)
    s = settings.load(tmp_path / "none.yaml", env={"MODELS_DIR": str(tmp_path / "models")})
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
    check = host.check_os(ctx_with(tmp_path, text))
    assert check.status == status and words in check.summary
    if status == "warn":
        assert check.fix == "deploy the StackScript on Ubuntu 24.04 (or 22.04, Debian 12)"


def test_host_disk_reports_the_tightest_place(tmp_path: Path) -> None:
    check = host.check_disk(ctx_with(tmp_path, ""))
    assert check.id == "host.disk" and check.status in ("ok", "warn", "fail")
    assert "models:" in check.detail and "images:" in check.detail and "GiB free" in check.summary


def test_host_disk_fails_on_a_small_filesystem(tmp_path: Path, small_fs: Path) -> None:
    s = settings.load(tmp_path / "none.yaml", env={"MODELS_DIR": str(small_fs / "models")})
    check = host.check_disk(DoctorContext(settings=s, root=tmp_path))
    assert check.status == "fail"
    assert check.summary.startswith("only ") and "for models" in check.summary
    assert check.fix == "free space or resize the Linode disk: at least 25 GiB are needed"


def test_host_memory(tmp_path: Path) -> None:
    check = host.check_memory(ctx_with(tmp_path, ""))
    assert check.status == "ok" and check.summary.endswith(
        "GiB of memory"
    )  # this machine has 24 GiB
