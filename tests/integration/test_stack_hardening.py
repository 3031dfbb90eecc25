"""Issue 8 on the real engine with the stand-ins: `up` fetches a model it never saw, the gate
refuses an API that answers without the key, `logs` redacts what a service printed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.hub_server import HubServer
from tests.integration.stack_support import (
    TINY_CONFIG,
    agent,
    docker_client,
    fake_snapshot,
    http,
    project_name,
    remove_project,
    standin_images,
    write_config,
)

pytestmark = pytest.mark.docker
CONFIG = TINY_CONFIG


@pytest.fixture
def project() -> Iterator[str]:
    name = project_name("hard")
    yield name
    remove_project(docker_client(), name)


def test_up_on_a_box_that_never_pulled_fetches_the_model_then_ends_ready(
    tmp_path: Path, project: str, hub: HubServer
) -> None:
    commit = hub.add_repo(
        "acme/tiny-chat",
        {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": b"\x01" * 200_000,
         "tokenizer.json": b"{}"},
    )  # fmt: skip
    cfg = write_config(tmp_path, project, standin_images(), hub={"endpoint": hub.url})
    assert not (tmp_path / "models").exists()
    ran = agent("up", "--json", "--config", str(cfg), timeout=180)
    assert ran.returncode == 0, ran.stderr[-3000:]
    events = [json.loads(line) for line in ran.stderr.splitlines() if line.startswith("{")]
    names = [e.get("event") for e in events]
    assert "model.missing" in names and "model.pull.done" in names
    assert names.index("model.pull.done") < names.index("stack.ready")
    snap = tmp_path / "models/hub/models--acme--tiny-chat/snapshots" / commit
    assert (snap / "model.safetensors").stat().st_size == 200_000
    listed = agent("model", "list", "--json", "--config", str(cfg))
    [model] = json.loads(listed.stdout)["models"]
    assert model["complete"] and model["serving"] and model["commit"] == commit


def test_the_gate_stops_a_vllm_that_answers_without_the_key(tmp_path: Path, project: str) -> None:
    snap = fake_snapshot(tmp_path / "models", "acme/tiny-chat")
    (snap / "standin.json").write_text(json.dumps({"no_auth": True}))
    cfg = write_config(tmp_path, project, standin_images(), ui={"enabled": False})
    ran = agent("up", "--config", str(cfg), timeout=120)
    assert ran.returncode == 1, ran.stderr
    assert (
        "error: the API key being required: /v1/models answered 200 without the API key"
        in ran.stderr
    )
    assert "vLLM was stopped" in ran.stderr
    [vllm] = docker_client().containers.list(
        all=True, filters={"label": f"com.docker.compose.project={project}"}
    )
    assert vllm.status == "exited"  # nobody can use the open API any more


def test_logs_redact_a_key_the_service_printed_even_split_across_chunks(
    tmp_path: Path, project: str
) -> None:
    snap = fake_snapshot(tmp_path / "models", "acme/tiny-chat")
    (snap / "standin.json").write_text(json.dumps({"print_key": True}))
    cfg = write_config(tmp_path, project, standin_images(), ui={"enabled": False})
    assert agent("up", "--config", str(cfg), timeout=120).returncode == 0
    key = (tmp_path / "secrets" / "api_key").read_text().strip()
    raw = docker_client().containers.get(f"{project}-vllm-1").logs().decode()
    assert key in raw  # the service really printed it
    ran = agent("logs", "vllm", "--config", str(cfg), timeout=60)
    assert ran.returncode == 0
    assert key not in ran.stdout and key[:9] not in ran.stdout
    assert "api key [REDACTED] loaded" in ran.stdout


def test_doctor_finds_an_open_api_on_loopback_too(tmp_path: Path, project: str) -> None:
    snap = fake_snapshot(tmp_path / "models", "acme/tiny-chat")
    cfg = write_config(tmp_path, project, standin_images(), ui={"enabled": False})
    assert agent("up", "--config", str(cfg), timeout=120).returncode == 0
    # the same container, started again without its key: what a careless edit would leave
    (snap / "standin.json").write_text(json.dumps({"no_auth": True}))
    container: Any = docker_client().containers.get(f"{project}-vllm-1")
    container.restart(timeout=5)
    api = f"http://127.0.0.1:{container.attrs['HostConfig']['PortBindings']['8000/tcp'][0]['HostPort']}"
    for _ in range(100):
        try:
            if http(f"{api}/health")[0] == 200:
                break
        except OSError:  # the restart closes the port for a moment
            pass
        time.sleep(0.2)
    ran = agent("doctor", "--json", "--config", str(cfg), timeout=90)
    checks = {c["id"]: c for c in json.loads(ran.stdout)["checks"]}
    assert checks["stack.api"]["status"] == "fail"
    assert checks["stack.api"]["summary"] == (
        "vLLM answers without the API key: anyone who reaches it can use it"
    )
    assert checks["stack.exposure"]["status"] == "fail"
    assert "answers /v1/models without an API key" in checks["stack.exposure"]["detail"]
