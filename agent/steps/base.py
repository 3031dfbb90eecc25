"""What a bootstrap step is: `META` (id, needs, when it runs again), `check(ctx)` and `apply(ctx)`.

`check` only reads: it returns `Done(detail)` (skipped ones say why) or `Todo(reason)`, and
`bootstrap --plan` is nothing but every check. `apply` changes the box and is idempotent;
the runner checks again after it, so a step is done only when the box says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from agent import engine, gpu, host, linode
from agent.errors import AgentError
from agent.facts import Facts
from agent.markers import BootState
from agent.settings import Settings
from agent.steps.apt import AptBatch

if TYPE_CHECKING:
    from agent.engine import DockerClient

T = TypeVar("T")
# always: checked on every run; per-boot: its marker holds for one boot only (a GPU
# verified before a reboot is verified again after it).
Again = Literal["always", "per-boot"]
Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class StepMeta:
    id: str
    needs: tuple[str, ...] = ()
    again: Again = "always"
    title: str = ""


@dataclass(frozen=True)
class Done:
    detail: str
    skipped: bool = False


@dataclass(frozen=True)
class Todo:
    reason: str


Outcome = Done | Todo


class Step(Protocol):
    META: StepMeta

    def check(self, ctx: StepContext) -> Outcome: ...

    def apply(self, ctx: StepContext) -> str | None: ...


class StepFailed(AgentError):
    """A step could not do its work; the message says why and the fix what to do."""


class RebootNeeded(AgentError):
    """The box must reboot before this step can finish; the runner resumes after it."""


def _quiet(_step: str, _line: str) -> None:
    pass


@dataclass
class StepContext:
    """What steps share: settings, where the box's files are, this instance's state, and
    facts read once."""

    settings: Settings
    state: BootState
    root: Path = Path("/")
    token: str | None = None
    bundle: Path | None = None
    config_path: Path | None = None  # where the settings were saved, when not the default
    progress: Progress = _quiet
    tty: bool = False
    is_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    # how the engine is reached: the settings' DOCKER_HOST; tests of a box whose engine is
    # still to be installed pass their own
    connect: Callable[[], DockerClient] | None = None
    boot_id: str = ""
    apt: AptBatch = field(default_factory=AptBatch)
    # how the GPUs are read (NVML); a seam for tests of boxes whose driver cannot exist here
    read_gpus: Callable[[Path], gpu.GpuInventory] = gpu.read_inventory
    # where the Linode metadata service is; tests point it at a local one
    metadata: str = linode.METADATA
    facts: Facts = field(default_factory=Facts)

    def __post_init__(self) -> None:
        if not self.boot_id:
            try:
                self.boot_id = (self.root / "proc/sys/kernel/random/boot_id").read_text().strip()
            except OSError:
                self.boot_id = "unknown"

    def client(self) -> DockerClient:
        """A client of the engine that answers, or EngineUnavailable."""
        if self.connect is not None:
            return self.connect()
        return engine.connect(self.settings.docker.host)

    def once(self, name: str, compute: Callable[[], T]) -> T:
        return self.facts.once(name, compute)

    def forget(self, name: str) -> None:
        self.facts.forget(name)

    def os_release(self) -> host.OsRelease:
        return self.once("os", lambda: host.os_release(self.root))

    def pci(self) -> list[gpu.PciDevice]:
        return self.once("pci", lambda: gpu.pci_devices(self.root))

    def inventory(self, *, fresh: bool = False) -> gpu.GpuInventory:
        if fresh:
            self.forget("inventory")
        return self.once("inventory", lambda: self.read_gpus(self.root))

    def path(self, box_path: str | Path) -> Path:
        """A path of the box, under `root`."""
        return host.under(self.root, Path(box_path))

    def wants_gpu(self) -> str | None:
        """None when the stack uses GPUs here; else why it does not (a skip reason)."""
        if self.settings.gpus == "none":
            return "gpus is 'none' in the settings"
        if not self.pci():
            return "no NVIDIA GPU on the PCI bus"
        return None


def check_steps(steps: Sequence[Step], outside: frozenset[str] = frozenset()) -> None:
    """The steps' META as the runner needs it, checked once (cloud-init validates module meta
    at import): unique ids, every need a step of the same list (or of `outside`: real steps a
    run over a few of them leaves out), no cycle. A need that names no step would otherwise
    wait for nothing and be taken as done."""
    ids = [s.META.id for s in steps]
    if len(ids) != len(set(ids)):
        raise ValueError(f"step ids repeat: {sorted(i for i in ids if ids.count(i) > 1)}")
    for step in steps:
        unknown = [n for n in step.META.needs if n not in ids and n not in outside]
        if unknown:
            raise ValueError(f"step {step.META.id} needs {unknown}, which are not steps")
    done: set[str] = set()
    todo = {s.META.id: set(s.META.needs) - outside for s in steps}
    while todo:
        ready = [i for i, needs in todo.items() if needs <= done]
        if not ready:
            raise ValueError(f"steps wait for each other in a cycle: {sorted(todo)}")
        for i in ready:
            done.add(i)
            del todo[i]
