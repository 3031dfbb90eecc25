"""A fake first-boot box behind the one command runner, for what cannot run here: apt on
Ubuntu (and Debian's apt installing NVIDIA's packages), systemctl on a box without systemd as
PID 1, modprobe of a driver there is no GPU for, a reboot. (The agent reaches the Linode
metadata service and the apt keys over HTTP, not through commands: tests/fakes/web_peers.py
serves them, and a curl from the agent is an UnexpectedCommand here.)

Its state (installed packages, enabled units, whether the nvidia module loads) lives in a JSON
file, so it survives the agent being killed with SIGKILL and is shared with a subprocess
(tests/integration/bootstrap_driver.py). Every call is appended to `calls.jsonl`. A command
it has no answer for raises UnexpectedCommand, as the autouse guard does.

Per OS, `OS_TABLES` holds what the agent must install there: the one table per OS.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import proc

OS_RELEASE = {
    "ubuntu-22.04": 'ID=ubuntu\nVERSION_ID="22.04"\nPRETTY_NAME="Ubuntu 22.04.5 LTS"\n',
    "ubuntu-24.04": 'ID=ubuntu\nVERSION_ID="24.04"\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n',
    "debian-12": 'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
}
# What one apt transaction installs on each OS when driver, Docker and the toolkit are all
# missing on a Turing-or-newer GPU (headers for the running kernel end the driver's list).
OS_TABLES: dict[str, dict[str, Any]] = {
    "ubuntu-22.04": {
        "driver": ["nvidia-driver-580-server-open"],
        "repos": {"docker": "https://download.docker.com/linux/ubuntu jammy stable"},
    },
    "ubuntu-24.04": {
        "driver": ["nvidia-driver-580-server-open"],
        "repos": {"docker": "https://download.docker.com/linux/ubuntu noble stable"},
    },
    "debian-12": {
        "driver": ["nvidia-driver-pinning-580", "nvidia-open"],
        "repos": {
            "docker": "https://download.docker.com/linux/debian bookworm stable",
            "cuda-debian12": "https://developer.download.nvidia.com/compute/cuda/repos/debian12/",
        },
    },
}
DOCKER_PACKAGES = [
    "docker-ce",
    "docker-ce-cli",
    "containerd.io",
    "docker-buildx-plugin",
    "docker-compose-plugin",
]


class UnexpectedCommand(BaseException):
    pass


@dataclass
class FakeBox:
    folder: Path  # holds state.json and calls.jsonl

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.state_file.exists():
            self.save(
                {
                    "installed": [],
                    "enabled": [],
                    "active": [],
                    "modprobe_nvidia_rc": 0,
                    "on_modprobe": [],  # [src, dst] files copied when nvidia loads (the fake library)
                }
            )

    @property
    def state_file(self) -> Path:
        return self.folder / "state.json"

    def load(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text())

    def save(self, data: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.state_file)

    def set(self, **changes: Any) -> None:
        with self._locked():
            data = self.load()
            data.update(changes)
            self.save(data)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One command at a time changes the box (threads and processes alike)."""
        with open(self.folder / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def calls(self) -> list[str]:
        path = self.folder / "calls.jsonl"
        if not path.exists():
            return []
        return [" ".join(json.loads(line)) for line in path.read_text().splitlines() if line]

    def installs(self) -> list[str]:
        return [c for c in self.calls() if re.search(r"^apt-get .* install ", c)]

    def __call__(self, argv: Any, **kw: Any) -> proc.Completed:
        argv = tuple(argv)
        with open(self.folder / "calls.jsonl", "a") as log:
            fcntl.flock(log, fcntl.LOCK_EX)
            log.write(json.dumps(list(argv)) + "\n")
        with self._locked():
            return self._answer(argv)

    def _answer(self, argv: tuple[str, ...]) -> proc.Completed:
        st = self.load()

        def ok(out: str = "", rc: int = 0, err: str = "") -> proc.Completed:
            return proc.Completed(argv, rc, out, err)

        line = " ".join(argv)
        cmd = argv[0]
        if cmd == "apt-get":
            if "DPkg::Lock::Timeout=900" not in line:
                return ok(rc=100, err="E: Could not get lock /var/lib/dpkg/lock-frontend")
            if argv[-1] == "update":
                return ok("Reading package lists...")
            if "install" in argv:
                names = list(argv[argv.index("install") + 1 :])
                st["installed"] = sorted(set(st["installed"]) | set(names))
                self.save(st)
                return ok("Setting up ...")
        if cmd == "dpkg-query":
            names = argv[3:]
            lines = [
                "install ok installed" if n in st["installed"] else "unknown ok not-installed"
                for n in names
            ]
            rc = 0 if all(n in st["installed"] for n in names) else 1
            return ok("\n".join(lines) + "\n", rc)
        if cmd == "cloud-init":
            return ok("status: done")
        if cmd == "systemctl":
            return self._systemctl(argv, st, ok)
        if cmd == "modprobe":
            if argv[1:] == ("nvidia",):
                rc = st["modprobe_nvidia_rc"]
                if rc == 0:
                    st["loaded"] = True
                    self.save(st)
                for src, dst in st.get("on_modprobe") or []:  # the driver's files appear
                    if rc == 0:
                        shutil.copy(src, dst)
                return ok(
                    rc=rc,
                    err=""
                    if rc == 0
                    else "modprobe: ERROR: could not insert 'nvidia': Device or resource busy",
                )
            return ok()
        if cmd in ("update-initramfs", "nvidia-modprobe", "nvidia-ctk"):
            if cmd == "nvidia-ctk":
                st["runtime_configured"] = True
                self.save(st)
            return ok()
        raise UnexpectedCommand(f"the fake box has no answer for {line!r}")

    def _systemctl(self, argv: tuple[str, ...], st: dict[str, Any], ok: Any) -> proc.Completed:
        verb, units = argv[1], [a for a in argv[2:] if not a.startswith("--")]
        if verb in ("daemon-reload", "reboot"):
            return ok()
        if verb in ("enable", "disable", "start", "restart"):
            for unit in units:
                if verb == "enable":
                    st["enabled"] = sorted(set(st["enabled"]) | {unit})
                if verb == "disable":
                    st["enabled"] = sorted(set(st["enabled"]) - {unit})
                if verb in ("start", "restart") or "--now" in argv:
                    st["active"] = sorted(set(st["active"]) | {unit})
            self.save(st)
            return ok()
        if verb == "is-enabled":
            return ok(rc=0 if units[0] in st["enabled"] else 1)
        if verb == "is-active":
            return ok(rc=0 if units[0] in st["active"] else 3)
        raise UnexpectedCommand(f"the fake box has no answer for systemctl {verb}")


def lay_out_host(root: Path, os_name: str) -> Path:
    """A host tree: os-release, a machine id, a boot id, meminfo."""
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text(OS_RELEASE[os_name])
    (root / "proc/sys/kernel/random").mkdir(parents=True, exist_ok=True)
    (root / "proc/sys/kernel/random/boot_id").write_text("boot-1\n")
    (root / "proc/meminfo").write_text("MemTotal:       65536000 kB\nMemAvailable:   60000000 kB\n")
    return root


APT_REPOS = ("docker", "cuda-debian12", "nvidia-container-toolkit")


def lay_out_key_bundle(folder: Path, names: tuple[str, ...] = APT_REPOS) -> Path:
    """An offline bundle holding only the apt repositories' keys (apt-keys/<name>.asc): the
    box cannot download them here, and a bundle is how an offline install pins them."""
    from tests.fakes.web_peers import TEST_KEY_ASC

    (folder / "apt-keys").mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / "apt-keys" / f"{name}.asc").write_bytes(TEST_KEY_ASC)
    return folder
