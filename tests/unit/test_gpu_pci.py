"""The PCI bus as sysfs lays it out, and the gpu.* checks' words for every inventory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agent import gpu, settings
from agent.checks import gpu as checks
from agent.checks.base import Check, DoctorContext
from agent.gpu import Gpu, GpuInventory, PciDevice
from tests.fakes.nvml import add_pci_device, add_uvm_nodes

GIB = 1024**3
UUID0 = "GPU-0c1b8f3e-5a4b-4d8e-9f0a-1b2c3d4e5f60"
UUID1 = "GPU-7d9e2a41-0b3c-4e5f-8a6b-7c8d9e0f1a2b"


# --- pci_devices --------------------------------------------------------------------------


def test_pci_devices_reads_nvidia_gpus_and_their_bound_driver(tmp_path: Path) -> None:
    add_pci_device(tmp_path, "0000:00:02.0", vendor=0x8086, device=0x46A6, driver="i915")
    add_pci_device(tmp_path, "0000:01:00.0", device=0x2330, class_code=0x030200)
    add_pci_device(
        tmp_path, "0000:01:00.1", device=0x22A3, class_code=0x040300, driver="snd_hda_intel"
    )  # the card's HDMI audio: not a GPU
    add_pci_device(tmp_path, "0000:02:00.0", device=0x27B2, class_code=0x030000, driver="nouveau")
    add_pci_device(tmp_path, "0000:03:00.0", device=0x2684, class_code=0x030000, driver=None)
    add_pci_device(tmp_path, "0000:04:00.0", device=0x20B5, driver="vfio-pci")
    assert gpu.pci_devices(tmp_path) == [
        PciDevice("0000:01:00.0", 0x2330, 0x030200, "nvidia"),
        PciDevice("0000:02:00.0", 0x27B2, 0x030000, "nouveau"),
        PciDevice("0000:03:00.0", 0x2684, 0x030000, None),
        PciDevice("0000:04:00.0", 0x20B5, 0x030200, "vfio-pci"),
    ]
    assert gpu.pci_devices(tmp_path)[0].as_dict() == {
        "address": "0000:01:00.0",
        "device_id": "0x2330",
        "class": "0x030200",
        "driver": "nvidia",
    }


def test_pci_devices_skips_what_it_cannot_read(tmp_path: Path) -> None:
    real = add_pci_device(tmp_path, "0000:01:00.0")
    (real / "class").write_text("garbage\n")
    broken = add_pci_device(tmp_path, "0000:02:00.0")
    (broken / "device").unlink()
    add_pci_device(tmp_path, "0000:03:00.0")
    assert [p.address for p in gpu.pci_devices(tmp_path)] == ["0000:03:00.0"]


def test_pci_devices_on_a_machine_without_sysfs_is_empty(tmp_path: Path) -> None:
    assert gpu.pci_devices(tmp_path) == []


# --- the gpu.* checks -----------------------------------------------------------------------

H100 = Gpu(
    0, "NVIDIA H100 80GB HBM3", UUID0, "00000000:01:00.0", 80 * GIB, 1 * GIB, 34, (9, 0), 0, 0
)
PCI0 = PciDevice("0000:01:00.0", 0x2330, 0x030200, "nvidia")
PCI1 = PciDevice("0000:02:00.0", 0x2330, 0x030200, "nvidia")
OK = GpuInventory(
    "ok",
    "driver 580.95.05: 1 GPU(s)",
    "580.95.05",
    "13.0",
    "13.580.95.05",
    (H100,),
    (PCI0,),
    "580.95.05",
)
NO_GPU = GpuInventory("no_gpu", "no NVIDIA GPU on the PCI bus; NVML: ...")


def run(
    tmp_path: Path, inv: GpuInventory, *, uvm: tuple[str, ...] = ("nvidia-uvm", "nvidia-uvm-tools")
) -> dict[str, Check]:
    root = tmp_path / "root"
    root.mkdir()
    add_uvm_nodes(root, uvm)
    s = settings.load(tmp_path / "none.yaml", env={"MODELS_DIR": str(tmp_path / "models")})
    ctx = DoctorContext(settings=s, root=root)
    ctx.once("gpu.inventory", lambda: inv)  # what gpu.read_inventory would have found
    assert checks.inventory(ctx) is inv
    return {spec.id: spec.run(ctx) for spec in checks.CHECKS}


def test_healthy_box(tmp_path: Path) -> None:
    got = run(tmp_path, OK)
    assert got["gpu.pci"] == Check(
        "gpu.pci",
        "ok",
        "1 NVIDIA GPU(s) on the PCI bus",
        "0000:01:00.0 device 0x2330, kernel driver: nvidia",
    )
    assert got["gpu.driver"] == Check(
        "gpu.driver",
        "ok",
        "NVIDIA driver 580.95.05 is loaded (CUDA 13.0)",
        "NVML 13.580.95.05; kernel module 580.95.05",
    )
    assert got["gpu.devices"] == Check(
        "gpu.devices",
        "ok",
        "1 × NVIDIA H100 80GB HBM3 (80.0 GiB), healthy",
        f"GPU 0 NVIDIA H100 80GB HBM3 {UUID0} at 00000000:01:00.0: 1.0 GiB of 80.0 GiB used, "
        "34 °C, compute 9.0, ECC errors: 0 uncorrected, 0 corrected",
    )
    assert got["gpu.uvm"] == Check(
        "gpu.uvm", "ok", "CUDA's device nodes /dev/nvidia-uvm and /dev/nvidia-uvm-tools are present"
    )


def test_cpu_only_machine_skips_and_says_vllm_needs_a_gpu(tmp_path: Path) -> None:
    got = run(tmp_path, NO_GPU)
    assert got["gpu.pci"] == Check(
        "gpu.pci",
        "skip",
        "no NVIDIA GPU on this machine",
        "vLLM needs an NVIDIA GPU: the stack cannot serve a model here. "
        "Nothing under /sys/bus/pci is an NVIDIA display or 3D controller",
        "to serve models, deploy the StackScript on a Linode GPU plan",
    )
    for check_id in ("gpu.driver", "gpu.devices", "gpu.uvm"):
        assert got[check_id].status == "skip"
        assert got[check_id].summary == "skipped: no NVIDIA GPU on this machine"
        assert got[check_id].detail.startswith("vLLM needs an NVIDIA GPU")


BOOTSTRAP = (
    "run `sandbox-agent bootstrap`: it installs the NVIDIA driver; reboot when it asks "
    "(`sudo reboot`)"
)


@pytest.mark.parametrize(
    "state, summary, fix",
    [
        pytest.param(
            "no_library",
            "an NVIDIA GPU is here but its driver is not installed",
            BOOTSTRAP,
            id="no-library",
        ),
        pytest.param(
            "driver_not_loaded",
            "the NVIDIA driver is installed but not loaded",
            "reboot to load it (`sudo reboot`); if it still does not load, run "
            "`sandbox-agent bootstrap` to reinstall it for the running kernel",
            id="not-loaded",
        ),
        pytest.param(
            "mismatch",
            "the NVIDIA driver was updated but the old version is still loaded",
            "reboot to load the new driver (`sudo reboot`)",
            id="mismatch",
        ),
        pytest.param(
            "no_permission",
            "not allowed to talk to the NVIDIA driver",
            "run doctor as root: `sudo sandbox-agent doctor`",
            id="no-permission",
        ),
        pytest.param(
            "error",
            "the NVIDIA driver does not answer",
            "run `nvidia-smi` to see the driver's own message; reboot (`sudo reboot`) "
            "if it reports the GPU or the driver in a bad state",
            id="error",
        ),
    ],
)
def test_driver_failures_say_what_to_do(tmp_path: Path, state: str, summary: str, fix: str) -> None:
    inv = GpuInventory(state, "what NVML said", pci=(replace(PCI0, driver=None),))  # type: ignore[arg-type]
    got = run(tmp_path, inv)
    assert got["gpu.driver"] == Check("gpu.driver", "fail", summary, "what NVML said", fix)
    for check_id in ("gpu.devices", "gpu.uvm"):
        assert got[check_id] == Check(
            check_id,
            "skip",
            "skipped: the NVIDIA driver is not working (see gpu.driver)",
            "what NVML said",
        )
    assert got["gpu.pci"].status == "ok"


@pytest.mark.parametrize(
    "driver, summary, fix",
    [
        pytest.param(
            "nouveau",
            "0000:01:00.0 is driven by nouveau, not the NVIDIA driver",
            "run `sandbox-agent bootstrap` to install the NVIDIA driver (it keeps "
            "nouveau away), then reboot (`sudo reboot`)",
            id="nouveau",
        ),
        pytest.param(
            "vfio-pci",
            "0000:01:00.0 is reserved for virtual machines (vfio-pci)",
            "remove the GPU from vfio-pci (vfio-pci.ids on the kernel command line or "
            "in /etc/modprobe.d), then reboot",
            id="vfio",
        ),
    ],
)
def test_pci_warns_when_another_driver_holds_the_card(
    tmp_path: Path, driver: str, summary: str, fix: str
) -> None:
    inv = GpuInventory("driver_not_loaded", "...", pci=(replace(PCI0, driver=driver),))
    check = run(tmp_path, inv)["gpu.pci"]
    assert (check.status, check.summary, check.fix) == ("warn", summary, fix)
    assert check.detail.endswith(f"0000:01:00.0 device 0x2330, kernel driver: {driver}")


LOST_FIX = (
    "reboot (`sudo reboot`); if the GPU is lost again after that, the host needs service: "
    "contact Linode support with the GPU's UUID"
)


def test_lost_gpu_fails_naming_index_and_uuid(tmp_path: Path) -> None:
    inv = replace(
        OK, gpus=(H100, Gpu(1, uuid=UUID1, lost=True, error="GPU is lost")), pci=(PCI0, PCI1)
    )
    check = run(tmp_path, inv)["gpu.devices"]
    assert check == Check(
        "gpu.devices",
        "fail",
        f"GPU 1 ({UUID1}) is lost: it no longer answers the driver",
        f"GPU 0 NVIDIA H100 80GB HBM3 {UUID0} at 00000000:01:00.0: 1.0 GiB of 80.0 GiB used, "
        f"34 °C, compute 9.0, ECC errors: 0 uncorrected, 0 corrected; "
        f"GPU 1 unknown model {UUID1}: lost",
        LOST_FIX,
    )


def test_uncorrected_ecc_fails_and_heat_warns(tmp_path: Path) -> None:
    inv = replace(OK, gpus=(replace(H100, ecc_uncorrected=2, temperature_c=90),))
    check = run(tmp_path, inv)["gpu.devices"]
    assert check.status == "fail"
    assert check.summary == (
        f"GPU 0 ({UUID0}) has 2 uncorrected ECC memory error(s) since the driver loaded "
        "(and 1 more problem(s))"
    )
    assert check.detail.startswith(f"GPU 0 ({UUID0}) is at 90 °C (limit 85 °C); GPU 0 ")
    assert check.fix == (
        "reboot (`sudo reboot`) so the driver retires the failing memory; if uncorrected errors "
        "come back, the card is failing: contact Linode support with the GPU's UUID; "
        "look for a runaway process with `nvidia-smi`; if the GPU stays this hot while idle, "
        "contact Linode support (cooling)"
    )


def test_hot_gpu_alone_is_a_warning(tmp_path: Path) -> None:
    check = run(tmp_path, replace(OK, gpus=(replace(H100, temperature_c=85),)))["gpu.devices"]
    assert (check.status, check.summary) == ("warn", f"GPU 0 ({UUID0}) is at 85 °C (limit 85 °C)")


def test_missing_memory_and_errors_are_warnings(tmp_path: Path) -> None:
    odd = replace(H100, memory_total=None, memory_used=None, error="nvmlDeviceGetName: Unknown")
    check = run(tmp_path, replace(OK, gpus=(odd,)))["gpu.devices"]
    assert (check.status, check.summary) == (
        "warn",
        f"GPU 0 ({UUID0}) did not report its memory (and 1 more problem(s))",
    )
    assert check.detail.startswith(f"GPU 0 ({UUID0}) answered with errors: nvmlDeviceGetName")
    assert (
        check.fix == "run `nvidia-smi -q` to see what the driver reports; reboot if it shows errors"
    )


def test_gpu_missing_from_the_driver_fails(tmp_path: Path) -> None:
    check = run(tmp_path, replace(OK, pci=(PCI0, PCI1)))["gpu.devices"]
    assert (check.status, check.summary, check.fix) == (
        "fail",
        "2 GPUs are on the PCI bus but the driver sees only 1",
        "reboot (`sudo reboot`); if a GPU is still missing, the host needs service: "
        "contact Linode support",
    )


def test_driver_without_gpus_fails(tmp_path: Path) -> None:
    check = run(tmp_path, replace(OK, gpus=()))["gpu.devices"]
    assert check == Check(
        "gpu.devices",
        "fail",
        "the NVIDIA driver is loaded but sees no GPU",
        OK.detail,
        "reboot (`sudo reboot`); if it still sees none, contact Linode support",
    )


def test_eight_cards_summarised_in_one_line(tmp_path: Path) -> None:
    cards = tuple(replace(H100, index=i, uuid=f"GPU-{i}") for i in range(8))
    check = run(tmp_path, replace(OK, gpus=cards, pci=()))
    assert check["gpu.devices"].summary == "8 × NVIDIA H100 80GB HBM3 (80.0 GiB), healthy"
    assert check["gpu.pci"] == Check(
        "gpu.pci",
        "ok",
        "the driver sees 8 NVIDIA GPU(s)",
        "none is listed under /sys/bus/pci/devices; found through the driver",
    )


@pytest.mark.parametrize(
    "present, summary",
    [
        pytest.param(
            (),
            "/dev/nvidia-uvm and /dev/nvidia-uvm-tools are missing: CUDA cannot start",
            id="both",
        ),
        pytest.param(
            ("nvidia-uvm",), "/dev/nvidia-uvm-tools is missing: CUDA cannot start", id="tools"
        ),
    ],
)
def test_uvm_nodes_missing_tells_how_to_load_them(
    tmp_path: Path, present: tuple[str, ...], summary: str
) -> None:
    check = run(tmp_path, OK, uvm=present)["gpu.uvm"]
    assert check == Check(
        "gpu.uvm",
        "fail",
        summary,
        "the nvidia-uvm kernel module creates them; the NVIDIA Container Toolkit hands them to "
        "every GPU container",
        "load the module and create the nodes: `sudo modprobe nvidia-uvm && sudo "
        "nvidia-modprobe -u -c=0` (to load it at every boot, add nvidia-uvm to "
        "/etc/modules-load.d/nvidia-uvm.conf)",
    )


def test_uvm_node_that_is_a_plain_file_does_not_count(tmp_path: Path) -> None:
    root = tmp_path / "root"
    got_root = run(tmp_path, OK, uvm=("nvidia-uvm",))
    assert got_root["gpu.uvm"].status == "fail"
    (root / "dev" / "nvidia-uvm-tools").write_text("")
    s = settings.load(tmp_path / "none.yaml", env={"MODELS_DIR": str(tmp_path / "models")})
    ctx = DoctorContext(settings=s, root=root)
    ctx.once("gpu.inventory", lambda: OK)
    assert checks.check_uvm(ctx).summary == "/dev/nvidia-uvm-tools is missing: CUDA cannot start"
