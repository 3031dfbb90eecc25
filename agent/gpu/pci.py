"""NVIDIA GPUs on the PCI bus (sysfs), whether or not a driver is bound.

The bus answers without any driver, so it tells "a GPU with no driver" apart from "no GPU".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NVIDIA_VENDOR = 0x10DE
# PCI classes of a GPU: 0x0300 VGA controller, 0x0302 3D controller (data-centre cards).
# The card's HDMI audio function (0x0403) is not a GPU.
GPU_CLASSES = (0x0300, 0x0302)


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


def kernel_module_version(root: Path) -> str | None:
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
