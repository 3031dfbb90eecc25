"""`sandbox-agent bootstrap --plan` and `--status` as a person runs them: what would run and
why, changing nothing. The driver step reads the real nvidia-ml-py against the fake driver
library: Done with the version when NVML answers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AGENT, agent_env
from tests.fakes import nvml
from tests.fakes.box import lay_out_host

pytestmark = pytest.mark.docker


def plan(config: Path, root: Path, env: dict[str, str], *args: str) -> tuple[int, Any, str]:
    done = subprocess.run(
        [AGENT, "bootstrap", "--plan", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "SANDBOX_AGENT_ROOT": str(root), "LINODE_ID": "31337"},
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    out = json.loads(done.stdout) if "--json" in args else done.stdout
    return done.returncode, out, done.stderr


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_plan_with_a_loaded_driver_says_done_with_its_version(
    tmp_path: Path, write_config, fake_nvml_dir: Path
) -> None:
    root = lay_out_host(tmp_path / "root", "ubuntu-24.04")
    nvml.add_pci_device(root, "0000:01:00.0", device=0x27B2, class_code=0x030000)
    scenario = nvml.SCENARIOS["one_20gb"].write(tmp_path / "scenario")
    config = write_config()
    before = tree(tmp_path)
    code, report, _ = plan(
        config, root, nvml.fake_env(fake_nvml_dir, scenario, base=agent_env()), "--json"
    )
    steps = {s["id"]: s for s in report["steps"]}
    assert report["instance_id"] == "31337"
    assert (steps["nvidia-driver"]["action"], steps["nvidia-driver"]["why"]) == (
        "done",
        "NVIDIA driver 580.95.05 is loaded (CUDA 13.0)",
    )
    assert steps["model-fetch"]["action"] == "run"
    assert steps["model-fetch"]["after"] == ["directories"]
    assert tree(tmp_path) == before  # nothing written, not even the state folder
    assert code == 0


def test_plan_with_a_working_driver_too_old_for_the_pinned_vllm_refuses_it_with_the_fix(
    tmp_path: Path, write_config, fake_nvml_dir: Path
) -> None:
    root = lay_out_host(tmp_path / "root", "debian-12")
    nvml.add_pci_device(root, "0000:01:00.0", device=0x2330)
    scenario = nvml.SCENARIOS["old_driver"].write(tmp_path / "scenario")  # 535, CUDA 12.2
    code, report, _ = plan(
        write_config(), root, nvml.fake_env(fake_nvml_dir, scenario, base=agent_env()), "--json"
    )
    steps = {s["id"]: s for s in report["steps"]}
    assert (steps["nvidia-driver"]["action"], steps["nvidia-driver"]["why"]) == (
        "fail",
        "driver 535.183.01 is too old for vllm/vllm-openai:v0.30.0: a CUDA 13 build needs 580 "
        "or newer; the bootstrap never replaces a working driver",
    )
    assert steps["nvidia-driver"]["fix"] == (
        "run `VLLM_IMAGE=vllm/vllm-openai:v0.30.0-cu129 sandbox-agent bootstrap` (the CUDA 12.9 "
        "build of the same release), or install the 580 driver branch and reboot"
    )
    assert code == 1
    # the fix as written: the CUDA 12.9 build of the same release on the same driver
    env = nvml.fake_env(fake_nvml_dir, scenario, base=agent_env())
    env["VLLM_IMAGE"] = "vllm/vllm-openai:v0.30.0-cu129"
    _, report, _ = plan(write_config(), root, env, "--json")
    steps = {s["id"]: s for s in report["steps"]}
    assert (steps["nvidia-driver"]["action"], steps["nvidia-driver"]["why"]) == (
        "done",
        "NVIDIA driver 535.183.01 is loaded (CUDA 12.2)",
    )


def test_plan_on_a_box_without_a_gpu_skips_driver_and_toolkit_with_reasons(
    tmp_path: Path, write_config
) -> None:
    root = lay_out_host(tmp_path / "root", "debian-12")
    config = write_config()
    code, text, _ = plan(config, root, nvml.fake_env(None, None, base=agent_env()))
    lines = text.splitlines()
    assert lines[0] == "bootstrap plan for instance 31337 (nothing was changed):"
    by_id = {line.split()[1]: line for line in lines[1:] if len(line.split()) > 1}
    assert by_id["nvidia-driver"].split(None, 2) == [
        "skip",
        "nvidia-driver",
        "no NVIDIA GPU on the PCI bus",
    ]
    assert by_id["container-toolkit"].split(None, 2) == [
        "skip",
        "container-toolkit",
        "no NVIDIA GPU on the PCI bus",
    ]
    assert by_id["docker"].split(None, 2)[:2] == ["done", "docker"]
    assert "run  model-fetch" in by_id["model-fetch"]
    assert code == 0


def test_status_before_any_run_says_so(tmp_path: Path, write_config) -> None:
    root = lay_out_host(tmp_path / "root", "debian-12")
    done = subprocess.run(
        [AGENT, "bootstrap", "--status", "--config", str(write_config())],
        capture_output=True,
        text=True,
        env={**agent_env(), "SANDBOX_AGENT_ROOT": str(root), "LINODE_ID": "5"},
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: no bootstrap has run on this instance (5)",
        "  fix: run `sandbox-agent bootstrap`",
    ]
