"""A real ACME CA on the host's loopback: Debian's pebble 2.4.0 and its mock DNS.

TESTING.md, "TLS and ACME, offline": ``pebble-challtestsrv`` answers every name with
127.0.0.1 (a test may point one name elsewhere with ``answer()``), and ``pebble`` validates
http-01 on port 5002 and tls-alpn-01 on 5001 of whatever that DNS names, with no sleeps
(PEBBLE_VA_NOSLEEP=1) and no rate limits. A proxy in the host's network namespace with
``http_port 5002`` and ``https_port 5001`` therefore gets a certificate for any name in about a
second.

    with running_pebble(tmp_dir) as ca:
        ca.directory_url           # acme_ca
        ca.listener_cert           # acme_ca_root: the self-signed cert pebble's API serves
        ca.root_pem()              # the root the issued chains end in (new at every start)
        before = ca.issued()       # "Issued certificate" lines in pebble's log so far
        ...
        ca.wait_issued(before + 1)

The ports are pebble's own defaults and fixed (the proxy's ports must match them), so one
test process at a time holds them: a lock file, waited for at most ``LOCK_WAIT`` seconds.
Everything listens on 127.0.0.1 only and is stopped when the block ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
ACME_PORT = 14000  # pebble's ACME API: the directory is /dir
MANAGEMENT_PORT = 15000  # pebble's management API: /roots/0, /intermediates/0
DNS_PORT = 8053  # the mock DNS pebble resolves challenge names with (udp and tcp)
DNS_MANAGEMENT_PORT = 8055  # pebble-challtestsrv's own API: /add-a, /clear-a
HTTP_PORT = 5002  # pebble's http-01 port: the proxy's http_port
TLS_PORT = 5001  # pebble's tls-alpn-01 port: the proxy's https_port
DIRECTORY_URL = f"https://{HOST}:{ACME_PORT}/dir"
ISSUED = "Issued certificate"

LOCK_PATH = Path(os.environ.get("SANDBOX_TEST_ACME_LOCK", "/var/tmp/sandbox-test-acme.lock"))
LOCK_WAIT = 300.0
READY_WAIT = 20.0


class AcmeFixtureError(RuntimeError):
    """pebble or its DNS could not be started; the message says why and what to do."""


@dataclass
class Pebble:
    """A running pebble and its mock DNS (see the module's docstring)."""

    workdir: Path
    listener_cert: Path
    log_path: Path
    dns_log_path: Path
    directory_url: str = DIRECTORY_URL
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def context(self) -> ssl.SSLContext:
        """A TLS client context that trusts pebble's API listener."""
        return ssl.create_default_context(cafile=str(self.listener_cert))

    def root_pem(self) -> str:
        """The PEM of the root that certificates issued now chain to."""
        url = f"https://{HOST}:{MANAGEMENT_PORT}/roots/0"
        with urllib.request.urlopen(url, context=self.context(), timeout=5) as reply:
            return str(reply.read().decode())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def issued(self) -> int:
        """How many certificates pebble has issued since it started (lines in its log)."""
        return sum(ISSUED in line for line in self.log().splitlines())

    def wait_issued(self, count: int, timeout: float = 30.0) -> int:
        """Wait until at least ``count`` certificates were issued; return the count then."""
        deadline = time.monotonic() + timeout
        while (now := self.issued()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"pebble issued {now} certificates, not {count}, in {timeout:.0f}s; "
                    f"its log ends:\n{_tail(self.log())}"
                )
            time.sleep(0.2)
        return now

    def answer(self, name: str, address: str) -> None:
        """Make the mock DNS answer ``name``'s A query with ``address`` (and no AAAA)."""
        # add-a appends to the name's answers: clear first, or an earlier one still validates.
        _dns_api("clear-a", {"host": _fqdn(name)})
        _dns_api("add-a", {"host": _fqdn(name), "addresses": [address]})

    def forget(self, name: str) -> None:
        """Back to the default answer (127.0.0.1) for ``name``."""
        _dns_api("clear-a", {"host": _fqdn(name)})

    def stop(self) -> None:
        for process in reversed(self.processes):
            _stop(process)
        self.processes.clear()


@contextlib.contextmanager
def running_pebble(workdir: Path) -> Iterator[Pebble]:
    """Start the mock DNS and pebble under ``workdir``, wait until both answer, stop both."""
    for tool in ("pebble", "pebble-challtestsrv", "openssl"):
        if shutil.which(tool) is None:
            package = "openssl" if tool == "openssl" else "pebble"
            raise AcmeFixtureError(f"{tool} is not installed: `apt-get install -y {package}`")
    workdir.mkdir(parents=True, exist_ok=True)
    with _port_lock():
        _check_ports_free()
        ca = Pebble(
            workdir=workdir,
            listener_cert=workdir / "listener-cert.pem",
            log_path=workdir / "pebble.log",
            dns_log_path=workdir / "challtestsrv.log",
        )
        try:
            _start(ca)
            yield ca
        finally:
            ca.stop()


# --- starting -------------------------------------------------------------------------------


def _start(ca: Pebble) -> None:
    key = ca.workdir / "listener-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "7",
            "-subj",
            "/CN=localhost",
            "-addext",
            f"subjectAltName=DNS:localhost,IP:{HOST}",
            "-keyout",
            str(key),
            "-out",
            str(ca.listener_cert),
        ],
        check=True,
        capture_output=True,
    )
    config = ca.workdir / "pebble.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"{HOST}:{ACME_PORT}",
                    "managementListenAddress": f"{HOST}:{MANAGEMENT_PORT}",
                    "certificate": str(ca.listener_cert),
                    "privateKey": str(key),
                    "httpPort": HTTP_PORT,
                    "tlsPort": TLS_PORT,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            },
            indent=2,
        )
    )
    # Only the mock DNS: challenge servers of its own would take the proxy's ports. No AAAA
    # answers, so a name pointed at another IPv4 address cannot still validate over ::1.
    dns = [
        "pebble-challtestsrv",
        "-dns01",
        f"{HOST}:{DNS_PORT}",
        "-management",
        f"{HOST}:{DNS_MANAGEMENT_PORT}",
        "-http01",
        "",
        "-https01",
        "",
        "-tlsalpn01",
        "",
        "-defaultIPv4",
        HOST,
        "-defaultIPv6",
        "",
    ]
    ca.processes.append(_spawn(dns, ca.dns_log_path))
    _wait(ca, _dns_api_answers, "pebble-challtestsrv", ca.dns_log_path)
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1")
    pebble = ["pebble", "-config", str(config), "-dnsserver", f"{HOST}:{DNS_PORT}"]
    ca.processes.append(_spawn(pebble, ca.log_path, env))
    _wait(ca, lambda: _directory_answers(ca), "pebble", ca.log_path)


def _spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )


def _wait(ca: Pebble, ready: Callable[[], bool], what: str, log: Path) -> None:
    deadline = time.monotonic() + READY_WAIT
    while not ready():
        process = ca.processes[-1]
        if process.poll() is not None:
            raise AcmeFixtureError(
                f"{what} exited with {process.returncode}:\n{_tail(log.read_text())}"
            )
        if time.monotonic() > deadline:
            raise AcmeFixtureError(
                f"{what} did not answer in {READY_WAIT:.0f}s:\n{_tail(log.read_text())}"
            )
        time.sleep(0.1)


def _directory_answers(ca: Pebble) -> bool:
    try:
        with urllib.request.urlopen(ca.directory_url, context=ca.context(), timeout=2) as r:
            return "newOrder" in json.loads(r.read())
    except (OSError, ValueError):
        return False


def _dns_api(path: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(
        f"http://{HOST}:{DNS_MANAGEMENT_PORT}/{path}", data=json.dumps(body).encode()
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        reply.read()


def _dns_api_answers() -> bool:
    try:
        urllib.request.urlopen(f"http://{HOST}:{DNS_MANAGEMENT_PORT}/", timeout=2).close()
    except urllib.error.HTTPError:
        return True  # it answered, with a 404 for "/"
    except OSError:
        return False
    return True


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


# --- ports and processes --------------------------------------------------------------------


@contextlib.contextmanager
def _port_lock() -> Iterator[None]:
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_PATH, "a+") as handle:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AcmeFixtureError(
                        f"another test process has held {LOCK_PATH} (pebble's fixed ports) "
                        f"for over {LOCK_WAIT:.0f}s; wait for it to end and run again"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_ports_free() -> None:
    taken = []
    for port in (ACME_PORT, MANAGEMENT_PORT, DNS_PORT, DNS_MANAGEMENT_PORT, HTTP_PORT, TLS_PORT):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, port))
            except OSError:
                taken.append(port)
    if taken:
        raise AcmeFixtureError(
            f"ports {taken} on {HOST} are taken (pebble and the proxy need them); "
            "find the holder with `ss -ltnp` and stop it"
        )


def _stop(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])
