"""The StackScript as a person deploys it: run as root, in a clean environment, on a Debian 12
box whose PID 1 is a real systemd (a container), with the host's Docker engine through the
mounted socket, no NVIDIA device, the agent installed from a wheelhouse built here
(SANDBOX_AGENT_SOURCE), stand-in images and a local Hub server. It ends with a ready stack
that answers a chat completion with the generated key, the watchdog unit active, and the MOTD.

Data folders the stack bind-mounts are host paths (the engine is the host's), so they are
mounted into the box at the same path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.hub_server import running_hub
from tests.fakes.images import ensure_image
from tests.fakes.wheelhouse import wheelhouse
from tests.integration.stack_support import (
    TINY_CONFIG,
    docker_client,
    free_port,
    http,
    remove_project,
    standin_images,
)

pytestmark = [pytest.mark.docker, pytest.mark.systemd]
REPO = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"


def sh(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


class Box:
    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> Any:
        return sh(DOCKER, "exec", self.name, *args, timeout=timeout, check=check)


@pytest.fixture
def shared() -> Iterator[Path]:
    folder = Path("/var/tmp") / f"sbx-e2e-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def box(shared: Path) -> Iterator[Box]:
    image = ensure_image("systemd-box")
    wheels = wheelhouse(shared / "wheels")
    name = f"sbx-box-{uuid.uuid4().hex[:8]}"
    sh(
        DOCKER, "run", "-d", "--name", name, "--hostname", "gpu-box", "--network", "host",
        "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", "--tmpfs", "/run", "--tmpfs", "/run/lock",
        "-v", "/var/run/docker.sock:/var/run/docker.sock",
        "-v", f"{shared}:{shared}",
        "-v", f"{wheels}:/wheels:ro",
        "-v", f"{REPO / 'stackscript.sh'}:/root/StackScript:ro",
        image,
    )  # fmt: skip
    b = Box(name)
    try:
        for _ in range(60):
            state = b.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            subprocess.run(["sleep", "0.5"])
        yield b
    finally:
        sh(DOCKER, "rm", "-f", name, check=False)


def test_the_stackscript_deploys_a_ready_watched_stack(shared: Path, box: Box) -> None:
    vllm, webui = standin_images()
    project = f"e2e-{uuid.uuid4().hex[:6]}"
    api_port, ui_port = free_port(), free_port()
    client = docker_client()
    with running_hub() as hub:
        hub.add_repo(
            "acme/tiny-chat",
            {
                "config.json": json.dumps(TINY_CONFIG).encode(),
                "tokenizer.json": b'{"model": {"type": "BPE"}}',
                "model.safetensors": b"\x01" * 300_000,
            },
        )
        # Linode's launcher: a clean environment with the form's values as variables
        udfs = {
            "MODEL_ID": "acme/tiny-chat",
            "HF_TOKEN_PASSWORD": "",
            "API_BIND": "127.0.0.1",
            "ADMIN_EMAIL": "owner@example.com",
            "MAX_MODEL_LEN": "auto",
            "AGENT_VERSION": "0.1.0",
            "SERVED_MODEL_NAME": "tiny",
            "UI_BIND": "127.0.0.1",
            "API_PORT": str(api_port),
            "UI_PORT": str(ui_port),
            "PROJECT": project,
            "GPUS": "none",
            "VLLM_IMAGE": vllm,
            "WEBUI_IMAGE": webui,
            "MODELS_DIR": str(shared / "models"),
            "UI_DATA_DIR": str(shared / "open-webui"),
            "HF_ENDPOINT": hub.url,
            "READY_TIMEOUT": "120",
            "LINODE_ID": "90210",
            "SANDBOX_AGENT_SOURCE": "/wheels",
        }
        env = [f"{k}={v}" for k, v in udfs.items()]
        try:
            done = box.run(
                "env", "-i", "HOME=/root", "TERM=dumb",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                *env, "bash", "/root/StackScript",
                timeout=400, check=False,
            )  # fmt: skip
            log = box.run("cat", "/var/log/stackscript.log", check=False).stdout
            assert done.returncode == 0, log[-4000:]
            assert "sandbox-agent StackScript starting" in log
            # not a terminal: every step is a journal event (JSON lines), skips with a reason
            events = [json.loads(x) for x in log.splitlines() if x.startswith('{"')]
            skipped = {e["step"]: e["reason"] for e in events if e["event"] == "step.skipped"}
            assert skipped["nvidia-driver"] == "skipped: no NVIDIA GPU on the PCI bus"
            assert {e["step"] for e in events if e["event"] == "step.done"} >= {"stack", "motd"}
            assert "ready in" in done.stdout

            key = box.run("cat", "/etc/sandbox-agent/secrets/api_key").stdout.strip()
            assert box.run("stat", "-c", "%a", "/etc/sandbox-agent/secrets/api_key").stdout == (
                "600\n"
            )
            status, body = http(
                f"http://127.0.0.1:{api_port}/v1/chat/completions",
                key=key,
                body={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert status == 200 and body["choices"][0]["message"]["content"]
            assert http(f"http://127.0.0.1:{api_port}/v1/models")[0] == 401

            active = box.run("systemctl", "is-active", "sandbox-agent.service", check=False)
            assert active.stdout.strip() == "active", box.run(
                "journalctl", "-u", "sandbox-agent", "--no-pager", check=False
            ).stdout[-3000:]

            motd = box.run("cat", "/etc/motd.d/sandbox-agent").stdout
            assert f"API (OpenAI-compatible): http://127.0.0.1:{api_port}/v1" in motd
            assert f"Chat (Open WebUI): http://127.0.0.1:{ui_port}" in motd
            assert "API key: in /etc/sandbox-agent/secrets/api_key" in motd
            assert "Model: tiny" in motd and key not in motd

            config = box.run("cat", "/etc/sandbox-agent/config.yaml").stdout
            assert "acme/tiny-chat" in config and "hf_" not in config
            status_json = json.loads(
                box.run("sandbox-agent", "bootstrap", "--status", "--json").stdout
            )
            assert status_json["status"] == "done" and status_json["instance_id"] == "90210"
            assert {s["status"] for s in status_json["steps"]} == {"done", "skipped"}
            skipped = {
                s["id"]: s["detail"] for s in status_json["steps"] if s["status"] == "skipped"
            }
            assert skipped["nvidia-driver"] == "skipped: no NVIDIA GPU on the PCI bus"
            # the resume unit as the wheel ships it is a valid unit on this systemd
            site = box.run(
                "/opt/sandbox-agent/venv/bin/python", "-c",
                "import agent, pathlib; print(pathlib.Path(agent.__file__).parent)",
            ).stdout.strip()  # fmt: skip
            box.run("systemd-analyze", "verify", f"{site}/systemd/sandbox-agent-bootstrap.service")
            # the form again with a hostile model id: refused, nothing run, nothing changed
            again = box.run(
                "env", "-i", "HOME=/root", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "MODEL_ID=x|g;s|vllm/vllm-openai:latest|attacker/img$(touch /tmp/pwned)",
                "LINODE_ID=90210", "SANDBOX_AGENT_SOURCE=/wheels", "bash", "/root/StackScript",
                timeout=120, check=False,
            )  # fmt: skip
            assert again.returncode == 2, again.stdout[-2000:]
            assert "error: model.id (from environment MODEL_ID)" in again.stdout
            assert box.run("test", "-e", "/tmp/pwned", check=False).returncode == 1
            assert box.run("cat", "/etc/sandbox-agent/config.yaml").stdout == config
            # nothing left enabled to resume: there was no reboot
            gone = box.run(
                "systemctl", "is-enabled", "sandbox-agent-bootstrap.service", check=False
            )
            assert gone.returncode != 0
        finally:
            remove_project(client, project)
