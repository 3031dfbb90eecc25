"""agent.gpu against the real nvidia-ml-py and the fake driver library, in a subprocess.

Each case starts a fresh Python with LD_LIBRARY_PATH at the fake's folder and
FAKE_NVML_SCENARIO at a scenario file: the way the agent meets libnvidia-ml.so.1 on a box.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import nvml
from tests.fakes.nvml import GIB, FakeGpu, Scenario

REPO = Path(__file__).resolve().parents[2]
SNIPPET = """
import json, sys
from dataclasses import asdict
from pathlib import Path
import agent.gpu as g
inv = g.read_inventory(Path(sys.argv[1]))
print(json.dumps({"inventory": inv.as_dict(), "problems": [asdict(p) for p in g.problems(inv)]}))
"""
H100 = "NVIDIA H100 80GB HBM3"
LOST_MESSAGE = "GPU is lost: it no longer answers the driver"


def read(
    lib_dir: Path | None, scenario: Scenario | None, tmp_path: Path, *, pci: str | None = "nvidia"
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """The inventory, its problems and the NVML calls made, from a fresh process."""
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    if pci is not None:
        nvml.add_pci_device(root, driver=None if pci == "unbound" else pci)
    path = scenario.write(tmp_path / "scenario") if scenario is not None else None
    calls = tmp_path / "calls"
    done = subprocess.run(
        [sys.executable, "-c", SNIPPET, str(root)],
        env=nvml.fake_env(lib_dir, path, calls=calls),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    names = calls.read_text().split() if calls.exists() else []
    return out["inventory"], out["problems"], names


def gpu(index: int, **fields: Any) -> dict[str, Any]:
    """A GPU as as_dict() gives it: a healthy H100 unless `fields` say otherwise."""
    base = {
        "index": index,
        "name": H100,
        "uuid": f"GPU-{index:08x}-1111-2222-3333-{index:012x}",
        "pci_bus_id": f"00000000:{index + 1:02X}:00.0",
        "memory_total": 80 * GIB,
        "memory_used": 0,
        "temperature_c": 35,
        "compute_capability": "9.0",
        "ecc_uncorrected": 0,
        "ecc_corrected": 0,
        "lost": False,
        "error": None,
        "utilization": None,  # the fake answers NOT_SUPPORTED unless a scenario sets them
        "power_w": None,
    }
    base.update(fields)
    base["memory_free"] = (
        None
        if base["memory_total"] is None or base["memory_used"] is None
        else base["memory_total"] - base["memory_used"]
    )
    return base


def lost(index: int, uuid: str | None) -> dict[str, Any]:
    return {
        "index": index,
        "name": None,
        "uuid": uuid,
        "pci_bus_id": None,
        "memory_total": None,
        "memory_used": None,
        "temperature_c": None,
        "compute_capability": None,
        "ecc_uncorrected": None,
        "ecc_corrected": None,
        "lost": True,
        "error": LOST_MESSAGE,
        "utilization": None,
        "power_w": None,
        "memory_free": None,
    }


S = nvml.SCENARIOS
OK = {
    "state": "ok",
    "driver_version": "580.95.05",
    "cuda_driver_version": "13.0",
    "nvml_version": "13.580.95.05",
}


@pytest.mark.parametrize(
    "scenario, gpus, problems",
    [
        pytest.param(
            S["one_20gb"],
            [
                gpu(
                    0,
                    name="NVIDIA RTX 4000 Ada Generation",
                    memory_total=20 * GIB,
                    memory_used=512 * 1024**2,
                    temperature_c=41,
                    compute_capability="8.9",
                    ecc_uncorrected=None,
                    ecc_corrected=None,
                )
            ],
            [],
            id="one-20gb-no-ecc",
        ),
        pytest.param(
            S["eight_80gb"], [gpu(i, temperature_c=30 + i) for i in range(8)], [], id="eight-80gb"
        ),
        pytest.param(
            S["one_lost"],
            [gpu(0, memory_used=GIB), lost(1, "GPU-00000001-1111-2222-3333-000000000001")],
            [
                (
                    1,
                    "lost",
                    "fail",
                    "GPU 1 (GPU-00000001-1111-2222-3333-000000000001) is lost: "
                    "it no longer answers the driver",
                )
            ],
            id="lost-after-handle-keeps-uuid",
        ),
        pytest.param(
            S["lost_handle"],
            [gpu(0), lost(1, None)],
            [(1, "lost", "fail", "GPU 1 (UUID unknown) is lost: it no longer answers the driver")],
            id="lost-handle",
        ),
        pytest.param(
            S["ecc_errors"],
            [gpu(0, ecc_uncorrected=3, ecc_corrected=120)],
            [
                (
                    0,
                    "ecc",
                    "fail",
                    "GPU 0 (GPU-00000000-1111-2222-3333-000000000000) has 3 "
                    "uncorrected ECC memory error(s) since the driver loaded",
                )
            ],
            id="ecc-errors",
        ),
        pytest.param(
            S["hot"],
            [gpu(0, temperature_c=91)],
            [
                (
                    0,
                    "hot",
                    "warn",
                    "GPU 0 (GPU-00000000-1111-2222-3333-000000000000) is at 91 °C (limit 85 °C)",
                )
            ],
            id="hot",
        ),
        pytest.param(
            Scenario(
                (
                    FakeGpu(
                        uuid="GPU-na",
                        mem_total=None,
                        temp=None,
                        cc=None,
                        ecc_unc=None,
                        ecc_cor=None,
                    ),
                )
            ),
            [
                gpu(
                    0,
                    uuid="GPU-na",
                    memory_total=None,
                    memory_used=None,
                    temperature_c=None,
                    compute_capability=None,
                    ecc_uncorrected=None,
                    ecc_corrected=None,
                )
            ],
            [(0, "memory", "warn", "GPU 0 (GPU-na) did not report its memory")],
            id="not-supported-fields-are-none",
        ),
        pytest.param(
            Scenario((FakeGpu(uuid="GPU-e"),), errors={"nvmlDeviceGetTemperatureV": 999}),
            [
                gpu(
                    0,
                    uuid="GPU-e",
                    temperature_c=None,
                    error="nvmlDeviceGetTemperatureV: Unknown Error (NVML error 999)",
                )
            ],
            [
                (
                    0,
                    "error",
                    "warn",
                    "GPU 0 (GPU-e) answered with errors: "
                    "nvmlDeviceGetTemperatureV: Unknown Error (NVML error 999)",
                )
            ],
            id="unknown-error-is-kept-per-gpu",
        ),
    ],
)
def test_inventory_through_real_pynvml(
    fake_nvml_dir: Path,
    tmp_path: Path,
    scenario: Scenario,
    gpus: list[dict[str, Any]],
    problems: list[tuple[int, str, str, str]],
) -> None:
    inv, found, calls = read(fake_nvml_dir, scenario, tmp_path)
    assert {k: inv[k] for k in OK} == OK
    assert inv["gpus"] == gpus
    assert inv["pci"] == [
        {"address": "0000:01:00.0", "device_id": "0x2330", "class": "0x030200", "driver": "nvidia"}
    ]
    assert [(p["index"], p["kind"], p["severity"], p["message"]) for p in found] == problems
    assert calls.count("nvmlInitWithFlags") == calls.count("nvmlShutdown") == 1


@pytest.mark.parametrize(
    "scenario, pci, state, detail",
    [
        pytest.param(
            S["no_driver"],
            "unbound",
            "driver_not_loaded",
            "NVML could not start: Driver Not Loaded (NVML error 9); "
            "NVIDIA GPU on the PCI bus: 0000:01:00.0 (driver: none)",
            id="library-but-no-driver",
        ),
        pytest.param(
            S["no_driver"],
            "nouveau",
            "driver_not_loaded",
            "NVML could not start: Driver Not Loaded (NVML error 9); "
            "NVIDIA GPU on the PCI bus: 0000:01:00.0 (driver: nouveau)",
            id="nouveau-holds-the-card",
        ),
        pytest.param(
            S["no_driver"],
            None,
            "no_gpu",
            "no NVIDIA GPU on the PCI bus; NVML: NVML could not start: Driver Not Loaded "
            "(NVML error 9)",
            id="library-on-a-cpu-machine",
        ),
        pytest.param(
            None,
            "unbound",
            "no_library",
            "libnvidia-ml.so.1 (the NVIDIA driver's library) is not installed; "
            "NVIDIA GPU on the PCI bus: 0000:01:00.0 (driver: none)",
            id="gpu-but-no-library",
        ),
        pytest.param(
            None,
            None,
            "no_gpu",
            "no NVIDIA GPU on the PCI bus; NVML: libnvidia-ml.so.1 (the NVIDIA driver's library) "
            "is not installed",
            id="nothing-at-all",
        ),
        pytest.param(
            S["no_permission"],
            "nvidia",
            "no_permission",
            "NVML could not start: Insufficient Permissions (NVML error 4); "
            "NVIDIA GPU on the PCI bus: 0000:01:00.0 (driver: nvidia)",
            id="no-permission",
        ),
        pytest.param(
            Scenario(errors={"nvmlDeviceGetCount_v2": 999}),
            "nvidia",
            "error",
            "the driver did not say how many GPUs it has: Unknown Error (NVML error 999)",
            id="count-fails",
        ),
    ],
)
def test_states_before_any_gpu(
    fake_nvml_dir: Path,
    tmp_path: Path,
    scenario: Scenario | None,
    pci: str | None,
    state: str,
    detail: str,
) -> None:
    lib = fake_nvml_dir if scenario is not None else None
    inv, found, calls = read(lib, scenario, tmp_path, pci=pci)
    assert (inv["state"], inv["detail"], inv["gpus"], found) == (state, detail, [], [])
    assert calls.count("nvmlShutdown") == (1 if state == "error" else 0)


def test_mismatch_names_the_loaded_kernel_module(fake_nvml_dir: Path, tmp_path: Path) -> None:
    nvml.add_kernel_module(tmp_path / "root", "570.133.20")
    inv, _, _ = read(fake_nvml_dir, S["mismatch"], tmp_path)
    assert inv["state"] == "mismatch"
    assert inv["kernel_module_version"] == "570.133.20"
    assert inv["detail"] == (
        "NVML could not start: RM has detected an NVML/RM version mismatch. (NVML error 18); "
        "the loaded kernel module is 570.133.20; "
        "NVIDIA GPU on the PCI bus: 0000:01:00.0 (driver: nvidia)"
    )


def test_old_driver_falls_back_to_v1_memory_and_old_temperature(
    fake_nvml_dir: Path, tmp_path: Path
) -> None:
    inv, found, calls = read(fake_nvml_dir, S["old_driver"], tmp_path)
    assert (inv["driver_version"], inv["cuda_driver_version"]) == ("535.183.01", "12.2")
    # v1 counts the driver's reservation as used, as does our memory_used on v2
    assert inv["gpus"] == [gpu(0, memory_used=GIB + GIB // 2)]
    assert found == []
    memory = [c for c in calls if c.startswith("nvmlDeviceGetMemoryInfo")]
    temperature = [c for c in calls if c.startswith("nvmlDeviceGetTemperature")]
    assert memory == ["nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetMemoryInfo"]
    assert temperature == ["nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature"]


def test_new_driver_answers_through_v2_calls_only(fake_nvml_dir: Path, tmp_path: Path) -> None:
    scenario = Scenario((FakeGpu(uuid="GPU-r", mem_used=GIB, mem_reserved=GIB // 2),))
    inv, _, calls = read(fake_nvml_dir, scenario, tmp_path)
    assert inv["gpus"][0]["memory_used"] == GIB + GIB // 2
    assert [c for c in calls if c.startswith("nvmlDeviceGetMemoryInfo")] == [
        "nvmlDeviceGetMemoryInfo_v2"
    ]
    assert "nvmlDeviceGetTemperature" not in calls


def test_a_broken_scenario_is_an_error_state_not_a_crash(
    fake_nvml_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "scenario"
    path.write_text("driver 580.95.05\ngpu colour=green\n")
    done = subprocess.run(
        [sys.executable, "-c", SNIPPET, str(tmp_path)],
        env=nvml.fake_env(fake_nvml_dir, path),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "fake_nvml: scenario line 2: unknown gpu field: colour" in done.stderr
    assert json.loads(done.stdout)["inventory"]["state"] == "error"


def test_without_a_scenario_the_fake_refuses_to_start(fake_nvml_dir: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SNIPPET, str(tmp_path)],
        env=nvml.fake_env(fake_nvml_dir, None),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "FAKE_NVML_SCENARIO is not set; this is a test library" in done.stderr
    assert json.loads(done.stdout)["inventory"]["state"] == "error"


def test_the_fake_is_never_built_in_a_system_folder() -> None:
    with pytest.raises(ValueError, match="must not be built under /usr"):
        nvml.build_fake_nvml(Path("/usr/lib/x86_64-linux-gnu"))
