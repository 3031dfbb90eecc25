"""docker.* checks against the real engine, with a laid-out host and the fake NVIDIA driver."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import settings
from agent.checks import docker as docker_checks
from agent.checks.base import DoctorContext
from tests.fakes import nvml

pytestmark = pytest.mark.docker


@pytest.fixture
def gpu_host(tmp_path: Path) -> Path:
    """A host tree with one NVIDIA card on the PCI bus (what the runtime check keys on)."""
    root = tmp_path / "host"
    nvml.add_pci_device(root, "0000:01:00.0")
    return root


def ctx(tmp_path: Path, root: Path) -> DoctorContext:
    return DoctorContext(settings=settings.load(tmp_path / "none.yaml"), root=root)


def test_engine_is_reported_with_its_version(tmp_path: Path) -> None:
    check = docker_checks.check_engine(ctx(tmp_path, tmp_path))
    assert check.status == "ok" and check.summary.startswith("Docker Engine ")
    assert "runtimes: " in check.detail


def test_unreachable_engine_says_how_to_start_it(tmp_path: Path) -> None:
    context = ctx(tmp_path, tmp_path)
    context.docker_url = f"unix://{tmp_path}/no.sock"  # a real socket path where no engine listens
    check = docker_checks.check_engine(context)
    assert check.status == "fail" and check.summary == "the Docker engine is not reachable"
    assert "systemctl start docker" in check.fix


def test_gpu_without_toolkit_fails(tmp_path: Path, gpu_host: Path) -> None:
    check = docker_checks.check_gpu_runtime(ctx(tmp_path, gpu_host))
    assert check.status == "fail"
    assert (
        check.summary
        == "the NVIDIA Container Toolkit is not installed: containers cannot use the GPUs"
    )
    assert "sandbox-agent bootstrap" in check.fix


def test_toolkit_installed_but_not_configured_is_its_own_failure(
    tmp_path: Path, gpu_host: Path
) -> None:
    ctk = gpu_host / "usr/bin/nvidia-ctk"
    ctk.parent.mkdir(parents=True)
    ctk.write_text("#!/bin/sh\n")
    check = docker_checks.check_gpu_runtime(ctx(tmp_path, gpu_host))
    assert check.status == "fail"
    assert (
        check.summary
        == "the NVIDIA Container Toolkit is installed but Docker is not configured to use it"
    )
    assert check.fix == docker_checks.CONFIGURE_FIX
    assert "/usr/bin/nvidia-ctk" in check.detail


def test_cdi_spec_for_nvidia_counts_as_configured(tmp_path: Path, gpu_host: Path) -> None:
    spec = gpu_host / "etc/cdi/nvidia.yaml"
    spec.parent.mkdir(parents=True)
    spec.write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: []\n")
    check = docker_checks.check_gpu_runtime(ctx(tmp_path, gpu_host))
    assert check.status == "ok" and check.summary == "NVIDIA GPUs are described for CDI"
