"""doctor's https.dns with the real resolver. getaddrinfo reads /etc/hosts before DNS (Debian's
nsswitch: `files dns`), so each case runs the check in a private mount namespace whose
/etc/hosts holds the name's records (`unshare -m`, as root): the real lookup, no fake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent import door, linode, settings

REPO = Path(__file__).resolve().parents[2]
NAME = "door.example.test"
CHECK = """
import json, sys
from pathlib import Path
from agent import settings
from agent.checks import https
from agent.checks.base import DoctorContext
print(json.dumps(https.check_dns(DoctorContext(settings.load(Path(sys.argv[1])))).as_dict()))
"""
# the hosts file is bound over /etc/hosts for this process and its children only
IN_NAMESPACE = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'


def _namespaces() -> bool:
    try:
        done = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


pytestmark = pytest.mark.skipif(not _namespaces(), reason="no mount namespace (unshare -m) here")


@pytest.fixture
def dns(write_config, tmp_path: Path) -> Any:
    config = write_config({"https": {"domain": NAME}, "ui": {"bind": "0.0.0.0"}})

    def check(hosts: str, name: str = NAME) -> dict[str, Any]:
        if name != NAME:
            config.write_text(config.read_text().replace(NAME, name))
        path = tmp_path / "hosts"
        path.write_text("127.0.0.1 localhost\n" + hosts)
        argv = [sys.executable, "-c", CHECK, str(config)]
        unshare = ["unshare", "-m", "--propagation", "private", "sh", "-c", IN_NAMESPACE, "sh"]
        done = subprocess.run(
            [*unshare, str(path), *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    check.settings = settings.load(config)  # type: ignore[attr-defined]
    return check


def mine() -> str:
    found = [a for a in linode.interface_addresses() if ":" not in a]
    if not found:
        pytest.skip("this machine has no IPv4 address of its own")
    return found[0]


def test_a_record_that_points_here_is_ok(dns: Any) -> None:
    found = dns(f"{mine()} {NAME}\n")
    assert found["status"] == "ok" and found["summary"] == f"{NAME} points at this box ({mine()})"


def test_a_record_that_points_elsewhere_fails_with_the_address_to_point_it_at(dns: Any) -> None:
    found = dns(f"198.51.100.7 {NAME}\n")
    assert found["status"] == "fail"
    assert found["summary"] == f"{NAME} points at 198.51.100.7, not at this box"
    assert found["fix"] == (
        f"point the A record at {mine()}; Let's Encrypt checks the name from the internet"
    )
    assert found["detail"].startswith(f"{NAME}: 198.51.100.7; this box: {mine()}")


def test_an_aaaa_record_elsewhere_fails_though_the_a_record_points_here(dns: Any) -> None:
    found = dns(f"{mine()} {NAME}\n2001:db8::99 {NAME}\n")
    assert found["status"] == "fail"
    assert found["summary"] == f"{NAME} points at 2001:db8::99, not at this box"
    assert "and remove the AAAA record (or point it at this box's IPv6 address)" in found["fix"]


def test_no_record_fails_with_the_record_to_make(dns: Any) -> None:
    name = "nothing-here.door.invalid"
    found = dns("", name=name)
    assert found["status"] == "fail" and found["summary"] == f"{name} has no A or AAAA record"
    assert found["fix"].startswith(f"create an A record for {name} pointing at {mine()}")
    assert found["detail"].startswith("the resolver says: ")


def test_the_address_the_metadata_service_gave_up_counts_as_this_box(dns: Any) -> None:
    door.save_name(dns.settings, "203-0-113-9.ip.linodeusercontent.com")
    found = dns(f"203.0.113.9 {NAME}\n")
    assert found["status"] == "ok", found
    found = dns(f"198.51.100.7 {NAME}\n")
    assert found["fix"].startswith("point the A record at 203.0.113.9;")  # the public one
