"""NVML (nvidia-ml-py over libnvidia-ml.so.1): the GPUs as the driver sees them.

`NvmlSession` keeps NVML initialised for a long-running process (the watchdog reads every
tick without paying nvmlInit each time); `read_inventory` is one session, one read.
MIG is not handled: NVML reports the whole card's memory while vLLM sees only its MIG slice,
so the fit would overstate it. Linode plans do not enable MIG; a box that does should set
model.tensor_parallel_size and model.max_model_len by hand.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from agent.gpu.inventory import Gpu, GpuInventory, State
from agent.gpu.pci import PciDevice, kernel_module_version, pci_devices


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
        util = dev.ask("nvmlDeviceGetUtilizationRates")
        known["utilization"] = int(util.gpu) if util is not None else None
        power = dev.ask("nvmlDeviceGetPowerUsage")  # milliwatts
        known["power_w"] = round(int(power) / 1000, 1) if power is not None else None
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


class NvmlSession:
    """NVML initialised once, read as often as needed; `close()` shuts it down.

    A failed start is not remembered: the next `read()` tries again (a driver that loads
    after the agent started is found), and every read returns an inventory, never raises.
    """

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root
        self._nv: Any = None

    def __enter__(self) -> NvmlSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._nv is not None

    @property
    def library(self) -> Any:
        """The pynvml module while NVML is open (for agent.gpu.xid's event set), else None."""
        return self._nv

    def read(self) -> GpuInventory:
        """The GPUs as the PCI bus and the driver see them now."""
        pci = tuple(pci_devices(self.root))
        kmod = kernel_module_version(self.root)
        if self._nv is None:
            refused = self._open(pci, kmod)
            if refused is not None:
                return refused
        nv = self._nv
        try:
            return _read(nv, pci, kmod)
        except nv.NVMLError as exc:
            return GpuInventory(
                "error", f"NVML failed: {_error(exc)}", pci=pci, kernel_module_version=kmod
            )

    def close(self) -> None:
        if self._nv is not None:
            with contextlib.suppress(self._nv.NVMLError):
                self._nv.nvmlShutdown()
            self._nv = None

    def _open(self, pci: tuple[PciDevice, ...], kmod: str | None) -> GpuInventory | None:
        """None once NVML is started; else the inventory that says why it is not."""
        try:
            import pynvml as nv  # heavy-ish and only needed here; keeps `--help` fast
        except ImportError as exc:
            return GpuInventory(
                "error",
                f"nvidia-ml-py is not installed: {exc}",
                pci=pci,
                kernel_module_version=kmod,
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
        self._nv = nv
        return None


def read_inventory(root: Path = Path("/")) -> GpuInventory:
    """One read of the GPUs (NVML started and shut down again). Never raises for NVML."""
    with NvmlSession(root) as session:
        return session.read()


def _read(nv: Any, pci: tuple[PciDevice, ...], kmod: str | None) -> GpuInventory:
    versions: dict[str, Any] = {
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
