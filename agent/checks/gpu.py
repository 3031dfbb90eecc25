"""gpu.*: the NVIDIA GPUs on the PCI bus, their driver, their health, and CUDA's device nodes.

All four read one inventory (`inventory(ctx)`), which docker.* reads too.
"""

from __future__ import annotations

import stat
from pathlib import Path

from agent import gpu
from agent.checks.base import Check, CheckSpec, DoctorContext, Status

NO_GPU = "no NVIDIA GPU on this machine"
NO_GPU_DETAIL = (
    "vLLM needs an NVIDIA GPU: the stack cannot serve a model here. "
    "Nothing under /sys/bus/pci is an NVIDIA display or 3D controller"
)
NO_GPU_FIX = "to serve models, deploy the StackScript on a Linode GPU plan"
DRIVER_BROKEN = "skipped: the NVIDIA driver is not working (see gpu.driver)"
BOOTSTRAP_FIX = (
    "run `sandbox-agent bootstrap`: it installs the NVIDIA driver; "
    "reboot when it asks (`sudo reboot`)"
)
UVM_NODES = ("dev/nvidia-uvm", "dev/nvidia-uvm-tools")
GIB = 1024**3

FIXES: dict[gpu.ProblemKind, str] = {
    "lost": "reboot (`sudo reboot`); if the GPU is lost again after that, the host needs "
    "service: contact Linode support with the GPU's UUID",
    "ecc": "reboot (`sudo reboot`) so the driver retires the failing memory; if uncorrected "
    "errors come back, the card is failing: contact Linode support with the GPU's UUID",
    "hot": "look for a runaway process with `nvidia-smi`; if the GPU stays this hot while idle, "
    "contact Linode support (cooling)",
    "memory": "run `nvidia-smi -q` to see what the driver reports; reboot if it shows errors",
    "error": "run `nvidia-smi -q` to see what the driver reports; reboot if it shows errors",
}


def inventory(ctx: DoctorContext) -> gpu.GpuInventory:
    """The GPU inventory, read once per doctor run whoever asks first."""
    return ctx.gpu_inventory()


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def describe(g: gpu.Gpu) -> str:
    """One line for a person: what the GPU is and how it is doing."""
    head = f"GPU {g.index} {g.name or 'unknown model'} {g.uuid or '(UUID unknown)'}"
    if g.pci_bus_id:
        head += f" at {g.pci_bus_id}"
    if g.lost:
        return f"{head}: lost"
    parts = []
    if g.memory_total is not None and g.memory_used is not None:
        parts.append(f"{_gib(g.memory_used)} of {_gib(g.memory_total)} used")
    if g.temperature_c is not None:
        parts.append(f"{g.temperature_c} °C")
    if g.compute_capability:
        parts.append("compute {}.{}".format(*g.compute_capability))
    if g.ecc_uncorrected is None:
        parts.append("no ECC")
    else:
        parts.append(f"ECC errors: {g.ecc_uncorrected} uncorrected, {g.ecc_corrected} corrected")
    return f"{head}: {', '.join(parts)}"


def check_pci(ctx: DoctorContext) -> Check:
    inv = inventory(ctx)
    if not inv.pci:
        if inv.gpus:
            return Check(
                "gpu.pci",
                "ok",
                f"the driver sees {len(inv.gpus)} NVIDIA GPU(s)",
                detail="none is listed under /sys/bus/pci/devices; found through the driver",
            )
        if inv.state in ("no_gpu", "ok"):
            return Check("gpu.pci", "skip", NO_GPU, detail=NO_GPU_DETAIL, fix=NO_GPU_FIX)
        return Check(
            "gpu.pci",
            "warn",
            "no NVIDIA GPU is listed on the PCI bus, yet a driver is installed",
            detail=inv.detail,
            fix="see gpu.driver",
        )
    detail = "; ".join(
        f"{p.address} device 0x{p.device_id:04x}, kernel driver: {p.driver or 'none'}"
        for p in inv.pci
    )
    nouveau = [p.address for p in inv.pci if p.driver == "nouveau"]
    vfio = [p.address for p in inv.pci if p.driver == "vfio-pci"]
    if nouveau:
        return Check(
            "gpu.pci",
            "warn",
            f"{', '.join(nouveau)} is driven by nouveau, not the NVIDIA driver",
            detail=f"nouveau cannot run CUDA, and the NVIDIA driver cannot load while it holds "
            f"the card. {detail}",
            fix="run `sandbox-agent bootstrap` to install the NVIDIA driver (it keeps nouveau "
            "away), then reboot (`sudo reboot`)",
        )
    if vfio:
        return Check(
            "gpu.pci",
            "warn",
            f"{', '.join(vfio)} is reserved for virtual machines (vfio-pci)",
            detail=f"a GPU bound to vfio-pci cannot be used by this system. {detail}",
            fix="remove the GPU from vfio-pci (vfio-pci.ids on the kernel command line or in "
            "/etc/modprobe.d), then reboot",
        )
    return Check("gpu.pci", "ok", f"{len(inv.pci)} NVIDIA GPU(s) on the PCI bus", detail=detail)


def check_driver(ctx: DoctorContext) -> Check:
    inv = inventory(ctx)
    state = inv.state
    if state == "no_gpu":
        return Check("gpu.driver", "skip", f"skipped: {NO_GPU}", detail=NO_GPU_DETAIL)
    if state == "ok":
        cuda = f" (CUDA {inv.cuda_driver_version})" if inv.cuda_driver_version else ""
        facts = [f"NVML {inv.nvml_version or 'version unknown'}"]
        if inv.kernel_module_version:
            facts.append(f"kernel module {inv.kernel_module_version}")
        return Check(
            "gpu.driver",
            "ok",
            f"NVIDIA driver {inv.driver_version or '(version unknown)'} is loaded{cuda}",
            detail="; ".join(facts),
        )
    summary, fix = {
        "no_library": ("an NVIDIA GPU is here but its driver is not installed", BOOTSTRAP_FIX),
        "driver_not_loaded": (
            "the NVIDIA driver is installed but not loaded",
            "reboot to load it (`sudo reboot`); if it still does not load, run `sandbox-agent "
            "bootstrap` to reinstall it for the running kernel",
        ),
        "mismatch": (
            "the NVIDIA driver was updated but the old version is still loaded",
            "reboot to load the new driver (`sudo reboot`)",
        ),
        "no_permission": (
            "not allowed to talk to the NVIDIA driver",
            "run doctor as root: `sudo sandbox-agent doctor`",
        ),
    }.get(
        state,
        (
            "the NVIDIA driver does not answer",
            "run `nvidia-smi` to see the driver's own message; reboot (`sudo reboot`) if it "
            "reports the GPU or the driver in a bad state",
        ),
    )
    return Check("gpu.driver", "fail", summary, detail=inv.detail, fix=fix)


def _needs_driver(check_id: str, inv: gpu.GpuInventory) -> Check | None:
    """The skip of a check that only means something once the driver answers."""
    if inv.state == "no_gpu":
        return Check(check_id, "skip", f"skipped: {NO_GPU}", detail=NO_GPU_DETAIL)
    if inv.state != "ok":
        return Check(check_id, "skip", DRIVER_BROKEN, detail=inv.detail)
    return None


def check_devices(ctx: DoctorContext) -> Check:
    inv = inventory(ctx)
    if skipped := _needs_driver("gpu.devices", inv):
        return skipped
    lines = "; ".join(describe(g) for g in inv.gpus)
    if not inv.gpus:
        return Check(
            "gpu.devices",
            "fail",
            "the NVIDIA driver is loaded but sees no GPU",
            detail=inv.detail,
            fix="reboot (`sudo reboot`); if it still sees none, contact Linode support",
        )
    on_bus = sum(p.driver == "nvidia" for p in inv.pci)
    issues = [(p.severity, p.message, FIXES[p.kind]) for p in gpu.problems(inv)]
    if on_bus > len(inv.gpus):
        issues.insert(
            0,
            (
                "fail",
                f"{on_bus} GPUs are on the PCI bus but the driver sees only {len(inv.gpus)}",
                "reboot (`sudo reboot`); if a GPU is still missing, the host needs service: "
                "contact Linode support",
            ),
        )
    if issues:
        worst: Status = "fail" if any(severity == "fail" for severity, _, _ in issues) else "warn"
        summary = issues[0][1]
        if len(issues) > 1:
            summary += f" (and {len(issues) - 1} more problem(s))"
        return Check(
            "gpu.devices",
            worst,
            summary,
            detail="; ".join([*(message for _, message, _ in issues[1:]), lines]),
            fix="; ".join(dict.fromkeys(fix for _, _, fix in issues)),
        )
    names = sorted({g.name or "unknown model" for g in inv.gpus})
    if len(names) == 1 and inv.gpus[0].memory_total is not None:
        what = f"{len(inv.gpus)} × {names[0]} ({_gib(inv.gpus[0].memory_total)})"
    else:
        what = f"{len(inv.gpus)} GPUs: {', '.join(names)}"
    return Check("gpu.devices", "ok", f"{what}, healthy", detail=lines)


def check_uvm(ctx: DoctorContext) -> Check:
    inv = inventory(ctx)
    if skipped := _needs_driver("gpu.uvm", inv):
        return skipped
    missing = [f"/{name}" for name in UVM_NODES if not _is_char_device(ctx.root / name)]
    if not missing:
        return Check(
            "gpu.uvm",
            "ok",
            "CUDA's device nodes /dev/nvidia-uvm and /dev/nvidia-uvm-tools are present",
        )
    verb = "is" if len(missing) == 1 else "are"
    return Check(
        "gpu.uvm",
        "fail",
        f"{' and '.join(missing)} {verb} missing: CUDA cannot start",
        detail="the nvidia-uvm kernel module creates them; the NVIDIA Container Toolkit hands "
        "them to every GPU container",
        fix="load the module and create the nodes: `sudo modprobe nvidia-uvm && sudo "
        "nvidia-modprobe -u -c=0` (to load it at every boot, add nvidia-uvm to "
        "/etc/modules-load.d/nvidia-uvm.conf)",
    )


def check_driver_vs_image(ctx: DoctorContext) -> Check:
    inv = inventory(ctx)
    if skipped := _needs_driver("gpu.driver_vs_image", inv):
        return skipped
    fit = gpu.driver_fit(ctx.settings.images.vllm, inv.driver_version, inv.cuda_driver_version)
    if fit.fits is None:
        return Check("gpu.driver_vs_image", "skip", fit.summary)
    if fit.fits:
        return Check("gpu.driver_vs_image", "ok", fit.summary)
    return Check(
        "gpu.driver_vs_image",
        "fail",
        fit.summary,
        detail=fit.detail,
        fix=fit.fix("set images.vllm to the CUDA 12.9 build ({image})"),
    )


def _is_char_device(path: Path) -> bool:
    try:
        return stat.S_ISCHR(path.stat().st_mode)
    except OSError:
        return False


# NVML's first start can take seconds per GPU on a box without the persistence daemon.
CHECKS: list[CheckSpec] = [
    CheckSpec("gpu.pci", check_pci, timeout=30.0),
    CheckSpec("gpu.driver", check_driver, timeout=30.0),
    CheckSpec("gpu.devices", check_devices, timeout=30.0),
    CheckSpec("gpu.uvm", check_uvm, timeout=30.0),
    CheckSpec("gpu.driver_vs_image", check_driver_vs_image, timeout=30.0),
]
