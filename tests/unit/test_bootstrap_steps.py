"""The package steps on each OS, through the one command runner (apt on Ubuntu, NVIDIA's
packages, systemctl and modprobe cannot run here): one apt transaction, the lock wait, the
no-reboot driver load, the reboot path, the toolkit verified by the engine."""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path
from typing import Any

import pytest

from agent import bootstrap, proc, settings
from agent.checks import gpu as gpu_checks
from agent.checks.base import DoctorContext
from agent.engine import EngineUnavailable
from agent.gpu import Gpu, GpuInventory, PciDevice
from agent.markers import BootState
from agent.steps import (
    Done,
    StepContext,
    container_toolkit,
    docker,
    nvidia_driver,
    preflight,
)
from tests.fakes import nvml
from tests.fakes.box import (
    DOCKER_PACKAGES,
    OS_TABLES,
    FakeBox,
    lay_out_host,
    lay_out_key_bundle,
)
from tests.fakes.nvml import add_pci_device
from tests.fakes.web_peers import TEST_KEY_ASC

GIB = 1024**3
HEADERS = f"linux-headers-{platform.release()}"
LOADED = GpuInventory(
    "ok",
    "driver 580.95.05: 1 GPU(s)",
    "580.95.05",
    "13.0",
    "13.580.95.05",
    (Gpu(0, "NVIDIA RTX 4000 Ada Generation", "GPU-1", memory_total=20 * GIB, memory_used=0),),
    (PciDevice("0000:01:00.0", 0x27B2, 0x030000, "nvidia"),),
)
NO_LIBRARY = GpuInventory("no_library", "libnvidia-ml.so.1 is not installed")


class Engine:
    """The Docker engine apt would install: it answers once systemd started it, and lists
    the nvidia runtime once the toolkit configured it and the engine restarted."""

    def __init__(self, box: FakeBox) -> None:
        self.box = box

    def __call__(self) -> Engine:
        if "docker.service" not in self.box.load()["active"]:
            raise EngineUnavailable("the Docker engine at unix:///var/run/docker.sock is down")
        return self

    def version(self) -> dict[str, str]:
        return {"Version": "29.0.0", "ApiVersion": "1.52"}

    def info(self) -> dict[str, Any]:
        runtimes: dict[str, Any] = {"runc": {}}
        if self.box.load().get("runtime_configured"):
            runtimes["nvidia"] = {}
        return {"Runtimes": runtimes, "DefaultRuntime": "runc"}


@pytest.fixture
def box(tmp_path: Path) -> Any:
    fake = FakeBox(tmp_path / "box")
    previous = proc.set_runner(fake)
    yield fake
    proc.set_runner(previous)


def context(tmp_path: Path, write_config, box: FakeBox, os_name: str, **kw: Any) -> StepContext:
    root = lay_out_host(tmp_path / "root", os_name)
    s = settings.load(write_config())
    kw.setdefault("bundle", lay_out_key_bundle(tmp_path / "bundle"))
    return StepContext(
        s,
        BootState(s.paths.state, "4242"),
        root=root,
        is_root=True,
        connect=Engine(box),  # type: ignore[arg-type]
        read_gpus=lambda _root: LOADED if box.load().get("loaded") else NO_LIBRARY,
        **kw,
    )


STEPS = [preflight, nvidia_driver, docker, container_toolkit]


@pytest.mark.parametrize("os_name", sorted(OS_TABLES))
def test_a_bare_gpu_box_gets_docker_first_then_driver_and_toolkit_in_one_transaction(
    tmp_path, write_config, box, os_name
) -> None:
    ctx = context(tmp_path, write_config, box, os_name)
    add_pci_device(ctx.root, "0000:01:00.0", device=0x27B2, class_code=0x030000, driver=None)
    result = bootstrap.run(ctx, STEPS)  # type: ignore[arg-type]
    assert [(s.id, s.status, s.detail) for s in result.steps] == [
        ("preflight", "done", s_detail(result, "preflight")),
        ("nvidia-driver", "done", "NVIDIA driver 580.95.05 is loaded (CUDA 13.0)"),
        ("docker", "done", "Docker 29.0.0 answers"),
        ("container-toolkit", "done", "the engine lists the nvidia runtime (nvidia, runc)"),
    ]
    table = OS_TABLES[os_name]
    installs = box.installs()
    assert [i.split(" install ")[1].split() for i in installs] == [
        DOCKER_PACKAGES,
        [*table["driver"], HEADERS, "nvidia-container-toolkit"],
    ]
    calls = box.calls()
    # first boot: cloud-init first, then apt waits for the dpkg lock, noninteractive, keeps configs
    assert calls.index("cloud-init status --wait") < calls.index(
        next(c for c in calls if c.endswith(" update"))
    )
    assert installs[1].startswith(
        "apt-get -y -q -o DPkg::Lock::Timeout=900 -o Dpkg::Options::=--force-confdef "
        "-o Dpkg::Options::=--force-confold install "
    )
    lists = ctx.root / "etc/apt/sources.list.d"
    for name, where in table["repos"].items():
        line = (lists / f"{name}.list").read_text()
        assert where in line and f"signed-by=/etc/apt/keyrings/{name}.asc" in line
        keyring = ctx.root / f"etc/apt/keyrings/{name}.asc"  # the bundle's key, 0644
        assert keyring.read_bytes() == TEST_KEY_ASC and keyring.stat().st_mode & 0o777 == 0o644
    assert "nvidia-container-toolkit.list" in {p.name for p in lists.iterdir()}
    after = calls[calls.index(installs[1]) :]
    assert "modprobe nvidia" in after and "modprobe nvidia_uvm" in after
    assert after.index("nvidia-ctk runtime configure --runtime=docker") < after.index(
        "systemctl restart docker.service"
    )
    assert (ctx.root / "etc/modprobe.d/blacklist-nouveau.conf").read_text() == (
        "blacklist nouveau\noptions nouveau modeset=0\n"
    )
    # run again: everything is checked, nothing is installed twice
    again = bootstrap.run(ctx, STEPS)  # type: ignore[arg-type]
    assert again.status == "done" and len(box.installs()) == 2


def s_detail(result: bootstrap.BootstrapResult, sid: str) -> str:
    return next(s.detail for s in result.steps if s.id == sid)


def test_pre_turing_gpus_get_the_proprietary_modules(tmp_path, write_config, box) -> None:
    ctx = context(tmp_path, write_config, box, "ubuntu-22.04")
    add_pci_device(ctx.root, "0000:01:00.0", device=0x1DB1, driver=None)  # V100 (Volta)
    assert nvidia_driver.want(ctx).packages == ("nvidia-driver-580-server", HEADERS)
    assert nvidia_driver.check(ctx).reason == (  # type: ignore[union-attr]
        "1 NVIDIA GPU(s) and no driver: install the 580 branch (proprietary kernel modules)"
    )


def test_nouveau_is_unbound_and_the_driver_loads_without_a_reboot(
    tmp_path, write_config, box
) -> None:
    ctx = context(tmp_path, write_config, box, "ubuntu-24.04")
    add_pci_device(ctx.root, "0000:01:00.0", device=0x27B2, class_code=0x030000, driver="nouveau")
    result = bootstrap.run(ctx, [preflight, nvidia_driver])  # type: ignore[list-item]
    assert result.status == "done"
    unbind = ctx.root / "sys/bus/pci/drivers/nouveau/unbind"
    assert unbind.read_text() == "0000:01:00.0"
    calls = box.calls()
    assert calls.index("modprobe -r nouveau") < calls.index("modprobe nvidia")
    assert "systemctl reboot" not in calls and "update-initramfs -u" not in calls


def test_a_module_that_cannot_load_reboots_with_the_resume_unit_enabled(
    tmp_path, write_config, box
) -> None:
    box.set(modprobe_nvidia_rc=1)
    ctx = context(tmp_path, write_config, box, "debian-12")
    add_pci_device(ctx.root, "0000:01:00.0", device=0x2330, driver="nouveau")
    result = bootstrap.run(ctx, [preflight, nvidia_driver])  # type: ignore[list-item]
    assert result.status == "rebooting"
    driver = result.steps[1]
    assert driver.status == "reboot"
    assert driver.detail == (
        "the NVIDIA kernel module cannot load before a reboot: modprobe: ERROR: could not "
        "insert 'nvidia': Device or resource busy"
    )
    calls = box.calls()
    assert (
        calls.index("update-initramfs -u")
        < calls.index("systemctl enable sandbox-agent-bootstrap.service")
        < calls.index("systemctl reboot")
    )
    assert (ctx.root / "etc/systemd/system/sandbox-agent-bootstrap.service").exists()
    # the boot: the module loads now; the resumed run does not install again
    box.set(modprobe_nvidia_rc=0, loaded=True)
    again = bootstrap.run(ctx, [preflight, nvidia_driver])  # type: ignore[list-item]
    assert again.status == "done" and len(box.installs()) == 1
    assert "sandbox-agent-bootstrap.service" not in box.load()["enabled"]


def test_a_working_driver_is_never_replaced(tmp_path, write_config, box) -> None:
    box.set(loaded=True)
    ctx = context(tmp_path, write_config, box, "debian-12")
    add_pci_device(ctx.root, "0000:01:00.0")
    result = bootstrap.run(ctx, [preflight, nvidia_driver])  # type: ignore[list-item]
    assert result.steps[1].detail == "NVIDIA driver 580.95.05 is loaded (CUDA 13.0)"
    assert box.calls() == []


# the fake NVML's "old_driver" scenario (tests/fakes/nvml.py), as read_inventory reads it
OLD_DRIVER = dataclasses.replace(
    LOADED,
    detail="driver 535.183.01: 1 GPU(s)",
    driver_version=nvml.SCENARIOS["old_driver"].driver,
    cuda_driver_version="12.2",
)


def test_a_working_driver_too_old_for_the_vllm_image_is_refused_first_with_doctors_words(
    tmp_path, write_config, box
) -> None:
    box.set(loaded=True)
    ctx = context(tmp_path, write_config, box, "debian-12")
    ctx.read_gpus = lambda _root: OLD_DRIVER
    add_pci_device(ctx.root, "0000:01:00.0", device=0x27B2, class_code=0x030000)
    result = bootstrap.run(ctx, STEPS)  # type: ignore[arg-type]
    driver = {s.id: s for s in result.steps}["nvidia-driver"]
    assert (driver.status, driver.detail, driver.fix) == (
        "failed",
        "driver 535.183.01 is too old for vllm/vllm-openai:v0.30.0: a CUDA 13 build needs 580 "
        "or newer; the bootstrap never replaces a working driver",
        "run `VLLM_IMAGE=vllm/vllm-openai:v0.30.0-cu129 sandbox-agent bootstrap` (the CUDA 12.9 "
        "build of the same release), or install the 580 driver branch and reboot",
    )
    # doctor says the same of the same box
    doctor_ctx = DoctorContext(settings=ctx.settings, root=ctx.root)
    doctor_ctx.once("gpu.inventory", lambda: OLD_DRIVER)
    said = gpu_checks.check_driver_vs_image(doctor_ctx)
    assert driver.detail.startswith(said.summary) and driver.fix.endswith(
        said.fix.split(", or ")[1]
    )
    assert {s.id: s.status for s in result.steps}["container-toolkit"] == "blocked"
    assert result.status == "failed"
    touched = [c for c in box.calls() if "nvidia" in c]
    assert touched == []  # the working driver is neither replaced nor reloaded
    # the fix it names: the CUDA 12.9 build of the same release passes on the same driver
    cu129 = {"images": {"vllm": "vllm/vllm-openai:v0.30.0-cu129"}}
    ctx.settings = settings.load(write_config(cu129))
    passed = nvidia_driver.check(ctx)
    assert passed == Done("NVIDIA driver 535.183.01 is loaded (CUDA 12.2)")
    # and an image whose CUDA cannot be told (the stand-ins, a private build) is not judged
    ctx.settings = settings.load(write_config({"images": {"vllm": "sandbox-test/vllm:dev"}}))
    assert isinstance(nvidia_driver.check(ctx), Done)


def test_no_gpu_skips_driver_and_toolkit_each_with_its_reason(tmp_path, write_config, box):
    box.set(active=["docker.service"])
    ctx = context(tmp_path, write_config, box, "debian-12")
    result = bootstrap.run(ctx, STEPS)  # type: ignore[arg-type]
    assert [(s.id, s.status, s.detail) for s in result.steps[1:]] == [
        ("nvidia-driver", "skipped", "skipped: no NVIDIA GPU on the PCI bus"),
        ("docker", "done", "Docker 29.0.0 answers"),
        ("container-toolkit", "skipped", "skipped: no NVIDIA GPU on the PCI bus"),
    ]
    assert box.calls() == []


def test_gpus_none_skips_the_toolkit_even_with_a_gpu(tmp_path, write_config, box) -> None:
    box.set(active=["docker.service"], loaded=True)
    root = lay_out_host(tmp_path / "root", "ubuntu-24.04")
    add_pci_device(root, "0000:01:00.0")
    s = settings.load(write_config({"gpus": "none"}))
    ctx = StepContext(s, BootState(s.paths.state, "1"), root=root, connect=Engine(box))  # type: ignore[arg-type]
    assert container_toolkit.check(ctx).detail == "skipped: gpus is 'none' in the settings"  # type: ignore[union-attr]


def test_preflight_refuses_an_unsupported_os_naming_the_supported_ones(
    tmp_path, write_config, box
) -> None:
    ctx = context(tmp_path, write_config, box, "debian-12")
    (ctx.root / "etc/os-release").write_text('ID=centos\nVERSION_ID="9"\nPRETTY_NAME="CentOS 9"\n')
    result = bootstrap.run(ctx, STEPS)  # type: ignore[arg-type]
    first = result.steps[0]
    assert (first.status, first.detail, first.fix) == (
        "failed",
        "CentOS 9 is not supported",
        "deploy the StackScript on Ubuntu 22.04, Ubuntu 24.04 or Debian 12",
    )
    assert {s.status for s in result.steps[1:]} == {"blocked"}
    assert box.calls() == []


def test_preflight_refuses_without_root(tmp_path, write_config, box) -> None:
    ctx = context(tmp_path, write_config, box, "debian-12")
    ctx.is_root = False
    with pytest.raises(
        preflight.StepFailed, match=r"^bootstrap must run as root \(run it with sudo\)$"
    ):
        preflight.check(ctx)


class GpuEngine(Engine):
    """An engine with the nvidia runtime whose GPU container prints `nvidia-smi -L`."""

    def __init__(self, box: FakeBox, seen: int) -> None:
        super().__init__(box)
        self.seen = seen
        self.runs: list[dict[str, Any]] = []
        self.containers = self

    def run(self, image: str, **kw: Any) -> bytes:
        self.runs.append({"image": image, **kw})
        lines = "".join(f"GPU {i}: NVIDIA RTX 4000 Ada (UUID: GPU-{i})\n" for i in range(self.seen))
        return lines.encode()


@pytest.mark.parametrize("seen", [1, 0])
def test_gpu_verify_runs_a_container_with_every_gpu_and_counts_them(
    tmp_path, write_config, box, seen
) -> None:
    from agent.steps import gpu_verify

    box.set(active=["docker.service"], loaded=True, runtime_configured=True)
    ctx = context(tmp_path, write_config, box, "ubuntu-24.04")
    engine = GpuEngine(box, seen)
    ctx.connect = engine  # type: ignore[assignment]
    add_pci_device(ctx.root, "0000:01:00.0", device=0x27B2, class_code=0x030000)
    assert gpu_verify.check(ctx).reason == "run a container with the GPUs and count them"  # type: ignore[union-attr]
    if seen == 0:
        with pytest.raises(gpu_verify.StepFailed, match="^a container sees 0 GPU"):
            gpu_verify.apply(ctx)
        return
    result = bootstrap.run(ctx, [gpu_verify])  # type: ignore[list-item]
    assert result.steps[0].detail == "a container sees all 1 GPU(s)"
    run = engine.runs[0]
    assert run["entrypoint"] == ["nvidia-smi", "-L"] and run["remove"] is True
    assert run["device_requests"][0]["Count"] == -1
    assert run["device_requests"][0]["Capabilities"] == [["gpu"]]
    # verified once per boot: the same boot says done, a new boot checks again
    assert bootstrap.run(ctx, [gpu_verify]).status == "done" and len(engine.runs) == 1  # type: ignore[list-item]
    ctx.boot_id = "boot-2"
    assert bootstrap.plan(ctx, [gpu_verify]).steps[0].action == "run"  # type: ignore[list-item]
    bootstrap.run(ctx, [gpu_verify])  # type: ignore[list-item]
    assert len(engine.runs) == 2
