"""The StackScript as a person deploys it: the release's stamped script run as root, in a clean
environment, on a Debian 12 box whose PID 1 is a real systemd (a container), with the host's
Docker engine through the mounted socket, no NVIDIA device, stand-in images and a local Hub
server. The release (packaging/build.py release) is served over HTTP on the host's loopback
(the box shares the host's network); the box's pip takes the dependencies from a local
wheelhouse (PIP_NO_INDEX=1, PIP_FIND_LINKS), which the release's hashes make safe. It ends
with a ready stack that answers a chat completion with the generated key, the watchdog unit
active, and the MOTD. The same script stops before the agent is installed when the agent's
wheel or one dependency's wheel is another build of the same name and version, and the
unstamped template refuses to run.

Data folders the stack bind-mounts are host paths (the engine is the host's), so they are
mounted into the box at the same path.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.hub_server import running_hub
from tests.fakes.images import ensure_image
from tests.fakes.wheelhouse import build_module, dependency_wheels, wheelhouse
from tests.fakes.wheels import rebuilt
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


PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Release:
    folder: Path  # what is published, served at url
    url: str
    wheel: Path
    script: Path  # the stamped StackScript
    deps: Path  # the dependencies' wheels (no agent wheel): the box's PIP_FIND_LINKS
    requests: list[str]


class _Files(SimpleHTTPRequestHandler):
    seen: list[str]

    def log_message(self, *args: object) -> None:
        self.seen.append(self.path)


@pytest.fixture(scope="module")
def release() -> Iterator[Release]:
    """A release of this checkout, built as a person cuts one, served on 127.0.0.1."""
    work = Path("/var/tmp") / f"sbx-release-{uuid.uuid4().hex[:8]}"
    www = work / "www"
    www.mkdir(parents=True)
    seen: list[str] = []
    handler = type("Files", (_Files,), {"seen": seen})
    with ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(www))
    ) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/sandbox-agent/v0.1.0"
        deps = dependency_wheels()
        out = www / "sandbox-agent" / "v0.1.0"
        locked = build_module().build_release(out, url, find_links=deps)
        assert any(str(t).startswith("cp311-manylinux-x86_64") for t in locked.complete())
        [wheel] = out.glob("*.whl")
        try:
            yield Release(out, url, wheel, out / "stackscript.sh", deps, seen)
        finally:
            httpd.shutdown()
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def shared() -> Iterator[Path]:
    folder = Path("/var/tmp") / f"sbx-e2e-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def running_box(shared: Path, mounts: dict[Path, str]) -> Iterator[Box]:
    image = ensure_image("systemd-box")
    name = f"sbx-box-{uuid.uuid4().hex[:8]}"
    volumes = [x for host, inside in mounts.items() for x in ("-v", f"{host}:{inside}:ro")]
    sh(
        DOCKER, "run", "-d", "--name", name, "--hostname", "gpu-box", "--network", "host",
        "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", "--tmpfs", "/run", "--tmpfs", "/run/lock",
        "-v", "/var/run/docker.sock:/var/run/docker.sock",
        "-v", f"{shared}:{shared}", *volumes,
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


@pytest.fixture
def box(shared: Path, release: Release) -> Iterator[Box]:
    wheels = wheelhouse(shared / "wheels")  # an offline bundle, for the second run
    mounts = {release.script: "/root/StackScript", release.deps: "/deps", wheels: "/wheels"}
    with running_box(shared, mounts) as b:
        yield b


def nothing_installed(box: Box) -> None:
    """Not the agent, not its link: what a refused install leaves."""
    assert box.run("test", "-e", "/usr/local/bin/sandbox-agent", check=False).returncode == 1
    venv = "/opt/sandbox-agent/venv/bin/python"
    if box.run("test", "-e", venv, check=False).returncode == 0:
        listed = box.run(venv, "-m", "pip", "list", "--format=freeze").stdout
        assert "linode-ai-sandbox-agent" not in listed and "PyYAML" not in listed, listed
        assert box.run(venv, "-c", "import agent", check=False).returncode == 1


def test_the_stackscript_deploys_a_ready_watched_stack(
    shared: Path, box: Box, release: Release
) -> None:
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
            "DOMAIN": "",
            "ADMIN_EMAIL": "owner@example.com",
            "MAX_MODEL_LEN": "auto",
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
            # the box's pip has no index but this folder: every wheel is checked by its hash
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": "/deps",
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
            digest = hashlib.sha256(release.wheel.read_bytes()).hexdigest()
            assert f"{release.wheel.name}: sha256 {digest} as stamped" in log
            assert {
                "/sandbox-agent/v0.1.0/requirements.txt",
                f"/sandbox-agent/v0.1.0/{release.wheel.name}",
            } <= set(release.requests)
            listed = box.run(
                "/opt/sandbox-agent/venv/bin/python", "-m", "pip", "list", "--format=freeze"
            ).stdout
            assert "linode-ai-sandbox-agent==0.1.0" in listed.splitlines()
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
            # the form again with a hostile model id, from the offline bundle (hash-checked as
            # well): refused, nothing run, nothing changed
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


def test_the_stackscript_installs_nothing_that_is_not_the_release(
    shared: Path, release: Release
) -> None:
    """The install part alone: each case stops before the venv holds the agent, so no
    bootstrap runs. A dependency's wheel and the agent's own are swapped for another build
    with the same name and version (one file changed: the sha256 differs)."""
    swapped = shared / "swapped-deps"
    shutil.copytree(release.deps, swapped)
    [dep] = swapped.glob("pyyaml-*.whl")
    dep_expected = hashlib.sha256(dep.read_bytes()).hexdigest()
    rebuilt(dep)
    dep_got = hashlib.sha256(dep.read_bytes()).hexdigest()
    template = shared / "template.sh"
    shutil.copy2(REPO / "stackscript.sh", template)
    mounts = {
        release.script: "/root/StackScript",
        template: "/root/Template",
        release.deps: "/deps",
    }
    form = ["env", "-i", "HOME=/root", PATH, "MODEL_ID=acme/tiny-chat", "LINODE_ID=90210"]
    with running_box(shared, mounts) as box:
        # the template as it is in the checkout: no release named, nothing done
        done = box.run(*form, "bash", "/root/Template", check=False)
        assert done.returncode == 2, done.stdout
        assert "error: this stackscript.sh is the unstamped template" in done.stdout
        assert "python packaging/build.py release OUT --base-url URL" in done.stdout
        assert box.run("test", "-e", "/opt/sandbox-agent", check=False).returncode == 1

        # the published agent wheel is another build: refused before python3-venv or the venv
        good = release.wheel.read_bytes()
        expected = hashlib.sha256(good).hexdigest()
        try:
            got = hashlib.sha256(rebuilt(release.wheel).read_bytes()).hexdigest()
            local = ["PIP_NO_INDEX=1", "PIP_FIND_LINKS=/deps"]
            done = box.run(*form, *local, "bash", "/root/StackScript", check=False, timeout=180)
        finally:
            release.wheel.write_bytes(good)
        assert done.returncode == 1, done.stdout
        assert (
            f"error: {release.wheel.name} is not the file of this release: "
            f"sha256 expected {expected}, got {got}; nothing was installed"
        ) in done.stdout
        assert box.run("test", "-e", "/opt/sandbox-agent/venv", check=False).returncode == 1
        nothing_installed(box)

        # one dependency's wheel is another build: pip checks every hash before it installs
        local = ["PIP_NO_INDEX=1", f"PIP_FIND_LINKS={swapped}"]
        done = box.run(*form, *local, "bash", "/root/StackScript", check=False, timeout=300)
        assert done.returncode == 1, done.stdout
        assert "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE" in done.stdout
        pin = build_module().read_pins()["pyyaml"]
        assert f"pyyaml=={pin} from file://{dep}" in done.stdout
        assert f"Expected sha256 {dep_expected}" in done.stdout
        assert f"Got        {dep_got}" in done.stdout
        assert "error: pip refused the release's install (see above)" in done.stdout
        nothing_installed(box)
        # and no bootstrap ran: it keeps its state there from its first step on
        assert box.run("test", "-e", "/var/lib/sandbox-agent", check=False).returncode == 1


def test_the_stackscript_ends_with_the_https_ui_answering(
    shared: Path, box: Box, release: Release, pebble: Any
) -> None:
    """The form with a domain and a public UI: the bootstrap starts the proxy, which gets its
    certificate from a real ACME server (pebble on the host's loopback), and the UI answers
    over verified TLS by its name; vLLM and Open WebUI publish on loopback only."""
    from tests.fakes import acme
    from tests.integration.caddy_support import NAME, https, tcp_listeners

    vllm, webui = standin_images()
    project = f"e2e-https-{uuid.uuid4().hex[:6]}"
    api_port, ui_port = free_port(), free_port()
    client = docker_client()
    # Bind mounts made from inside the box are the host's paths: the Caddyfile (paths.stack),
    # the certificate store (paths.state) and the CA root live in the folder both share.
    root = shared / "acme-ca-root.pem"
    shutil.copy(pebble.listener_cert, root)
    config = {"paths": {"stack": str(shared / "stack"), "state": str(shared / "state")}}
    box.run("mkdir", "-p", "/etc/sandbox-agent")
    box.run("sh", "-c", f"echo '{json.dumps(config)}' > /etc/sandbox-agent/config.yaml")
    before = pebble.issued()
    with running_hub() as hub:
        hub.add_repo("acme/tiny-chat", {"config.json": json.dumps(TINY_CONFIG).encode()})
        udfs = {
            "MODEL_ID": "acme/tiny-chat",
            "DOMAIN": NAME,
            "API_BIND": "127.0.0.1",
            "UI_BIND": "0.0.0.0",
            "ADMIN_EMAIL": "owner@corp.io",
            "SERVED_MODEL_NAME": "tiny",
            "API_PORT": str(api_port),
            "UI_PORT": str(ui_port),
            "HTTP_PORT": str(acme.HTTP_PORT),
            "HTTPS_PORT": str(acme.TLS_PORT),
            "HTTPS_API_PORT": str(free_port()),
            "PROXY_HEALTH_PORT": str(free_port()),
            "ACME_CA": pebble.directory_url,
            "ACME_CA_ROOT": str(root),
            "PROXY_IMAGE": ensure_image("caddy-standin"),
            "PROJECT": project,
            "GPUS": "none",
            "VLLM_IMAGE": vllm,
            "WEBUI_IMAGE": webui,
            "MODELS_DIR": str(shared / "models"),
            "UI_DATA_DIR": str(shared / "open-webui"),
            "HF_ENDPOINT": hub.url,
            "READY_TIMEOUT": "120",
            "LINODE_ID": "90211",
            "SANDBOX_AGENT_METADATA_URL": "http://127.0.0.1:9/v1",  # never the link-local one
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": "/deps",
        }
        try:
            done = box.run(
                "env", "-i", "HOME=/root", "TERM=dumb",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                *[f"{k}={v}" for k, v in udfs.items()], "bash", "/root/StackScript",
                timeout=400, check=False,
            )  # fmt: skip
            log = box.run("cat", "/var/log/stackscript.log", check=False).stdout
            assert done.returncode == 0, log[-4000:]
            pebble.wait_issued(before + 1, timeout=60)
            ca = shared / "pebble-root.pem"
            ca.write_text(pebble.root_pem())
            for _ in range(60):  # Caddy serves the certificate a moment after the issuance
                with contextlib.suppress(OSError):
                    reply = https("/health", cafile=ca)
                    break
                subprocess.run(["sleep", "0.5"])
            assert reply.status == 200
            assert reply.headers["Strict-Transport-Security"] == "max-age=31536000"
            assert tcp_listeners(ui_port) == {"127.0.0.1"}
            assert tcp_listeners(api_port) == {"127.0.0.1"}
            saved = box.run("cat", "/etc/sandbox-agent/config.yaml").stdout
            assert f"domain: {NAME}" in saved
            key = box.run("cat", "/etc/sandbox-agent/secrets/api_key").stdout.strip()
            assert key not in (shared / "stack" / "Caddyfile").read_text()
        finally:
            remove_project(client, project)
