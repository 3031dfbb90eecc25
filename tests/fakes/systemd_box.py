"""A Debian 12 box with a real systemd as PID 1, in a container (../shared/TESTING.md).

Built from Debian packages by debootstrap, imported, then a Dockerfile on top; the tag carries
a hash of the recipe, so a second run finds it and returns at once (as tests/fakes/images.py
does for the stand-ins). Run it with `run_args()`: cgroups read-only, tmpfs on /run, no
--privileged (it does not work on these machines and is not needed).

    python tests/fakes/systemd_box.py     # build (about a minute the first time)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.fakes import images

PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-venv",
    "curl",
    "ca-certificates",
    "iproute2",
)
RECIPE = "1"
DOCKERFILE = """\
FROM {base}
ENV container=docker
STOPSIGNAL SIGRTMIN+3
RUN systemctl mask systemd-udevd.service systemd-udevd-kernel.socket \
      systemd-udevd-control.socket getty.target console-getty.service \
      systemd-logind.service systemd-timesyncd.service systemd-firstboot.service \
    && : > /etc/machine-id
LABEL {label}=systemd-box
CMD ["/sbin/init"]
"""


def _command(target: str) -> list[str]:
    return [
        images.DEBOOTSTRAP,
        "--variant=minbase",
        "--include=" + ",".join(PACKAGES),
        images.SUITE,
        target,
        images.MIRROR,
    ]


def tag() -> str:
    recipe = {"recipe": RECIPE, "command": _command("{target}"), "dockerfile": DOCKERFILE}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    return f"{images.REPO}/systemd-box:{digest[:16]}"


def ensure() -> str:
    """The image's tag, built first when the engine lacks it."""
    wanted = tag()
    if images.image_exists(wanted):
        return wanted
    with images.file_lock(images.LOCK_PATH, images._log):
        if not images.image_exists(wanted):
            _build(wanted)
    return wanted


def _build(wanted: str) -> None:
    if shutil.which(images.DEBOOTSTRAP) is None:
        raise images.ImageBuildError("debootstrap is not installed: apt-get install debootstrap")
    images.WORK_ROOT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sandbox-systemd-", dir=images.WORK_ROOT))
    try:
        rootfs = work / "rootfs"
        images._log(f"building {wanted} (debootstrap, about a minute)")
        done = subprocess.run(_command(str(rootfs)), capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            raise images.ImageBuildError(f"debootstrap failed (exit {done.returncode}):\n{tail}")
        for rel in images.BASE_PRUNE:
            target = rootfs / rel
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
                target.mkdir()
        for rel in ("etc/hostname", "etc/resolv.conf"):
            (rootfs / rel).unlink(missing_ok=True)
        base = wanted.replace("systemd-box:", "systemd-rootfs:")
        images._import_rootfs(rootfs, base)
        context = work / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(DOCKERFILE.format(base=base, label=images.LABEL))
        built = subprocess.run(
            [images.DOCKER, "build", "-t", wanted, str(context)],
            capture_output=True,
            text=True,
            env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin"},
        )
        if built.returncode != 0:
            raise images.ImageBuildError(f"docker build {wanted} failed:\n{built.stdout[-2000:]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_args() -> list[str]:
    """`docker run` options under which systemd boots as PID 1 here."""
    return [
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:ro",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/run/lock",
    ]


if __name__ == "__main__":
    print(ensure())
    sys.exit(0)
