"""NVIDIA GPUs: the PCI bus, the driver through NVML, and the health rules."""

from agent.gpu.cuda import CUDA13_DRIVER, DriverFit, driver_fit, image_cuda
from agent.gpu.inventory import Gpu, GpuInventory, State
from agent.gpu.nvml import NvmlSession, read_inventory
from agent.gpu.pci import PciDevice, kernel_module_version, pci_devices
from agent.gpu.plan import GpuPlan, choose, chosen, gpu_request
from agent.gpu.problems import MAX_TEMP_C, GpuProblem, ProblemKind, problems
from agent.gpu.xid import XidEvent, XidWatch

__all__ = [
    "CUDA13_DRIVER",
    "MAX_TEMP_C",
    "DriverFit",
    "Gpu",
    "GpuInventory",
    "GpuPlan",
    "GpuProblem",
    "NvmlSession",
    "PciDevice",
    "ProblemKind",
    "State",
    "XidEvent",
    "XidWatch",
    "choose",
    "chosen",
    "driver_fit",
    "gpu_request",
    "image_cuda",
    "kernel_module_version",
    "pci_devices",
    "problems",
    "read_inventory",
]
