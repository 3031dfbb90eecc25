"""The fake NVIDIA driver library: build it, describe its world, run code against it.

``fake_nvml.c`` (beside this file) compiles into a ``libnvidia-ml.so.1`` that the real
nvidia-ml-py loads by soname, so a subprocess started with ``LD_LIBRARY_PATH=<folder>`` and
``FAKE_NVML_SCENARIO=<file>`` meets it exactly as the agent meets the real driver on a box.
The C file's header documents the scenario format; ``write_scenario`` writes it.

As a script, for a person poking at it::

    python tests/fakes/nvml.py build [CACHE_DIR]          # prints the folder
    python tests/fakes/nvml.py scenario NAME FILE         # one of SCENARIOS
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "nvml" / "fake_nvml.c"
SONAME = "libnvidia-ml.so.1"
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / ".fake-nvml"
# The fake must never land where a real box's loader looks for the real library.
_SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/etc", "/opt", "/var/lib", "/bin", "/sbin")
_CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", f"-Wl,-soname,{SONAME}")

GIB = 1024**3
# NVML's error codes the scenarios use
NOT_SUPPORTED, NO_PERMISSION, DRIVER_NOT_LOADED = 3, 4, 9
FUNCTION_NOT_FOUND, GPU_IS_LOST, LIB_RM_VERSION_MISMATCH = 13, 15, 18


def _refuse_system_path(folder: Path) -> None:
    resolved = str(folder.resolve())
    for place in _SYSTEM_DIRS:
        if resolved == place or resolved.startswith(place + "/"):
            raise ValueError(f"the fake NVML library must not be built under {place}: {folder}")


def build_fake_nvml(cache_dir: Path | str = DEFAULT_CACHE) -> Path:
    """Compile the fake once per content hash; return the folder to put in LD_LIBRARY_PATH."""
    cache_dir = Path(cache_dir)
    _refuse_system_path(cache_dir)
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(_CFLAGS).encode()).hexdigest()[:16]
    folder = cache_dir / f"fake-nvml-{digest}"
    library = folder / SONAME
    if library.exists():
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two pytest processes never build at once
        if library.exists():
            return folder
        folder.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".so", delete=False) as tmp:
            out = Path(tmp.name)
        try:
            cc = [shutil.which("gcc") or "gcc", *_CFLAGS, "-o", str(out), str(SOURCE)]
            done = subprocess.run(cc, capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                raise RuntimeError(f"building the fake NVML failed: {done.stderr.strip()}")
            os.replace(out, library)
        finally:
            out.unlink(missing_ok=True)
    return folder


@dataclass(frozen=True)
class FakeGpu:
    """One device of the fake driver. None for temp/cc/ecc means NOT_SUPPORTED ("na")."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    bus: str = "00000000:01:00.0"
    pci_id: int = 0x233010DE
    mem_total: int | None = 80 * GIB
    mem_used: int = 0
    mem_reserved: int = 0
    temp: int | None = 35
    cc: tuple[int, int] | None = (9, 0)
    ecc_unc: int | None = 0
    ecc_cor: int | None = 0
    lost: bool | str = False  # True: lost after its handle; "handle": the handle fails too
    util: int | None = None  # percent; None: NOT_SUPPORTED
    power_mw: int | None = None

    def line(self) -> str:
        def na(value: object) -> str:
            return "na" if value is None else str(value)

        lost = self.lost if isinstance(self.lost, str) else int(self.lost)
        cc = f"{self.cc[0]}.{self.cc[1]}" if self.cc else "na"
        return (
            f'gpu name="{self.name}" uuid={self.uuid} bus={self.bus} pci_id=0x{self.pci_id:08x}'
            f" mem_total={na(self.mem_total)} mem_used={self.mem_used}"
            f" mem_reserved={self.mem_reserved} temp={na(self.temp)} cc={cc}"
            f" ecc_unc={na(self.ecc_unc)} ecc_cor={na(self.ecc_cor)} lost={lost}"
            f" util={na(self.util)} power_mw={na(self.power_mw)}"
        )


@dataclass(frozen=True)
class Scenario:
    gpus: tuple[FakeGpu, ...] = ()
    driver: str = "580.95.05"
    cuda: int = 13000
    init_error: int | None = None
    errors: Mapping[str, int] = field(default_factory=dict)  # function name -> NVML code

    def write(self, path: Path | str) -> Path:
        return write_scenario(
            path,
            self.gpus,
            driver=self.driver,
            cuda=self.cuda,
            init_error=self.init_error,
            errors=self.errors,
        )


def write_scenario(
    path: Path | str,
    gpus: Iterable[FakeGpu] = (),
    *,
    driver: str = "580.95.05",
    cuda: int = 13000,
    init_error: int | None = None,
    errors: Mapping[str, int] | None = None,
) -> Path:
    """Write the fake driver's world to `path`; returns it, for FAKE_NVML_SCENARIO."""
    lines = [
        "# fake NVML scenario (tests/fakes/nvml/fake_nvml.c documents the format)",
        f"driver {driver}",
        f"cuda {cuda}",
    ]
    if init_error is not None:
        lines.append(f"init_error {init_error}")
    lines += [f"error {fn} {code}" for fn, code in (errors or {}).items()]
    lines += [gpu.line() for gpu in gpus]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def fake_env(
    lib_dir: Path | None,
    scenario: Path | None,
    *,
    calls: Path | None = None,
    xids: Path | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """An environment for a subprocess that meets the fake (or, lib_dir None, no library)."""
    env = dict(os.environ if base is None else base)
    env.pop("LD_LIBRARY_PATH", None)
    if lib_dir is not None:
        env["LD_LIBRARY_PATH"] = str(lib_dir)
    for key, value in (
        ("FAKE_NVML_SCENARIO", scenario),
        ("FAKE_NVML_CALLS", calls),
        ("FAKE_NVML_XIDS", xids),
    ):
        env.pop(key, None)
        if value is not None:
            env[key] = str(value)
    return env


# --- a host tree laid out like a box's /sys, /proc and /dev, for `root=` ------------------


def add_pci_device(
    root: Path,
    address: str = "0000:01:00.0",
    *,
    vendor: int = 0x10DE,
    device: int = 0x2330,
    class_code: int = 0x030200,
    driver: str | None = "nvidia",
) -> Path:
    """A PCI function as sysfs shows it: a symlink under bus/pci/devices to the real folder,
    whose `driver` is a symlink to bus/pci/drivers/<name> when a kernel driver is bound."""
    real = root / "sys/devices/pci0000:00" / address
    real.mkdir(parents=True)
    for name, value in (
        ("vendor", f"0x{vendor:04x}"),
        ("device", f"0x{device:04x}"),
        ("class", f"0x{class_code:06x}"),
    ):
        (real / name).write_text(value + "\n")
    if driver is not None:
        (root / "sys/bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
        (real / "driver").symlink_to(f"../../../bus/pci/drivers/{driver}")
    links = root / "sys/bus/pci/devices"
    links.mkdir(parents=True, exist_ok=True)
    (links / address).symlink_to(f"../../../devices/pci0000:00/{address}")
    return real


def add_kernel_module(root: Path, version: str = "580.95.05") -> None:
    """/proc/driver/nvidia/version, as the loaded nvidia.ko writes it."""
    path = root / "proc/driver/nvidia/version"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {version}  Release Build  "
        "(dvs-builder@U22-I3-AF03-09-1)  Thu Sep 25 23:33:43 UTC 2025\n"
        "GCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04)\n"
    )


def add_uvm_nodes(root: Path, names: Iterable[str] = ("nvidia-uvm", "nvidia-uvm-tools")) -> None:
    """CUDA's device nodes. Links to /dev/null: a real character device, no mknod needed."""
    (root / "dev").mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / "dev" / name).symlink_to("/dev/null")


def _card(index: int, **kw: object) -> FakeGpu:
    kw.setdefault("uuid", f"GPU-{index:08x}-1111-2222-3333-{index:012x}")
    kw.setdefault("bus", f"00000000:{index + 1:02X}:00.0")
    return dataclasses.replace(FakeGpu(), **kw)  # type: ignore[arg-type]


RTX_4000_ADA = dict(
    name="NVIDIA RTX 4000 Ada Generation",
    pci_id=0x27B210DE,
    mem_total=20 * GIB,
    cc=(8, 9),
    ecc_unc=None,
    ecc_cor=None,
)
H100 = dict(name="NVIDIA H100 80GB HBM3", pci_id=0x233010DE, mem_total=80 * GIB, cc=(9, 0))

SCENARIOS: dict[str, Scenario] = {
    # the library is installed but the kernel module is not loaded
    "no_driver": Scenario(init_error=DRIVER_NOT_LOADED),
    "mismatch": Scenario(init_error=LIB_RM_VERSION_MISMATCH),
    "no_permission": Scenario(init_error=NO_PERMISSION),
    "one_20gb": Scenario((_card(0, **RTX_4000_ADA, mem_used=512 * 1024**2, temp=41),)),
    "eight_80gb": Scenario(tuple(_card(i, **H100, temp=30 + i) for i in range(8))),
    "one_lost": Scenario((_card(0, **H100, mem_used=GIB), _card(1, **H100, lost=True))),
    "lost_handle": Scenario((_card(0, **H100), _card(1, **H100, lost="handle"))),
    "ecc_errors": Scenario((_card(0, **H100, ecc_unc=3, ecc_cor=120),)),
    "hot": Scenario((_card(0, **H100, temp=91),)),
    # a driver before nvmlDeviceGetMemoryInfo_v2 and nvmlDeviceGetTemperatureV
    "old_driver": Scenario(
        (_card(0, **H100, mem_used=GIB, mem_reserved=GIB // 2),),
        driver="535.183.01",
        cuda=12020,
        errors={
            "nvmlDeviceGetMemoryInfo_v2": FUNCTION_NOT_FOUND,
            "nvmlDeviceGetTemperatureV": FUNCTION_NOT_FOUND,
        },
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="compile the fake; print its folder")
    build.add_argument("cache_dir", nargs="?", type=Path, default=DEFAULT_CACHE)
    scenario = sub.add_parser("scenario", help="write a ready-made scenario file")
    scenario.add_argument("name", choices=sorted(SCENARIOS))
    scenario.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build_fake_nvml(args.cache_dir))
    else:
        print(SCENARIOS[args.name].write(args.path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
