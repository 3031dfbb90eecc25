"""What a doctor check is, and the context the checks share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from agent import gpu
from agent.engine import SOCKET
from agent.facts import Facts
from agent.results import Record
from agent.settings import Settings

Status = Literal["ok", "warn", "fail", "skip"]
T = TypeVar("T")
GPU_INVENTORY = "gpu.inventory"


@dataclass(frozen=True)
class Check(Record):
    id: str
    status: Status
    summary: str
    detail: str = ""
    fix: str = ""


@dataclass
class DoctorContext:
    """What checks share: the settings, where the host's files are, and facts read once.

    `root` is `/` on a box; tests point it at a folder laid out like one (os-release,
    /sys/bus/pci, /dev/nvidia*) so the real code reads a real file tree.
    """

    settings: Settings
    root: Path = Path("/")
    docker_url: str = SOCKET
    facts: Facts = field(default_factory=Facts)

    def once(self, name: str, compute: Callable[[], T]) -> T:
        """`compute()` the first time any check asks for `name`; the same answer after."""
        return self.facts.once(name, compute)

    def known(self, name: str) -> Any | None:
        """A fact a check has already read, or None: a report shows it, never reads it anew."""
        return self.facts.known(name)

    def gpu_inventory(self) -> gpu.GpuInventory:
        """The GPU inventory, read once per doctor run whoever asks first."""
        return self.once(GPU_INVENTORY, lambda: gpu.read_inventory(self.root))


CheckFn = Callable[[DoctorContext], Check]


@dataclass(frozen=True)
class CheckSpec:
    id: str
    run: CheckFn
    timeout: float = 10.0
