"""host.disk against real filesystems (tmpfs) mounted where a box keeps models and images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent import settings
from agent.checks import host as host_checks
from agent.checks.base import DoctorContext


def ctx_with(tmp_path: Path) -> DoctorContext:
    root = tmp_path / "root"
    root.mkdir()
    s = settings.load(tmp_path / "none.yaml")  # paths.models is /opt/models: found under root
    return DoctorContext(settings=s, root=root)


def test_host_disk_reports_the_tightest_place(tmp_path: Path, tmpfs: Any) -> None:
    ctx = ctx_with(tmp_path)
    tmpfs(ctx.root / "opt/models", "100g")
    tmpfs(ctx.root / "var/lib/docker", "40g")
    check = host_checks.check_disk(ctx)
    assert check.status == "warn"
    assert check.summary == "40.0 GiB free for images: enough for a small model only"
    assert check.detail == (
        "models: 100.0 GiB free of 100.0 GiB at /opt/models; "
        "images: 40.0 GiB free of 40.0 GiB at /var/lib/docker"
    )
    assert check.fix == "models over ~15B parameters need more than 60 GiB free"


def test_host_disk_is_ok_with_room_for_large_models(tmp_path: Path, tmpfs: Any) -> None:
    ctx = ctx_with(tmp_path)
    tmpfs(ctx.root / "opt", "200g")  # /opt/models does not exist yet: its parent is measured
    tmpfs(ctx.root / "var/lib/docker", "100g")
    check = host_checks.check_disk(ctx)
    assert (check.status, check.summary) == ("ok", "100.0 GiB free for images")
    assert check.detail.startswith("models: 200.0 GiB free of 200.0 GiB at /opt;")


def test_host_disk_fails_on_a_small_filesystem(tmp_path: Path, tmpfs: Any) -> None:
    ctx = ctx_with(tmp_path)
    tmpfs(ctx.root / "opt/models", "20m")
    tmpfs(ctx.root / "var/lib/docker", "100g")
    check = host_checks.check_disk(ctx)
    assert check.status == "fail"
    assert check.summary == "only 0.0 GiB free for models (/opt/models)"
    assert check.fix == "free space or resize the Linode disk: at least 25 GiB are needed"
