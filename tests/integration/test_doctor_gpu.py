"""`sandbox-agent doctor --json` meeting the fake NVIDIA driver, as a person would run it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import AGENT, agent_env
from tests.fakes import nvml

GIB = 1024**3


def doctor(config: Path, root: Path, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [AGENT, "doctor", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "SANDBOX_AGENT_ROOT": str(root)},
    )
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def host(tmp_path: Path, gpus: int) -> Path:
    root = tmp_path / "host"
    for i in range(gpus):
        nvml.add_pci_device(root, f"0000:{i + 1:02x}:00.0")
    nvml.add_uvm_nodes(root)
    return root


def test_lost_gpu_fails_doctor_naming_it(fake_nvml_dir: Path, tmp_path: Path, write_config) -> None:
    scenario = nvml.SCENARIOS["one_lost"].write(tmp_path / "scenario")
    env = nvml.fake_env(fake_nvml_dir, scenario, base=agent_env())
    code, report = doctor(write_config(), host(tmp_path, 2), env)
    checks = {c["id"]: c for c in report["checks"]}
    lost_uuid = nvml.SCENARIOS["one_lost"].gpus[1].uuid
    assert code == 1 and report["ok"] is False
    devices = checks["gpu.devices"]
    assert devices["status"] == "fail"
    assert devices["summary"] == f"GPU 1 ({lost_uuid}) is lost: it no longer answers the driver"
    assert devices["fix"].startswith("reboot (`sudo reboot`); if the GPU is lost again after that")
    assert [checks[i]["status"] for i in ("gpu.pci", "gpu.driver", "gpu.uvm")] == ["ok"] * 3
    assert checks["gpu.driver"]["summary"] == "NVIDIA driver 580.95.05 is loaded (CUDA 13.0)"
    healthy = [g for g in report["gpus"] if not g["lost"]]
    assert [(g["index"], g["name"], g["memory_total"], g["memory_used"]) for g in healthy] == [
        (0, "NVIDIA H100 80GB HBM3", 80 * GIB, GIB)
    ]
    assert [(g["index"], g["uuid"]) for g in report["gpus"] if g["lost"]] == [(1, lost_uuid)]


def test_no_library_says_no_nvidia_gpu(tmp_path: Path, write_config) -> None:
    root = tmp_path / "host"
    root.mkdir()
    code, report = doctor(write_config(), root, nvml.fake_env(None, None, base=agent_env()))
    checks = {c["id"]: c for c in report["checks"]}
    assert checks["gpu.pci"]["status"] == "skip"
    assert checks["gpu.pci"]["summary"] == "no NVIDIA GPU on this machine"
    assert checks["gpu.pci"]["detail"].startswith("vLLM needs an NVIDIA GPU")
    assert {checks[i]["status"] for i in ("gpu.driver", "gpu.devices", "gpu.uvm")} == {"skip"}
    assert report["gpus"] == []
    assert code == (1 if any(c["status"] == "fail" for c in report["checks"]) else 0)
