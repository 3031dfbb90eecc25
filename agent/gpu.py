"""NVIDIA GPUs: what the PCI bus shows, and what the driver says about them through NVML.

The PCI bus (sysfs) answers without any driver, so it tells "a GPU with no driver" apart
from "no GPU". NVML (nvidia-ml-py over libnvidia-ml.so.1) answers the rest. Every NVML
failure becomes a state of the inventory or a field of one GPU, never an exception: doctor,
bootstrap and the watchdog all read a lost GPU or a driver mismatch as data.
MIG is not handled: NVML reports the whole card's memory while vLLM sees only its MIG slice,
so the fit would overstate it. Linode plans do not enable MIG; a box that does should set
model.tensor_parallel_size and model.max_model_len by hand.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

NVIDIA_VENDOR = 0x10DE
# PCI classes of a GPU: 0x0300 VGA controller, 0x0302 3D controller (data-centre cards).
# The card's HDMI audio function (0x0403) is not a GPU.
GPU_CLASSES = (0x0300, 0x0302)
MAX_TEMP_C = 85

State = Literal[
    "ok", "no_gpu", "no_library", "driver_not_loaded", "mismatch", "no_permission", "error"
]
ProblemKind = Literal["lost", "ecc", "hot", "memory", "error"]


@dataclass(frozen=True)
class PciDevice:
    address: str  # 0000:01:00.0
    device_id: int  # 0x2330
    class_code: int  # 0x030200
    driver: str | None  # nvidia, nouveau, vfio-pci, or None when no kernel driver is bound

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "device_id": f"0x{self.device_id:04x}",
            "class": f"0x{self.class_code:06x}",
            "driver": self.driver,
        }


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

    @property
    def memory_free(self) -> int | None:
        known = self.memory_total is not None and self.memory_used is not None
        return self.memory_total - self.memory_used if known else None  # type: ignore[operator]

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


@dataclass(frozen=True)
class GpuProblem:
    index: int
    uuid: str | None
    kind: ProblemKind
    severity: Literal["fail", "warn"]
    message: str


# --- the PCI bus -------------------------------------------------------------------------


def _read_hex(path: Path) -> int:
    return int(path.read_text().strip(), 16)


def pci_devices(root: Path = Path("/")) -> list[PciDevice]:
    """NVIDIA GPUs on the PCI bus, from sysfs under `root`, whether or not a driver is bound."""
    found: list[PciDevice] = []
    base = root / "sys/bus/pci/devices"
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return found
    for entry in entries:
        try:
            if _read_hex(entry / "vendor") != NVIDIA_VENDOR:
                continue
            class_code = _read_hex(entry / "class")
            if class_code >> 8 not in GPU_CLASSES:
                continue
            device_id = _read_hex(entry / "device")
        except (OSError, ValueError):
            continue
        try:
            driver: str | None = os.path.basename(os.readlink(entry / "driver"))
        except OSError:
            driver = None
        found.append(PciDevice(entry.name, device_id, class_code, driver))
    return found


def _kernel_module_version(root: Path) -> str | None:
    # "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build ..."
    try:
        text = (root / "proc/driver/nvidia/version").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("NVRM version:"):
            words = [w for w in line.split() if w[:1].isdigit() and "." in w]
            return words[0] if words else None
    return None


# --- NVML --------------------------------------------------------------------------------


class _Lost(Exception):
    """The GPU answered GPU_IS_LOST: stop asking it anything."""


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):  # older nvidia-ml-py returns bytes
        return value.decode(errors="replace")
    return None if value is None else str(value)


def _code(exc: Exception) -> int | None:
    return getattr(exc, "value", None)


def _error(exc: Exception) -> str:
    return f"{exc} (NVML error {_code(exc)})" if _code(exc) is not None else str(exc)


class _Fallback(Exception):
    """A newer NVML call is missing here: use the older one."""


class _Device:
    """Asks one GPU; NotSupported and missing functions read as None, other errors are kept."""

    def __init__(self, nv: Any, handle: Any) -> None:
        self.nv, self.handle = nv, handle
        self.errors: list[str] = []
        self.absent = {nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_FUNCTION_NOT_FOUND}
        self.older = {
            nv.NVML_ERROR_FUNCTION_NOT_FOUND,
            getattr(nv, "NVML_ERROR_ARGUMENT_VERSION_MISMATCH", 25),
        }

    def ask(self, name: str, *args: Any, fallback_on: set[int] | None = None, **kw: Any) -> Any:
        """The answer; None when unsupported; `_Fallback` when a newer call is not there."""
        fn = getattr(self.nv, name, None)
        if fn is None:  # an older nvidia-ml-py
            if fallback_on is not None:
                raise _Fallback
            return None
        try:
            return fn(self.handle, *args, **kw)
        except self.nv.NVMLError as exc:
            code = _code(exc)
            if code == self.nv.NVML_ERROR_GPU_IS_LOST:
                raise _Lost from exc
            if fallback_on is not None and code in fallback_on:
                raise _Fallback from exc
            if code not in self.absent:
                self.errors.append(f"{name}: {_error(exc)}")
            return None

    def memory(self) -> tuple[int | None, int | None]:
        # v2 splits the driver's reservation out of "used"; total - free is right in both
        try:
            info = self.ask(
                "nvmlDeviceGetMemoryInfo",
                version=getattr(self.nv, "nvmlMemory_v2", None) or 0x02000028,
                fallback_on=self.older | {self.nv.NVML_ERROR_NOT_SUPPORTED},
            )
        except _Fallback:
            info = self.ask("nvmlDeviceGetMemoryInfo")
        if info is None:
            return None, None
        return int(info.total), int(info.total) - int(info.free)

    def temperature(self) -> int | None:
        sensor = self.nv.NVML_TEMPERATURE_GPU
        try:
            value = self.ask("nvmlDeviceGetTemperatureV", sensor, fallback_on=self.older)
        except _Fallback:  # drivers before the V call; the old one is deprecated since
            value = self.ask("nvmlDeviceGetTemperature", sensor)
        return None if value is None else int(value)


def _read_gpu(nv: Any, index: int) -> Gpu:
    known: dict[str, Any] = {"index": index}
    try:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
    except nv.NVMLError as exc:
        if _code(exc) == nv.NVML_ERROR_GPU_IS_LOST:
            return Gpu(index, lost=True, error="GPU is lost: it no longer answers the driver")
        return Gpu(index, error=f"nvmlDeviceGetHandleByIndex: {_error(exc)}")
    dev = _Device(nv, handle)
    try:
        # the UUID first: the driver often still gives it for a GPU that is lost
        known["uuid"] = _text(dev.ask("nvmlDeviceGetUUID"))
        known["name"] = _text(dev.ask("nvmlDeviceGetName"))
        pci = dev.ask("nvmlDeviceGetPciInfo_v3")
        known["pci_bus_id"] = _text(pci.busId) if pci is not None else None
        known["memory_total"], known["memory_used"] = dev.memory()
        known["temperature_c"] = dev.temperature()
        cc = dev.ask("nvmlDeviceGetCudaComputeCapability")
        known["compute_capability"] = (int(cc[0]), int(cc[1])) if cc else None
        for field, kind in (("ecc_uncorrected", "UNCORRECTED"), ("ecc_corrected", "CORRECTED")):
            known[field] = dev.ask(
                "nvmlDeviceGetTotalEccErrors",
                getattr(nv, f"NVML_MEMORY_ERROR_TYPE_{kind}"),
                nv.NVML_VOLATILE_ECC,
            )
    except _Lost:
        return Gpu(**known, lost=True, error="GPU is lost: it no longer answers the driver")
    return Gpu(**known, error="; ".join(dev.errors) or None)


def _cuda_version(nv: Any) -> str | None:
    for name in ("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"):
        try:
            value = int(getattr(nv, name)())
        except (nv.NVMLError, AttributeError):
            continue
        return f"{value // 1000}.{value % 1000 // 10}"  # 12040 -> "12.4"
    return None


def _system(nv: Any, name: str) -> str | None:
    try:
        return _text(getattr(nv, name)())
    except (nv.NVMLError, AttributeError):
        return None


def _init_detail(state: State, message: str, pci: tuple[PciDevice, ...], kmod: str | None) -> str:
    where = ", ".join(f"{p.address} (driver: {p.driver or 'none'})" for p in pci)
    on_bus = f"NVIDIA GPU on the PCI bus: {where}" if pci else "no NVIDIA GPU on the PCI bus"
    if state == "no_gpu":
        return f"{on_bus}; NVML: {message}"
    if state == "mismatch" and kmod:
        return f"{message}; the loaded kernel module is {kmod}; {on_bus}"
    return f"{message}; {on_bus}"


_INIT_STATES: dict[str, State] = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": "no_library",
    "NVML_ERROR_DRIVER_NOT_LOADED": "driver_not_loaded",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": "mismatch",
    "NVML_ERROR_NO_PERMISSION": "no_permission",
}


def read_inventory(root: Path = Path("/")) -> GpuInventory:
    """The GPUs as the PCI bus and the driver see them. Never raises for an NVML failure."""
    pci = tuple(pci_devices(root))
    kmod = _kernel_module_version(root)
    try:
        import pynvml as nv  # heavy-ish and only needed here; keeps `--help` fast
    except ImportError as exc:
        return GpuInventory(
            "error", f"nvidia-ml-py is not installed: {exc}", pci=pci, kernel_module_version=kmod
        )
    try:
        nv.nvmlInit()
    except nv.NVMLError as exc:
        codes = {getattr(nv, name): state for name, state in _INIT_STATES.items()}
        state: State = codes.get(_code(exc), "error")
        if state in ("no_library", "driver_not_loaded") and not pci:
            state = "no_gpu"
        message = (
            "libnvidia-ml.so.1 (the NVIDIA driver's library) is not installed"
            if _code(exc) == nv.NVML_ERROR_LIBRARY_NOT_FOUND
            else f"NVML could not start: {_error(exc)}"
        )
        return GpuInventory(
            state, _init_detail(state, message, pci, kmod), pci=pci, kernel_module_version=kmod
        )
    try:
        return _read(nv, pci, kmod)
    except nv.NVMLError as exc:
        return GpuInventory(
            "error", f"NVML failed: {_error(exc)}", pci=pci, kernel_module_version=kmod
        )
    finally:
        with contextlib.suppress(nv.NVMLError):
            nv.nvmlShutdown()


def _read(nv: Any, pci: tuple[PciDevice, ...], kmod: str | None) -> GpuInventory:
    versions = {
        "driver_version": _system(nv, "nvmlSystemGetDriverVersion"),
        "cuda_driver_version": _cuda_version(nv),
        "nvml_version": _system(nv, "nvmlSystemGetNVMLVersion"),
        "pci": pci,
        "kernel_module_version": kmod,
    }
    try:
        count = int(nv.nvmlDeviceGetCount())
    except nv.NVMLError as exc:
        return GpuInventory(
            "error", f"the driver did not say how many GPUs it has: {_error(exc)}", **versions
        )
    gpus = tuple(_read_gpu(nv, i) for i in range(count))
    lost = sum(g.lost for g in gpus)
    detail = f"driver {versions['driver_version']}: {count} GPU(s)"
    if lost:
        detail += f", {lost} lost"
    return GpuInventory("ok", detail, gpus=gpus, **versions)


# --- health ------------------------------------------------------------------------------


def problems(inv: GpuInventory, *, max_temp_c: int = MAX_TEMP_C) -> list[GpuProblem]:
    """What is wrong with the GPUs the driver sees, failures first."""
    found: list[GpuProblem] = []
    for g in inv.gpus:

        def add(
            kind: ProblemKind, severity: Literal["fail", "warn"], what: str, g: Gpu = g
        ) -> None:
            found.append(GpuProblem(g.index, g.uuid, kind, severity, f"{g.label} {what}"))

        if g.lost:
            where = f"at {g.pci_bus_id} " if g.pci_bus_id else ""
            add("lost", "fail", f"{where}is lost: it no longer answers the driver")
            continue
        if g.ecc_uncorrected:
            add(
                "ecc",
                "fail",
                f"has {g.ecc_uncorrected} uncorrected ECC memory error(s) since the driver loaded",
            )
        if g.temperature_c is not None and g.temperature_c >= max_temp_c:
            add("hot", "warn", f"is at {g.temperature_c} °C (limit {max_temp_c} °C)")
        if g.memory_total is None:
            add("memory", "warn", "did not report its memory")
        if g.error:
            add("error", "warn", f"answered with errors: {g.error}")
    found.sort(key=lambda p: (p.severity != "fail", p.index))
    return found
