"""apt on a first boot, and one transaction for every step that needs packages.

cloud-init may still hold the dpkg lock at first boot, and a plain apt-get fails at once on a
held lock: we wait for cloud-init, then let apt wait for the lock itself
(`DPkg::Lock::Timeout`). Noninteractive, and existing configuration files are kept.

Steps that install packages say what they want up front. Docker's packages go first in a
transaction of their own, because the engine unlocks the image pulls; the driver's and the
toolkit's then go together in one `apt-get install`, whichever of the two asks first, and the
other finds its packages in place.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent import host, log, proc
from agent.files import atomic_write
from agent.steps import apt_keys

LOCK_WAIT = 900  # seconds apt waits for another apt (unattended-upgrades at first boot)
APT_GET = (
    "apt-get",
    "-y",
    "-q",
    "-o",
    f"DPkg::Lock::Timeout={LOCK_WAIT}",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
)
ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
}
CODENAMES = {
    ("ubuntu", "22.04"): "jammy",
    ("ubuntu", "24.04"): "noble",
    ("debian", "12"): "bookworm",
}


class AptContext(Protocol):
    """What apt needs of a step's context (agent.steps.base.StepContext is one)."""

    @property
    def bundle(self) -> Path | None: ...

    def path(self, box_path: str | Path) -> Path: ...

    def os_release(self) -> host.OsRelease: ...


@dataclass(frozen=True)
class AptRepo:
    name: str  # the list file's name, /etc/apt/sources.list.d/<name>.list
    key_url: str  # an https URL of its OpenPGP key, kept as /etc/apt/keyrings/<name>.asc
    line: str  # the source line with {keyring} where signed-by goes

    @property
    def keyring(self) -> str:
        return f"/etc/apt/keyrings/{self.name}.asc"


@dataclass(frozen=True)
class AptWant:
    packages: tuple[str, ...]
    repos: tuple[AptRepo, ...] = ()
    group: str = "gpu"


# Transactions in this order: Docker's alone first (its engine unlocks the image pulls, the
# longest chain after the model), then the driver's and the toolkit's together.
GROUPS = ("engine", "gpu")


def installed(packages: tuple[str, ...] | list[str]) -> bool:
    """True when dpkg has every package installed."""
    if not packages:
        return True
    done = proc.run(
        ["dpkg-query", "-W", "-f=${Status}\n", *packages], check=False, env=ENV, timeout=30
    )
    lines = done.stdout.splitlines()
    return (
        done.returncode == 0
        and len(lines) == len(packages)
        and all(line.endswith(" installed") for line in lines)
    )


def wait_for_cloud_init() -> None:
    """`cloud-init status --wait` where cloud-init exists: it may still be installing."""
    with contextlib.suppress(proc.CommandNotFound):
        proc.run(["cloud-init", "status", "--wait"], check=False, env=ENV, timeout=1800)


@dataclass
class AptBatch:
    wants: dict[str, AptWant] = field(default_factory=dict)
    transactions: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _done: set[str] = field(default_factory=set)
    _waited: bool = False

    def want(self, step_id: str, want: AptWant) -> None:
        with self._lock:
            self.wants[step_id] = want

    def install(self, ctx: AptContext, step_id: str, want: AptWant) -> None:
        """Install what `step_id` wants, together with what the other steps of its group
        want; an earlier group's packages go first, whoever asks."""
        with self._lock:
            self.wants.setdefault(step_id, want)
            if step_id in self._done:
                return
            for group in GROUPS[: GROUPS.index(want.group) + 1]:
                batch = {
                    k: w for k, w in self.wants.items() if k not in self._done and w.group == group
                }
                if batch:
                    self._transaction(ctx, batch)

    def _transaction(self, ctx: AptContext, batch: dict[str, AptWant]) -> None:
        repos = {r.name: r for w in batch.values() for r in w.repos}
        packages = list(dict.fromkeys(p for w in batch.values() for p in w.packages))
        if not self._waited:
            wait_for_cloud_init()
            self._waited = True
        for repo in repos.values():
            add_repo(ctx, repo)
        proc.run([*APT_GET, "update"], env=ENV, timeout=1800, fix=_FIX)
        log.get("bootstrap").info("apt.install", packages=packages, steps=sorted(batch))
        proc.run([*APT_GET, "install", *packages], env=ENV, timeout=3600, fix=_FIX)
        self.transactions += 1
        self._done |= set(batch)


_FIX = "see /var/log/apt/term.log; run `sandbox-agent bootstrap` again once apt works"


def add_repo(ctx: AptContext, repo: AptRepo) -> None:
    """The repository's key (the bundle's, else downloaded; once) and its source list, signed-by
    that key only."""
    keyring = ctx.path(repo.keyring)
    if not keyring.exists():
        keyring.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        key = apt_keys.signing_key(repo.name, repo.key_url, ctx.bundle)
        atomic_write(keyring, key, mode=0o644)
    line = repo.line.format(keyring=repo.keyring) + "\n"
    atomic_write(ctx.path(f"/etc/apt/sources.list.d/{repo.name}.list"), line)


def codename(ctx: AptContext) -> str:
    release = ctx.os_release()
    return CODENAMES.get((release.id, release.version_id), release.version_id)
