"""Killed at every step boundary and in the middle of the model fetch, then run again: the
bootstrap completes and no side effect happens twice (one apt transaction, one admin, one key,
one container per service). And the reboot path: it stops for a reboot with the resume unit
enabled, and the next run (the boot) resumes after the driver step.

The box is a Debian 12 tree with one NVIDIA GPU on its PCI bus and no driver; apt, systemctl
and modprobe answer from the fake box (tests/fakes/box.py), whose `modprobe nvidia` makes the
fake driver library appear where NVML looks for it. NVIDIA's repository key comes from an
offline bundle (SANDBOX_AGENT_BUNDLE, apt-keys/): this machine cannot download it. The Docker
engine, the stand-in stack, the Hub protocol and NVML are real.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.steps import ALL
from tests.conftest import agent_env
from tests.fakes import nvml
from tests.fakes.box import FakeBox, lay_out_host, lay_out_key_bundle
from tests.fakes.hub_server import running_hub
from tests.integration.stack_support import (
    TINY_CONFIG,
    docker_client,
    free_port,
    http,
    labelled,
    remove_project,
    standin_images,
)

pytestmark = pytest.mark.docker
DRIVER = Path(__file__).with_name("bootstrap_driver.py")
MIB = 1 << 20
WEIGHTS = 24 * MIB


class World:
    def __init__(self, tmp: Path, hub: Any, fake_lib: Path) -> None:
        self.tmp = tmp
        self.root = lay_out_host(tmp / "root", "debian-12")
        nvml.add_pci_device(self.root, "0000:01:00.0", device=0x27B2, driver=None)
        self.drivers = tmp / "driver-libs"  # where NVML looks; empty until modprobe nvidia
        self.drivers.mkdir()
        self.box = FakeBox(tmp / "box")
        self.bundle = lay_out_key_bundle(tmp / "bundle", ("cuda-debian12",))
        lib = fake_lib / nvml.SONAME
        self.box.set(on_modprobe=[[str(lib), str(self.drivers / nvml.SONAME)]])
        self.scenario = nvml.SCENARIOS["one_20gb"].write(tmp / "scenario")
        self.project = f"boot-{uuid.uuid4().hex[:6]}"
        self.api_port, self.ui_port = free_port(), free_port()
        vllm, webui = standin_images()
        data = {
            "project": self.project,
            "gpus": "none",
            "model": {"id": "acme/tiny-chat", "served_name": "tiny"},
            "api": {"port": self.api_port, "bind": "127.0.0.1"},
            "ui": {"port": self.ui_port, "bind": "127.0.0.1", "admin_email": "owner@example.com"},
            "images": {"vllm": vllm, "webui": webui},
            "hub": {"endpoint": hub.url},
            "paths": {n: str(tmp / n) for n in ("models", "ui_data", "stack", "state", "secrets")},
            "timeouts": {"ready": 60},
        }
        self.config = tmp / "config.yaml"
        self.config.write_text(yaml.safe_dump(data))

    def run(
        self,
        *args: str,
        kill_after: str | None = None,
        in_gate: bool = False,
        linode: bool = True,
        unit: bool = False,
    ) -> Any:
        env = nvml.fake_env(
            self.drivers,
            self.scenario,
            base=agent_env(
                SANDBOX_AGENT_CONFIG=str(self.config),
                SANDBOX_AGENT_ROOT=str(self.root),
                LINODE_ID="777",
                FAKE_BOX=str(self.box.folder),
                SANDBOX_AGENT_BUNDLE=str(self.bundle),
            ),
        )
        if not linode:  # as sandbox-agent-bootstrap.service runs it: no platform variables
            env.pop("LINODE_ID")
        if unit:  # ... and no variable of the first run at all: only what its ExecStart says
            for name in ("LINODE_ID", "SANDBOX_AGENT_CONFIG", "SANDBOX_AGENT_BUNDLE"):
                env.pop(name)
        if kill_after:
            env["KILL_AFTER"] = kill_after
        if in_gate:
            env["KILL_IN_GATE"] = "1"
        return subprocess.Popen(
            [sys.executable, str(DRIVER), "bootstrap", "--json", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, child: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str, str]:
        out, err = child.communicate(timeout=timeout)
        return child.returncode, out, err

    def status(self) -> dict[str, Any]:
        return json.loads((self.tmp / "state/bootstrap/777/last-run.json").read_text())


@pytest.fixture
def hub() -> Any:
    with running_hub() as server:
        server.add_repo(
            "acme/tiny-chat",
            {
                "config.json": json.dumps(TINY_CONFIG).encode(),
                "tokenizer.json": b'{"model": {"type": "BPE"}}',
                "model.safetensors": os.urandom(WEIGHTS),
            },
        )
        yield server


@pytest.fixture
def world(tmp_path: Path, hub: Any, fake_nvml_dir: Path) -> Any:
    w = World(tmp_path, hub, fake_nvml_dir)
    yield w
    remove_project(docker_client(), w.project)


def test_killed_mid_fetch_and_at_every_step_boundary_it_completes_with_no_side_effect_twice(
    world: World, hub: Any
) -> None:
    # 1. mid-fetch: the connection drops after 11 MiB, the resume request hangs; kill -9
    hub.drop("acme/tiny-chat", "model.safetensors", after=11 * MIB, times=1)
    gets: list[str] = []

    def slow_resume(repo: str, path: str) -> None:
        if path == "model.safetensors":
            gets.append(path)
            if len(gets) == 2:
                time.sleep(30)

    hub.on_download = slow_resume
    child = world.run()
    blobs = world.tmp / "models/hub/models--acme--tiny-chat/blobs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = [p for p in blobs.glob("*.incomplete") if p.stat().st_size >= 10 * MIB]
        if partial and len(gets) == 2:
            break
        time.sleep(0.05)
    else:
        child.kill()
        pytest.fail(f"the fetch never got half way: {child.communicate()}")
    child.send_signal(signal.SIGKILL)
    assert world.finish(child)[0] == -signal.SIGKILL
    assert world.status()["status"] == "running"  # what --status shows after the kill
    hub.on_download = None

    # 2. killed while the stack starts: its own containers hold the ports on the next run
    code, out, err = world.finish(world.run(in_gate=True))
    assert code == -signal.SIGKILL, err[-3000:]
    assert len(labelled(docker_client(), world.project)[0]) == 2

    # 3. killed right after each step's marker, each run going one boundary further
    for step in ALL:
        code, out, err = world.finish(world.run(kill_after=step.META.id))
        assert code == -signal.SIGKILL, f"{step.META.id}: {code}\n{out}\n{err[-3000:]}"

    # 4. the last run finds everything done
    code, out, err = world.finish(world.run())
    assert code == 0, err[-3000:]
    result = json.loads(out)
    assert result["status"] == "done"
    statuses = {s["id"]: s["status"] for s in result["steps"]}
    assert statuses["nvidia-driver"] == "done" and statuses["stack"] == "done"
    driver = next(s for s in result["steps"] if s["id"] == "nvidia-driver")
    assert driver["detail"] == "NVIDIA driver 580.95.05 is loaded (CUDA 13.0)"

    # one apt transaction, for the driver, on Debian 12 from NVIDIA's repository
    installs = world.box.installs()
    assert len(installs) == 1
    assert installs[0].split(" install ")[1].split() == [
        "nvidia-driver-pinning-580",
        "nvidia-open",
        f"linux-headers-{platform.release()}",
    ]
    keyring = world.root / "etc/apt/keyrings/cuda-debian12.asc"
    assert keyring.read_bytes() == (world.bundle / "apt-keys/cuda-debian12.asc").read_bytes()
    calls = world.box.calls()
    assert calls.count("systemctl enable --now sandbox-agent.service") == 1
    # the model: a file finished before the kill is never fetched again; the one cut by the
    # kill starts over once (huggingface_hub 2.x names a partial file at random and never
    # resumes it across processes; the agent sweeps it away) and nothing partial is left
    gets = [r for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]
    weights = [r.range for r in gets if r.path.endswith("model.safetensors")]
    assert weights[0] is None and weights[1].startswith("bytes=")  # the drop, resumed in-process
    assert len(weights) == 3 and weights[2] is None  # after the kill: once, whole
    assert sum(r.path.endswith("tokenizer.json") for r in gets) == 1
    assert not list(blobs.glob("*.incomplete")) and not list(blobs.glob("tmp_*"))
    assert sum(p.stat().st_size for p in blobs.iterdir()) == WEIGHTS + len(
        json.dumps(TINY_CONFIG)
    ) + len(b'{"model": {"type": "BPE"}}')
    # one key, one admin, one container per service
    key = (world.tmp / "secrets/api_key").read_text().strip()
    status, body = http(
        f"http://127.0.0.1:{world.api_port}/v1/chat/completions",
        key=key,
        body={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert status == 200, body
    users = json.loads((world.tmp / "ui_data/standin-users.json").read_text())["users"]
    assert [u["email"] for u in users] == ["owner@example.com"]
    containers, _ = labelled(docker_client(), world.project)
    assert sorted(containers) == [f"{world.project}-open-webui-1", f"{world.project}-vllm-1"]
    assert "Model: tiny" in (world.root / "etc/motd.d/sandbox-agent").read_text()


def test_the_reboot_path_enables_the_resume_unit_and_the_boot_resumes_after_the_driver(
    world: World,
) -> None:
    world.box.set(modprobe_nvidia_rc=1)  # nouveau holds the card until a reboot
    code, out, err = world.finish(world.run())
    assert code == 0, err[-3000:]
    first = json.loads(out)
    assert first["status"] == "rebooting"
    driver = next(s for s in first["steps"] if s["id"] == "nvidia-driver")
    assert driver["status"] == "reboot"
    assert "cannot load before a reboot" in driver["detail"]
    assert "sandbox-agent-bootstrap.service" in world.box.load()["enabled"]
    calls = world.box.calls()
    assert calls[-1] == "systemctl reboot"
    unit = world.root / "etc/systemd/system/sandbox-agent-bootstrap.service"
    assert unit.exists()
    stack_before = next(s for s in first["steps"] if s["id"] == "stack")
    assert stack_before["status"] == "pending"

    # the reboot: the module loads at boot, the driver's library is in place, a new boot id
    world.box.set(modprobe_nvidia_rc=0)
    (world.drivers / nvml.SONAME).write_bytes(
        Path(world.box.load()["on_modprobe"][0][0]).read_bytes()
    )
    (world.root / "proc/sys/kernel/random/boot_id").write_text("boot-2\n")
    # what sandbox-agent-bootstrap.service runs: this sandbox-agent on the run's settings file
    # (not the default), with no variable of the first run: the recorded instance id and
    # bundle serve
    [line] = [x for x in unit.read_text().splitlines() if x.startswith("ExecStart=")]
    command, *args = line.removeprefix("ExecStart=").split(" ")
    assert Path(command).name == "sandbox-agent" and Path(command).is_absolute()
    assert args == ["bootstrap", "--config", str(world.config)]
    assert f"\nConditionPathExists={world.config}\n" in unit.read_text()
    recorded = world.tmp / "state/bootstrap/777/bundle"
    assert recorded.read_text() == f"{world.bundle}\n"
    # a bundle gone by the boot is refused, not replaced by the network
    world.bundle.rename(world.tmp / "bundle-moved")
    code, out, err = world.finish(world.run(*args[1:], unit=True))
    assert code == 2, err[-3000:]
    assert json.loads(out)["error"] == (
        f"the bundle an earlier run was given ({recorded}): {world.bundle} does not exist: "
        "no bundle there"
    )
    (world.tmp / "bundle-moved").rename(world.bundle)
    code, out, err = world.finish(world.run(*args[1:], unit=True))
    assert code == 0, err[-3000:]
    second = json.loads(out)
    assert second["status"] == "done" and second["instance_id"] == "777"
    driver = next(s for s in second["steps"] if s["id"] == "nvidia-driver")
    assert (driver["status"], driver["detail"]) == (
        "done",
        "NVIDIA driver 580.95.05 is loaded (CUDA 13.0)",
    )
    assert len(world.box.installs()) == 1  # the driver was not installed again
    assert "sandbox-agent-bootstrap.service" not in world.box.load()["enabled"]
    assert not unit.exists()
