"""A second, private Docker daemon that a test may stop and start again: the main engine
(/var/run/docker.sock) is shared with every other test and CI, and is never restarted.

Everything of its own lives under one folder: its API socket, --data-root, --exec-root (so
it supervises a containerd of its own, socket and state included), --pidfile and an empty
--config-file (so /etc/docker/daemon.json does not reach it). Its default bridge is one of its
own, made here and removed at close. Two dockerd flags delete the host's docker0 (the main
daemon's bridge, whatever --bridge names): --bridge=none at every start, and
--default-address-pool at a restart (it clears the stale default network and, with custom
pools, the interface docker0 by name); neither is used. Its networks come from Docker's
default pools, which skip subnets the host already routes (the main daemon's).
--iptables=false --ip-masq=false --ip-forward=false keep its hands off the host's firewall
and sysctls (published ports go through docker-proxy, which is all a stack bound to
127.0.0.1 needs). It runs under `setpriv --pdeathsig TERM`: if pytest dies, the daemon is told to stop too (and stops its
containers with it).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any


class PrivateEngine:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sock = folder / "docker.sock"
        self.url = f"unix://{self.sock}"
        self.log = folder / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        config = folder / "daemon.json"
        config.write_text("{}\n")
        net = random.randint(128, 254)
        self.bridge = f"sapriv{net}"
        self.bridge_cidr = f"10.{net}.255.1/24"
        self.argv = [
            "setpriv", "--pdeathsig", "TERM", "dockerd",
            "--config-file", str(config),
            "--host", self.url,
            "--data-root", str(folder / "data"),
            "--exec-root", str(folder / "exec"),
            "--pidfile", str(folder / "dockerd.pid"),
            f"--bridge={self.bridge}", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
        ]  # fmt: skip

    # --- life -------------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> float:
        """Start the daemon; returns once its API answers (the seconds it took)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        began = time.monotonic()
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            for argv in (
                ["ip", "link", "add", self.bridge, "type", "bridge"],
                ["ip", "addr", "add", self.bridge_cidr, "dev", self.bridge],
                ["ip", "link", "set", self.bridge, "up"],
            ):
                subprocess.run(argv, check=True, capture_output=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        while time.monotonic() - began < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"dockerd exited ({self.proc.returncode}):\n{self.tail()}")
            with contextlib.suppress(Exception):
                self.client(timeout=2).ping()
                return time.monotonic() - began
            time.sleep(0.1)
        raise AssertionError(f"dockerd did not answer within {timeout}s:\n{self.tail()}")

    def stop(self, timeout: float = 30) -> float:
        """SIGTERM, as `systemctl stop docker` sends it; waits for the daemon to exit (the
        seconds it took). SIGKILL only if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"dockerd ignored SIGTERM for {timeout}s:\n{self.tail()}"
            ) from None
        return time.monotonic() - began

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, timeout: int = 60) -> Any:
        import docker

        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def load(self, images: tuple[str, ...], source: Any) -> None:
        """Copy images from the main engine (`source`, a docker-py client): save, then load."""
        client = self.client(timeout=300)
        for name in images:
            # named=True would keep only its first tag, whichever that is
            client.images.load(source.images.get(name).save(named=name))
            client.images.get(name)  # there, under the very tag the stack names

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "".join(self.log.read_text(errors="replace").splitlines(True)[-lines:])
        return ""

    # --- clean-up ---------------------------------------------------------------------------

    def close(self) -> list[str]:
        """Remove its containers and networks, stop it, and make sure nothing of it is left
        running or mounted; then remove the folder. Returns what had to be cleaned up by
        force (empty when the daemon cleaned up after itself, as it should)."""
        links: list[str] = []  # the bridges of its own networks: gone once they are
        if self.running:
            with contextlib.suppress(Exception):
                client = self.client(timeout=30)
                for container in client.containers.list(all=True):
                    container.remove(force=True)
                links = [
                    f"br-{n.id[:12]}" for n in client.networks.list(filters={"driver": "bridge"})
                ]
                client.networks.prune()
            with contextlib.suppress(AssertionError):
                self.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        leftover = self._leftover_processes()
        forced = [f"process {pid}: {what}" for pid, what in leftover]
        for pid, _ in leftover:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if leftover:  # runc removes a container's cgroups when it stops, not when it is killed
            time.sleep(0.5)
            for cid in self._container_ids():
                for group in Path("/sys/fs/cgroup").glob(f"*/docker/{cid}"):
                    with contextlib.suppress(OSError):
                        group.rmdir()
        for mount in self._leftover_mounts():
            forced.append(f"mount {mount}")
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        for link in links:
            if Path(f"/sys/class/net/{link}").exists():
                forced.append(f"bridge {link}")
                subprocess.run(["ip", "link", "del", link], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)
        shutil.rmtree(self.folder / "data", ignore_errors=True)
        shutil.rmtree(self.folder / "exec", ignore_errors=True)
        return forced

    def _leftover_processes(self) -> list[tuple[int, str]]:
        """Processes of this daemon that outlived it: its containerd and shims (their command
        line names our folder) and the containers' own processes (in their cgroups)."""
        mine = str(self.folder) + "/"
        ids = self._container_ids()
        found: dict[int, str] = {}
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                cgroups = (proc / "cgroup").read_text()
                pid = int(proc.name)
                if pid == os.getpid():
                    continue
                if mine in cmd or any(f"/docker/{cid}" in cgroups for cid in ids):
                    found[pid] = cmd.strip()[:120]
        return sorted(found.items())

    def _container_ids(self) -> set[str]:
        return {p.name for p in (self.folder / "data" / "containers").glob("*")}

    def _leftover_mounts(self) -> list[str]:
        mine = str(self.folder) + "/"
        with open("/proc/self/mountinfo") as handle:
            points = [line.split()[4] for line in handle]
        return sorted((p for p in points if p.startswith(mine)), key=len, reverse=True)
