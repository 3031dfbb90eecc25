"""Compose's own config hashes for a table of services, from the real Compose v2 binary.

`tests/unit/test_compose_hash.py` holds the hashes recorded from here; the integration tier
(`tests/integration/test_compose_hash_real.py`) asks the binary again, so the record cannot
drift from the Compose release the tests carry. To regenerate the record (needs the Docker
engine and the stand-in images for the cases with an env file)::

    .venv/bin/python -m tests.fakes.compose_hashes

A case without an env file is hashed by `docker compose config --hash`: with no env file the
service `up` hashes is the same. `config --hash` leaves env files unread, while `up` merges
them into `environment` first, so a case with one is created with `docker compose create` and
the hash read from the container's `com.docker.compose.config-hash` label.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from tests.fakes.compose_v2 import docker_compose

SERVICE = "svc"
IMAGE = "sandbox-test/vllm-standin:current"  # an image `create` finds without a registry
ENV_FILE = "@ENV_FILE@"  # stands for the case's env file in its YAML
HEALTH = "      interval: 10s\n      timeout: 5s\n      retries: 4\n"

# id -> (the service's YAML, indented for `services.svc`; the env file's text or None)
CASES: dict[str, tuple[str, str | None]] = {
    "image-only": ("    image: vllm/vllm-openai:v0.6.3\n", None),
    "template-vllm-no-gpu": (
        "    image: vllm/vllm-openai:v0.6.3\n"
        "    command:\n"
        "    - /root/.cache/huggingface/hub/models--acme--tiny/snapshots/abc\n"
        "    - --served-model-name=tiny\n"
        "    - --max-model-len=2048\n"
        "    environment:\n"
        "      HF_HOME: /root/.cache/huggingface\n"
        "      HF_HUB_OFFLINE: '1'\n"
        "    volumes:\n"
        "    - /srv/models:/root/.cache/huggingface\n"
        "    - /srv/models/vllm-cache:/root/.cache/vllm\n"
        "    ipc: host\n"
        "    ports:\n"
        "    - 127.0.0.1:8000:8000\n"
        "    healthcheck:\n"
        "      test:\n"
        "      - CMD\n"
        "      - python3\n"
        "      - -c\n"
        "      - import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')\n"
        + HEALTH
        + "      start_period: 30m\n"
        "    restart: unless-stopped\n",
        None,
    ),
    "gpu-count-all": (
        "    image: vllm/vllm-openai:v0.6.3\n"
        "    deploy:\n"
        "      resources:\n"
        "        reservations:\n"
        "          devices:\n"
        "          - driver: nvidia\n"
        "            count: all\n"
        "            capabilities: [gpu]\n",
        None,
    ),
    "gpu-count-2": (
        "    image: vllm/vllm-openai:v0.6.3\n"
        "    deploy:\n"
        "      resources:\n"
        "        reservations:\n"
        "          devices:\n"
        "          - driver: nvidia\n"
        "            count: 2\n"
        "            capabilities: [gpu]\n",
        None,
    ),
    "gpu-no-count": (
        "    image: vllm/vllm-openai:v0.6.3\n"
        "    deploy:\n"
        "      resources:\n"
        "        reservations:\n"
        "          devices:\n"
        "          - capabilities: [gpu]\n",
        None,
    ),
    "gpu-device-ids": (
        "    image: vllm/vllm-openai:v0.6.3\n"
        "    deploy:\n"
        "      resources:\n"
        "        reservations:\n"
        "          devices:\n"
        "          - driver: nvidia\n"
        "            device_ids: ['0', '3']\n"
        "            capabilities: [gpu, utility]\n",
        None,
    ),
    "ports-ipv6-bare-tcp": (
        "    image: ghcr.io/open-webui/open-webui:v0.3.35\n"
        "    ports:\n"
        "    - '[::1]:3000:8080'\n"
        "    - 8081:8080\n"
        "    - 0.0.0.0:09000:9000/tcp\n",
        None,
    ),
    "volume-options": (
        "    image: ghcr.io/open-webui/open-webui:v0.3.35\n"
        "    volumes:\n"
        "    - /srv/ui:/app/backend/data/\n"
        "    - /srv/ro:/a/../ro:ro\n"
        "    - /srv/rw:/rw:rw\n"
        "    - /srv/z:/z:Z,rshared\n",
        None,
    ),
    "health-durations": (
        "    image: ghcr.io/open-webui/open-webui:v0.3.35\n"
        "    healthcheck:\n"
        "      test: curl -fsS http://127.0.0.1:8080/health || exit 1\n"
        "      interval: 1m30s\n"
        "      timeout: 1500ms\n"
        "      retries: 0\n"
        "      start_period: 1h\n",
        None,
    ),
    "health-small-durations": (
        "    image: ghcr.io/open-webui/open-webui:v0.3.35\n"
        "    healthcheck:\n"
        "      test: [CMD-SHELL, 'true']\n"
        "      interval: 0s\n"
        "      timeout: 250us\n"
        "      start_period: 2.5s\n",
        None,
    ),
    "health-disabled": (
        "    image: ghcr.io/open-webui/open-webui:v0.3.35\n    healthcheck:\n      disable: true\n",
        None,
    ),
    "string-command-list-env": (
        "    image: vllm/vllm-openai:v0.6.3\n"
        "    command: /models/x --served-model-name 'a b' --port=8000\n"
        "    environment:\n"
        "    - A=1\n"
        "    - B=x=y\n"
        "    - EMPTY=\n",
        None,
    ),
    "env-scalars-and-escapes": (
        "    image: vllm/vllm-openai:v0.6.3\n"
        "    environment:\n"
        "      FLAG: true\n"
        "      DISABLED: false\n"
        "      QUOTED: 'yes'\n"
        "      COUNT: 3\n"
        "      RATIO: 0.5\n"
        "      HTML: <a href='x'>&amp;</a>\n"
        "      DOLLAR: pa$$word\n"
        '      UNICODE: "caf\\u00e9 \\u2028 \\u2029 \\t tab"\n',
        None,
    ),
    "shm-size-restart-no": (
        "    image: vllm/vllm-openai:v0.6.3\n    shm_size: 1g\n    restart: 'no'\n",
        None,
    ),
    "proxy-host-network": (
        "    image: caddy:2.10.2\n"
        "    network_mode: host\n"
        "    environment:\n"
        "      SANDBOX_AGENT_CADDYFILE_SHA256: 3f2a\n"
        "    volumes:\n"
        "    - /opt/ai-sandbox/Caddyfile:/etc/caddy/Caddyfile:ro\n"
        "    - /var/lib/sandbox-agent/proxy/data:/data\n"
        "    healthcheck:\n"
        "      test:\n"
        "      - CMD\n"
        "      - wget\n"
        "      - -q\n"
        "      - http://127.0.0.1:8472/health\n" + HEALTH + "    restart: unless-stopped\n",
        None,
    ),
    "env-file-merged": (
        f"    image: {IMAGE}\n"
        "    environment:\n"
        "      HF_HOME: /root/.cache/huggingface\n"
        "      SHARED: from-environment\n"
        "    env_file:\n"
        f"    - {ENV_FILE}\n",
        "# written by sandbox-agent\nVLLM_API_KEY='k-1234567890'\nSHARED='from-the-file'\n",
    ),
    "env-file-tricky-values": (
        f"    image: {IMAGE}\n    env_file:\n    - {ENV_FILE}\n",
        "# written by sandbox-agent\n"
        "WEBUI_SECRET_KEY='s$cr&t<x> #not-a-comment \\\\n'\n"
        "WEBUI_ADMIN_EMAIL='admin@example.com'\n"
        "WEBUI_ADMIN_PASSWORD='pässwörd\"`'\n",
    ),
}


def compose_file(case: str, env_file: Path) -> str:
    service, _ = CASES[case]
    return f"name: hash-{case}\nservices:\n  {SERVICE}:\n" + service.replace(
        ENV_FILE, str(env_file)
    )


def write_case(case: str, folder: Path) -> Path:
    """The case as a stack folder: docker-compose.yml and, if it has one, svc.env."""
    folder.mkdir(parents=True, exist_ok=True)
    env_file = folder / f"{SERVICE}.env"
    _, env = CASES[case]
    if env is not None:
        env_file.write_text(env)
    path = folder / "docker-compose.yml"
    path.write_text(compose_file(case, env_file))
    return path


def real_hash(case: str, folder: Path) -> str:
    """What Compose itself computes for the case's service."""
    path = write_case(case, folder)
    if CASES[case][1] is None:
        out = docker_compose(["config", "--hash", SERVICE], cwd=path.parent, check=True).stdout
        name, value = out.split()
        assert name == SERVICE, out
        return value
    project = f"hash-{case}-{uuid.uuid4().hex[:8]}"  # the name is not part of the hash
    try:
        docker_compose(["-p", project, "create", "--pull", "never"], cwd=path.parent, check=True)
        ps = docker_compose(["-p", project, "ps", "-a", "-q"], cwd=path.parent, check=True)
        inspect = subprocess.run(
            ["docker", "inspect", *ps.stdout.split()], capture_output=True, text=True, check=True
        )
        (container,) = json.loads(inspect.stdout)
        return str(container["Config"]["Labels"]["com.docker.compose.config-hash"])
    finally:
        docker_compose(["-p", project, "down"], cwd=path.parent)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        print("RECORDED = {")
        for case in CASES:
            print(f'    "{case}": "{real_hash(case, Path(tmp) / case)}",')
        print("}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
