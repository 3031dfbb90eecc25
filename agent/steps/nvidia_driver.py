"""nvidia-driver: a driver new enough for the pinned vLLM image, loaded without a reboot when
that is safe, else after one.

Skipped with its reason when no NVIDIA GPU is on the PCI bus; a working driver (NVML answers)
is never replaced, so one too old for the configured vLLM image is refused here, first, with
doctor's words (agent.gpu.cuda), not at the stack's gate an hour later. CUDA 13 images (vLLM
>= 0.20) need the 580 branch or newer: on Debian 12 that means NVIDIA's CUDA repository
(Debian's own is 535). Open kernel modules for Turing and
newer (required on Blackwell), the proprietary ones before.

No-reboot path, as Linode's Marketplace does it: blacklist nouveau, unbind the GPUs from it in
sysfs, `modprobe nvidia` and `nvidia_uvm`, bind them to nvidia. When the module still cannot
load (nouveau busy, a kernel that needs the new initramfs) the step asks for a reboot.
"""

from __future__ import annotations

import contextlib
import platform

from agent import gpu, log, proc
from agent.files import atomic_write
from agent.steps import apt
from agent.steps.base import Done, Outcome, RebootNeeded, StepContext, StepFailed, StepMeta, Todo

META = StepMeta("nvidia-driver", needs=("preflight",), title="NVIDIA driver")
BRANCH = gpu.CUDA13_DRIVER  # CUDA 13.0 needs 580 or newer
FIRST_TURING = 0x1E00  # PCI device ids below this are Volta and older: no open modules
BLACKLIST = "/etc/modprobe.d/blacklist-nouveau.conf"
CUDA_REPO = apt.AptRepo(
    "cuda-debian12",
    "https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/3bf863cc.pub",
    "deb [signed-by={keyring}] https://developer.download.nvidia.com/compute/cuda/repos/"
    "debian12/x86_64/ /",
)
NOT_LOADED = ("driver_not_loaded", "mismatch")


def open_modules(ctx: StepContext) -> bool:
    return all(p.device_id >= FIRST_TURING for p in ctx.pci())


def want(ctx: StepContext) -> apt.AptWant:
    release = ctx.os_release()
    headers = f"linux-headers-{platform.release()}"
    if release.id == "ubuntu":
        flavour = "-open" if open_modules(ctx) else ""
        return apt.AptWant((f"nvidia-driver-{BRANCH}-server{flavour}", headers))
    # NVIDIA's CUDA repository for Debian 12: the pinning package holds the branch.
    driver = "nvidia-open" if open_modules(ctx) else "cuda-drivers"
    return apt.AptWant((f"nvidia-driver-pinning-{BRANCH}", driver, headers), (CUDA_REPO,))


def check(ctx: StepContext) -> Outcome:
    pci = ctx.pci()
    if not pci:
        return Done("skipped: no NVIDIA GPU on the PCI bus", skipped=True)
    inv = ctx.inventory(fresh=True)
    if inv.state == "ok":
        too_old(ctx, inv)
        cuda = f" (CUDA {inv.cuda_driver_version})" if inv.cuda_driver_version else ""
        return Done(f"NVIDIA driver {inv.driver_version} is loaded{cuda}")
    if inv.state in NOT_LOADED:
        return Todo(f"the NVIDIA driver is installed but not loaded ({inv.detail}): load it")
    if inv.state == "no_library":
        kind = "open" if open_modules(ctx) else "proprietary"
        return Todo(
            f"{len(pci)} NVIDIA GPU(s) and no driver: install the {BRANCH} branch ({kind} "
            "kernel modules)"
        )
    raise StepFailed(
        f"the NVIDIA driver does not work: {inv.detail}",
        fix="run `nvidia-smi` for the driver's own words; reboot (`sudo reboot`) and run "
        "`sandbox-agent bootstrap` again",
    )


def too_old(ctx: StepContext, inv: gpu.GpuInventory) -> None:
    """StepFailed when the working driver cannot run the vLLM image the stack would start."""
    if ctx.settings.gpus == "none":
        return  # vLLM gets no GPU: its CUDA does not meet this driver
    image = ctx.settings.images.vllm
    fit = gpu.driver_fit(image, inv.driver_version, inv.cuda_driver_version)
    if fit.fits is False:
        raise StepFailed(
            f"{fit.summary}; the bootstrap never replaces a working driver",
            fix=fit.fix(
                "run `VLLM_IMAGE={image} sandbox-agent bootstrap` (the CUDA 12.9 build of the "
                "same release)"
            ),
        )


def apply(ctx: StepContext) -> str | None:
    inv = ctx.inventory(fresh=True)
    if inv.state == "no_library":
        ctx.apt.install(ctx, META.id, want(ctx))
    load(ctx)
    return None


def load(ctx: StepContext) -> None:
    """Load the module now; RebootNeeded when only a reboot can."""
    atomic_write(ctx.path(BLACKLIST), "blacklist nouveau\noptions nouveau modeset=0\n")
    held = [p for p in ctx.pci() if p.driver == "nouveau"]
    for device in held:
        with contextlib.suppress(OSError):
            ctx.path("/sys/bus/pci/drivers/nouveau/unbind").write_text(device.address)
    if held:
        proc.run(["modprobe", "-r", "nouveau"], check=False, timeout=60)
    loaded = proc.run(["modprobe", "nvidia"], check=False, timeout=120)
    if loaded.returncode != 0:
        # The blacklist must reach the initramfs, or nouveau takes the GPU again at boot.
        proc.run(["update-initramfs", "-u"], check=False, timeout=600)
        why = (loaded.stderr or loaded.stdout).strip().splitlines()[-1:] or ["no message"]
        raise RebootNeeded(
            f"the NVIDIA kernel module cannot load before a reboot: {why[0]}",
            fix="the box reboots and `sandbox-agent-bootstrap.service` resumes; nothing to do",
        )
    proc.run(["modprobe", "nvidia_uvm"], check=False, timeout=60)
    proc.run(["nvidia-modprobe", "-u", "-c=0"], check=False, timeout=60)
    ctx.forget("pci")
    for device in ctx.pci():
        if device.driver is None:
            with contextlib.suppress(OSError):
                ctx.path("/sys/bus/pci/drivers/nvidia/bind").write_text(device.address)
    ctx.forget("pci")
    inv = ctx.inventory(fresh=True)
    log.get("bootstrap").info("driver.loaded", state=inv.state, detail=inv.detail)
    if inv.state in NOT_LOADED:
        raise RebootNeeded(
            f"the NVIDIA driver is installed but NVML says: {inv.detail}",
            fix="the box reboots and `sandbox-agent-bootstrap.service` resumes; nothing to do",
        )
