"""The certificate reader against the real Caddy (Debian's 2.6.2 binary) and a real ACME server
(pebble, every name resolved to 127.0.0.1 by pebble-challtestsrv; TESTING.md's recipe): where
Caddy keeps what it was issued, its expiry, and Caddy's own error when a certificate cannot be
had (pebble cannot reach the challenge port, as Let's Encrypt cannot through a closed port)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import door, settings
from agent.stack import certificate
from tests.fakes import certs
from tests.integration.stack_support import free_port

BINARIES = ("caddy", "pebble", "pebble-challtestsrv", "openssl")
pytestmark = pytest.mark.skipif(
    any(shutil.which(b) is None for b in BINARIES),
    reason="needs caddy, pebble and pebble-challtestsrv (apt-get install caddy pebble)",
)


def _wait(what: str, ready: Any, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        time.sleep(0.1)
    raise AssertionError(f"{what} not ready within {timeout}s")


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("pebble")
    key, cert = folder / "listener.key", folder / "listener.crt"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    names = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    subprocess.run(
        ["openssl", "req", "-x509", *ec, "-keyout", key, "-out", cert, "-days", "30", *names],
        check=True,
        capture_output=True,
    )
    ports = {k: free_port() for k in ("acme", "manage", "http", "tls", "dns", "chall")}
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{ports['acme']}",
            "managementListenAddress": f"127.0.0.1:{ports['manage']}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": ports["http"],
            "tlsPort": ports["tls"],
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (folder / "pebble.json").write_text(json.dumps(config))
    dns = f"127.0.0.1:{ports['dns']}"
    off = ["-http01", "", "-https01", "", "-tlsalpn01", "", "-defaultIPv6", ""]
    chall = ["-management", f"127.0.0.1:{ports['chall']}", "-defaultIPv4", "127.0.0.1"]
    procs = [
        subprocess.Popen(
            ["pebble-challtestsrv", "-dns01", dns, *off, *chall],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    log = folder / "pebble.log"
    with log.open("wb") as out:
        procs.append(
            subprocess.Popen(
                ["pebble", "-config", str(folder / "pebble.json"), "-dnsserver", dns],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={"PEBBLE_VA_NOSLEEP": "1", "PATH": "/usr/bin:/bin"},
            )
        )
    try:
        _wait("pebble", lambda: b"Listening on" in log.read_bytes(), procs[1])
        yield {"ports": ports, "root": cert, "ca": f"https://127.0.0.1:{ports['acme']}/dir"}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def caddy(tmp_path: Path, write_config, pebble: dict, name: str, reachable: bool) -> Any:
    """Caddy for `name`, with its store where the agent's proxy keeps it; on pebble's ports
    (reachable), or on others (pebble's validation finds nothing there)."""
    ports = pebble["ports"]
    http, https = (ports["http"], ports["tls"]) if reachable else (free_port(), free_port())
    s = settings.load(
        write_config(
            {"https": {"domain": name, "acme_ca": pebble["ca"]}, "ui": {"bind": "0.0.0.0"}}
        )
    )
    store = door.store(s)
    store.mkdir(parents=True)
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(
        f"{{\n\tadmin off\n\thttp_port {http}\n\thttps_port {https}\n"
        f"\tacme_ca {pebble['ca']}\n\tacme_ca_root {pebble['root']}\n}}\n"
        f'{name} {{\n\trespond "hi"\n}}\n'
    )
    err = tmp_path / "caddy.log"
    with err.open("wb") as out:
        proc = subprocess.Popen(
            ["caddy", "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
            stdout=subprocess.DEVNULL,
            stderr=out,
            env={
                "XDG_DATA_HOME": str(store),  # as the proxy's /data: door.store
                "XDG_CONFIG_HOME": str(tmp_path / "config"),
                "HOME": str(tmp_path),
                "PATH": "/usr/bin:/bin",
            },
        )
    return s, proc, err


def test_what_caddy_is_issued_is_read_from_its_store(
    tmp_path: Path, write_config, pebble: dict
) -> None:
    name = "ok.door.test"
    s, proc, _ = caddy(tmp_path, write_config, pebble, name, reachable=True)
    try:
        _wait("the certificate", lambda: certificate.read(s, name).state == "issued", proc)
    finally:
        proc.terminate()
        proc.wait(10)
    found = certificate.read(s, name)
    issuer = f"127.0.0.1-{pebble['ports']['acme']}-dir"
    assert found.issuer == issuer
    assert found.path == door.store(s) / "caddy" / "certificates" / issuer / name / f"{name}.crt"
    assert found.expires == certs.not_after(found.path.read_bytes()).isoformat()
    assert found.days_left is not None and found.days_left > 14  # pebble's: years


def test_caddys_error_when_the_challenge_cannot_be_reached(
    tmp_path: Path, write_config, pebble: dict
) -> None:
    name = "fail.door.test"
    s, proc, err = caddy(tmp_path, write_config, pebble, name, reachable=False)
    try:
        _wait("Caddy's retry", lambda: b'"will retry"' in err.read_bytes(), proc, timeout=40)
    finally:
        proc.terminate()
        proc.wait(10)
    assert certificate.read(s, name).state == "pending"
    error, at = certificate.caddy_error(err.read_text().splitlines(), name)
    assert error.startswith("http-01 challenge failed: "), error
    assert at is not None and at[:4] >= "2026"
