"""The real NVIDIA driver: runs on a machine with a GPU (the device tool), skipped elsewhere.

On a GPU machine: `.venv/bin/python -m pytest -m gpu -v -s` prints the inventory and doctor's
GPU checks as they meet the real libnvidia-ml.so.1.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agent import gpu
from tests.conftest import AGENT, agent_env

pytestmark = pytest.mark.gpu

if not Path("/proc/driver/nvidia/version").exists():
    pytest.skip(
        "no NVIDIA kernel driver on this machine (a GPU machine runs these)",
        allow_module_level=True,
    )


def test_real_inventory_reads_every_gpu() -> None:
    inv = gpu.read_inventory()
    print(json.dumps(inv.as_dict(), indent=2))
    assert inv.state == "ok", inv.detail
    assert inv.driver_version and inv.cuda_driver_version
    assert inv.gpus and all(
        g.memory_total and g.uuid.startswith(("GPU-", "MIG-")) for g in inv.gpus
    )
    assert all(not g.lost for g in inv.gpus)


def test_doctor_against_the_real_driver(write_config) -> None:
    result = subprocess.run(
        [AGENT, "doctor", "--json", "--config", str(write_config())],
        capture_output=True,
        text=True,
        env=agent_env(),
        timeout=120,
    )
    print(result.stdout)
    report = json.loads(result.stdout)
    checks = {c["id"]: c for c in report["checks"]}
    assert checks["gpu.driver"]["status"] == "ok", checks["gpu.driver"]
    assert checks["gpu.devices"]["status"] in ("ok", "warn"), checks["gpu.devices"]
    assert len(report["gpus"]) >= 1
