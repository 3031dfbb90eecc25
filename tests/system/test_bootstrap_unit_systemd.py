"""The resume unit (sandbox-agent-bootstrap.service) under a real systemd (PID 1 in a
container with CAP_SYS_ADMIN, so that its sandbox is really built; TESTING.md), as the
bootstrap renders it: `systemd-analyze` verifies it and scores both units, and with its
ExecStart at a probe it does what an installer does inside that sandbox (dpkg with a
maintainer script that writes /etc, /opt, /usr, /var, /boot, installs a SUID file, adds a
group and a user; a package read from /root; a service restarted through systemd), while
homes stay read-only and /tmp is its own. Issue 14 k."""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.steps import units
from tests.fakes.images import ensure_image
from tests.integration.stack_support import docker_client
from tests.system.test_watch_systemd import Box

pytestmark = [pytest.mark.systemd, pytest.mark.docker]
PROBE = "/usr/local/sbin/probe installer"  # a space: the rendered ExecStart quotes it
CONFIG = "/etc/sandbox-agent/odd %n $HOME/config.yaml"
# what each unit may expose at most (systemd-analyze security, 0 safe .. 10 unsafe); measured
# with systemd 252: the watchdog 3.7, the resume unit 5.0 (9.6 before it was hardened)
BOUNDS = {"sandbox-agent.service": 4.0, units.RESUME: 5.5}
INSTALLER = r"""#!/bin/sh
# what the bootstrap's steps make apt, dpkg and their maintainer scripts do
check() { if sh -c "$2" >/dev/null 2>&1; then echo "ok $1"; else echo "FAIL $1"; fi; }
check dpkg "dpkg -i /root/probe.deb"
check installed "test -f /usr/share/probe/file -a -f /etc/probe-etc -a -f /opt/probe/f"
check suid "test -u /usr/local/bin/probe-suid"
check group "getent group probe-group"
check user "getent passwd probe-user"
check boot "touch /boot/probe && rm /boot/probe"
check var "touch /var/lib/probe-state"
check restart "systemctl restart probe-dummy.service"
check python "python3 -c 'import ctypes, ssl, socket, json'"
check tmp "touch /tmp/probe-private"
check home-readable "cat /root/readable"
check home-not-written "! touch /root/written"
echo args "$@"
"""
POSTINST = """#!/bin/sh
set -e
echo postinst > /etc/probe-etc
mkdir -p /opt/probe && echo x > /opt/probe/f
cp /bin/true /usr/local/bin/probe-suid && chmod 4755 /usr/local/bin/probe-suid
groupadd -r probe-group && chown root:probe-group /opt/probe/f
useradd -r -g probe-group -d /nonexistent -s /usr/sbin/nologin probe-user
"""
CONTROL = "Package: probe\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.com>\n"
CONTROL += "Description: what an installer's package does\n"
DUMMY = "[Service]\nType=oneshot\nExecStart=/bin/true\n"


def put(box: Box, files: dict[str, tuple[str, int]]) -> None:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, (text, mode) in files.items():
            raw = text.encode()
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode = len(raw), mode
            tar.addfile(info, io.BytesIO(raw))
    assert box.container.put_archive("/", data.getvalue())


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    container = docker_client().containers.run(
        ensure_image("systemd-box"),
        detach=True,
        tmpfs={"/run": "", "/run/lock": ""},
        cap_add=["SYS_ADMIN"],  # else every sandboxing setting is silently skipped
        volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}},
        labels={"org.sandbox-agent.test": "systemd-box"},
    )
    b = Box(container)
    try:
        b.until("systemctl is-system-running", lambda o: o.strip() in ("running", "degraded"))
        yield b
    finally:
        container.remove(force=True)


def install(box: Box) -> str:
    """The resume unit as the bootstrap writes it, at a probe and an odd settings file."""
    text = units.resume_unit(Path(CONFIG), command=PROBE)
    put(
        box,
        {
            f"/etc/systemd/system/{units.RESUME}": (text, 0o644),
            "/etc/systemd/system/probe-dummy.service": (DUMMY, 0o644),
            "/etc/systemd/system/sandbox-agent.service": (
                units.unitfile.packaged("sandbox-agent.service").read_text(),
                0o644,
            ),
            PROBE: (INSTALLER, 0o755),
            CONFIG: ("{}\n", 0o644),
            "/root/readable": ("yes\n", 0o644),
            "/root/pkg/DEBIAN/control": (CONTROL, 0o644),
            "/root/pkg/DEBIAN/postinst": (POSTINST, 0o755),
            "/root/pkg/usr/share/probe/file": ("x\n", 0o644),
        },
    )
    box.sh("dpkg-deb --build /root/pkg /root/probe.deb && systemctl daemon-reload")
    return text


def test_systemd_reads_the_rendered_resume_unit_and_scores_both_units(box: Box) -> None:
    text = install(box)
    verify = box.sh(f"systemd-analyze verify /etc/systemd/system/{units.RESUME} 2>&1")
    assert verify.strip() == ""
    assert "ProtectHome=read-only" in text
    for unit, bound in BOUNDS.items():
        out = box.sh(f"systemd-analyze security --no-pager {unit}")
        found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
        assert found is not None, out
        assert float(found.group(1)) <= bound, f"{unit}: {found.group(1)}\n{out}"


def test_an_installer_does_its_work_inside_the_resume_unit_s_sandbox(box: Box) -> None:
    install(box)
    box.sh(f"systemctl start {units.RESUME}")  # Type=oneshot: returns when it has run
    out = box.sh(f"journalctl -u {units.RESUME} --no-pager -o cat")
    results = dict(
        line.split(" ", 1)[::-1] for line in out.splitlines() if line.startswith(("ok ", "FAIL "))
    )
    assert results == {
        name: "ok"
        for name in (
            "dpkg", "installed", "suid", "group", "user", "boot", "var", "restart", "python",
            "tmp", "home-readable", "home-not-written",
        )
    }, out  # fmt: skip
    # systemd read back the quoted executable and the odd settings file exactly (no specifier,
    # no variable expanded), and ConditionPathExists= named that file: else nothing had run
    assert f"args bootstrap --config {CONFIG}" in out
    # its /tmp was its own; the host's /tmp never saw the file
    assert box.sh("test -e /tmp/probe-private || echo absent").strip() == "absent"
