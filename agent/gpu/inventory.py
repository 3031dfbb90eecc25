"""What the driver says about the GPUs: one `Gpu` per device and the `GpuInventory`.

Every NVML failure becomes a state of the inventory or a field of one GPU, never an
exception: doctor, bootstrap and the watchdog all read a lost GPU or a driver mismatch as data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from agent.gpu.pci import PciDevice

State = Literal[
    "ok", "no_gpu", "no_library", "driver_not_loaded", "mismatch", "no_permission", "error"
]


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    memory_total: int | None = None  # bytes
    # bytes a new process cannot have: total - free, the driver's reservation included
    memory_used: int | None = None
    temperature_c: int | None = None
    compute_capability: tuple[int, int] | None = None
    ecc_uncorrected: int | None = None  # volatile (since the driver loaded); None: no ECC
    ecc_corrected: int | None = None
    lost: bool = False
    error: str | None = None
    utilization: int | None = None  # percent of the last sample period
    power_w: float | None = None

    @property
    def memory_free(self) -> int | None:
        if self.memory_total is None or self.memory_used is None:
            return None
        return self.memory_total - self.memory_used

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.uuid or 'UUID unknown'})"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        cc = self.compute_capability
        data["compute_capability"] = f"{cc[0]}.{cc[1]}" if cc else None
        data["memory_free"] = self.memory_free
        return data


@dataclass(frozen=True)
class GpuInventory:
    state: State
    detail: str
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # "13.0": the newest CUDA this driver runs
    nvml_version: str | None = None
    gpus: tuple[Gpu, ...] = ()
    pci: tuple[PciDevice, ...] = ()
    # from /proc/driver/nvidia/version: the kernel module actually loaded (differs from
    # driver_version's library after an upgrade without a reboot)
    kernel_module_version: str | None = None

    @property
    def healthy_gpus(self) -> tuple[Gpu, ...]:
        return tuple(g for g in self.gpus if not g.lost and g.error is None)

    @property
    def healthy_memory(self) -> list[int]:
        """Memory totals (bytes) of the healthy GPUs that reported it: what a model is fit on."""
        return [g.memory_total for g in self.healthy_gpus if g.memory_total]

    def as_dict(self) -> dict[str, Any]:
        names = ("state", "detail", "driver_version", "cuda_driver_version", "nvml_version")
        return {
            **{name: getattr(self, name) for name in names},
            "kernel_module_version": self.kernel_module_version,
            "gpus": [g.as_dict() for g in self.gpus],
            "pci": [p.as_dict() for p in self.pci],
        }
