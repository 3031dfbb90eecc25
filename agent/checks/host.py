"""host.*: the operating system, disk and memory the stack needs."""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.checks.base import Check, CheckSpec, DoctorContext

SUPPORTED = {("ubuntu", "22.04"), ("ubuntu", "24.04"), ("debian", "12")}
GIB = 1024**3
# A 7B model in bf16 is ~15 GB and the vLLM image unpacks to ~20 GB.
DISK_FAIL_GIB, DISK_WARN_GIB = 25, 60
MEMORY_FAIL_GIB, MEMORY_WARN_GIB = 8, 16


def os_release(root: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name in ("etc/os-release", "usr/lib/os-release"):
        path = root / name
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    fields[key.strip()] = value.strip().strip('"').strip("'")
            break
    return fields


def check_os(ctx: DoctorContext) -> Check:
    fields = os_release(ctx.root)
    name = fields.get("PRETTY_NAME") or "an unknown system (no /etc/os-release)"
    if (fields.get("ID", ""), fields.get("VERSION_ID", "")) in SUPPORTED:
        return Check("host.os", "ok", f"{name} is supported")
    return Check(
        "host.os",
        "warn",
        f"{name} is not a supported system",
        detail="bootstrap installs drivers and Docker on Ubuntu 22.04, 24.04 and Debian 12 only",
        fix="deploy the StackScript on Ubuntu 24.04 (or 22.04, Debian 12)",
    )


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(ctx: DoctorContext) -> Check:
    paths = ctx.settings.paths
    places = {"models": paths.models, "images": Path("/var/lib/docker")}
    worst: tuple[float, str, Path] | None = None
    lines = []
    for what, place in places.items():
        usage = shutil.disk_usage(_existing(place))
        free = usage.free / GIB
        lines.append(
            f"{what}: {free:.1f} GiB free of {usage.total / GIB:.1f} GiB at {_existing(place)}"
        )
        if worst is None or free < worst[0]:
            worst = (free, what, place)
    assert worst is not None
    free, what, place = worst
    detail = "; ".join(lines)
    if free < DISK_FAIL_GIB:
        return Check(
            "host.disk",
            "fail",
            f"only {free:.1f} GiB free for {what} ({place})",
            detail,
            fix=f"free space or resize the Linode disk: at least {DISK_FAIL_GIB} GiB are needed",
        )
    if free < DISK_WARN_GIB:
        return Check(
            "host.disk",
            "warn",
            f"{free:.1f} GiB free for {what}: enough for a small model only",
            detail,
            fix=f"models over ~15B parameters need more than {DISK_WARN_GIB} GiB free",
        )
    return Check("host.disk", "ok", f"{free:.1f} GiB free for {what}", detail)


def check_memory(ctx: DoctorContext) -> Check:
    import psutil

    mem = psutil.virtual_memory()
    total, available = mem.total / GIB, mem.available / GIB
    detail = f"{total:.1f} GiB total, {available:.1f} GiB available"
    if total < MEMORY_FAIL_GIB:
        return Check(
            "host.memory",
            "fail",
            f"{total:.1f} GiB of memory is too little for vLLM",
            detail,
            fix=f"choose a plan with at least {MEMORY_WARN_GIB} GiB of memory",
        )
    if total < MEMORY_WARN_GIB:
        return Check(
            "host.memory",
            "warn",
            f"{total:.1f} GiB of memory: loading large models may fail",
            detail,
            fix=f"plans with {MEMORY_WARN_GIB} GiB or more load models reliably",
        )
    return Check("host.memory", "ok", f"{total:.1f} GiB of memory", detail)


CHECKS = [
    CheckSpec("host.os", check_os, timeout=2),
    CheckSpec("host.disk", check_disk, timeout=5),
    CheckSpec("host.memory", check_memory, timeout=2),
]
