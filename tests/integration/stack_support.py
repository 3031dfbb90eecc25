"""What the stack tests share: the stand-in images, a fake model snapshot in the HF cache
layout, a config on ephemeral ports, `sandbox-agent` as a subprocess, and clean-up by label."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import AGENT, agent_env

PROJECT_LABEL = "com.docker.compose.project"
TINY_CONFIG = {  # a model config.json the fit can size; the stand-in serves anything
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": 2048,
}


def docker_client(base_url: str = "unix:///var/run/docker.sock") -> Any:
    import docker

    try:
        client = docker.DockerClient(base_url=base_url, timeout=60)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker engine ({exc}): tests/run.sh installs and starts one")
    return client


def standin_images() -> tuple[str, str]:
    from tests.fakes.images import ensure_image

    return ensure_image("vllm-standin"), ensure_image("webui-standin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def project_name(prefix: str = "st") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def fake_snapshot(models: Path, repo_id: str, commit: str | None = None) -> Path:
    """A complete snapshot as `sandbox-agent model pull` leaves it: blobs, snapshot links,
    refs/main, and the agent's completion marker."""
    from agent import settings as settings_mod
    from agent.models import marker_path

    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    repo = models / "hub" / ("models--" + repo_id.replace("/", "--"))
    config = json.dumps(TINY_CONFIG).encode()
    blob = repo / "blobs" / hashlib.sha256(config).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(config)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    link = snap / "config.json"
    if not link.exists():
        link.symlink_to(Path("../../blobs") / blob.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    s = settings_mod.load(Path("/nonexistent"), flags={"paths.models": str(models)})
    marker = marker_path(s, repo_id, commit)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"files": [{"path": "config.json", "size": len(config)}]}))
    return snap


def write_config(folder: Path, project: str, standins: tuple[str, str], **over: Any) -> Path:
    data: dict[str, Any] = {
        "project": project,
        "gpus": "none",
        "model": {"id": "acme/tiny-chat", "served_name": "tiny"},
        "api": {"port": free_port(), "bind": "127.0.0.1"},
        "ui": {"port": free_port(), "bind": "127.0.0.1", "admin_email": "admin@example.com"},
        "images": {"vllm": standins[0], "webui": standins[1]},
        "paths": {
            name: str(folder / name) for name in ("models", "ui_data", "stack", "state", "secrets")
        },
        "timeouts": {"ready": 60},
    }
    for key, value in over.items():
        data[key] = {**data[key], **value} if isinstance(data.get(key), dict) else value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def agent(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENT, *args],
        capture_output=True,
        text=True,
        env={**agent_env(), **(env or {})},
        timeout=timeout,
    )


def rendered_project(folder: Path, project: str, standins: tuple[str, str]) -> Any:
    """The stack's Project as `sandbox-agent up` renders it (a fake model, env files written),
    for tests that drive `stack.reconcile` and `stack.down` themselves."""
    import dataclasses

    from agent import deploy, settings, stack

    fake_snapshot(folder / "models", "acme/tiny-chat")
    s = settings.load(write_config(folder, project, standins))
    key = "key-" + project
    spec = dataclasses.replace(
        deploy.plan(s, docker_client()).spec,
        secret_env={stack.VLLM: {"VLLM_API_KEY": key}, stack.UI: {"OPENAI_API_KEY": key}},
    )
    out = stack.render(s, spec)
    stack.write_env_files(out)
    return stack.load_project(out.path, text=out.text)


def remove_project(client: Any, project: str) -> None:
    """Remove everything labelled with the project, whatever state a failed test left."""
    for container in client.containers.list(
        all=True, filters={"label": f"{PROJECT_LABEL}={project}"}
    ):
        container.remove(force=True)
    for network in client.networks.list(filters={"label": f"{PROJECT_LABEL}={project}"}):
        network.remove()


def labelled(client: Any, project: str) -> tuple[list[str], list[str]]:
    label = {"label": f"{PROJECT_LABEL}={project}"}
    return (
        [c.name for c in client.containers.list(all=True, filters=label)],
        [n.name for n in client.networks.list(filters=label)],
    )


def http(url: str, *, key: str | None = None, body: Any = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
