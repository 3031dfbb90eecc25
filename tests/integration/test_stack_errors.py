"""`sandbox-agent up` refusing bad input on the real engine: a clear error naming the culprit,
exit 1 or 2, and nothing half-started (no container, no network, no compose file)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import stack
from tests.integration.stack_support import (
    agent,
    docker_client,
    fake_snapshot,
    labelled,
    project_name,
    remove_project,
    standin_images,
    write_config,
)

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def images() -> tuple[str, str]:
    return standin_images()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    client = docker_client()
    name = project_name("sterr")
    fake_snapshot(tmp_path / "models", "acme/tiny-chat")
    try:
        yield name, client
    finally:
        remove_project(client, name)


def assert_nothing_started(client: Any, name: str, folder: Path) -> None:
    assert labelled(client, name) == ([], [])
    assert not (folder / "stack" / "docker-compose.yml").exists()


def test_unknown_compose_key_exits_2_naming_it(tmp_path, project, images) -> None:
    name, client = project
    template = tmp_path / "custom.yml"
    template.write_text(stack.TEMPLATE.read_text().replace("    ipc: host\n", "    privileged: true\n"))
    cfg = write_config(tmp_path, name, images)
    result = agent("up", "--config", str(cfg), "--template", str(template))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"error: {template}" not in result.stderr  # named as a template, by key path
    assert "services.vllm.privileged: unknown compose key" in result.stderr
    assert "Traceback" not in result.stderr
    assert_nothing_started(client, name, tmp_path)
    assert not (tmp_path / "secrets").exists()


def test_port_in_use_exits_1_naming_the_port(tmp_path, project, images) -> None:
    name, client = project
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = write_config(tmp_path, name, images, ui={"port": port})
        result = agent("up", "--config", str(cfg))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"port 127.0.0.1:{port} for open-webui is already in use" in result.stderr
    assert "ui.port" in result.stderr
    assert_nothing_started(client, name, tmp_path)


def test_missing_image_that_cannot_be_pulled_exits_1_naming_it(tmp_path, project, images) -> None:
    name, client = project
    missing = "sandbox-test/no-such-webui:never"
    cfg = write_config(tmp_path, name, images, images={"webui": missing})
    result = agent("up", "--config", str(cfg))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"the image {missing} is not on this machine and cannot be pulled" in result.stderr
    assert "images.webui" in result.stderr
    assert_nothing_started(client, name, tmp_path)


def test_model_not_downloaded_says_to_pull_it(tmp_path, project, images) -> None:
    name, client = project
    cfg = write_config(tmp_path, name, images, model={"id": "acme/never-pulled"})
    result = agent("up", "--config", str(cfg))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "sandbox-agent model pull acme/never-pulled" in result.stderr
    assert_nothing_started(client, name, tmp_path)


def test_gpus_without_nvidia_runtime_is_refused_before_anything_starts(
    tmp_path, project, images
) -> None:
    name, client = project
    cfg = write_config(tmp_path, name, images, gpus="all")
    result = agent("up", "--config", str(cfg))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gpus: all asks for GPUs, but the Docker engine has no NVIDIA runtime" in result.stderr
    assert "gpus: none" in result.stderr
    assert_nothing_started(client, name, tmp_path)


def test_a_crashing_vllm_fails_fast_with_its_last_log_lines(tmp_path, project, images) -> None:
    name, client = project
    snapshot = fake_snapshot(tmp_path / "models", "acme/tiny-chat")
    (snapshot / "standin.json").write_text(json.dumps({"crash_after": 0.2}))
    cfg = write_config(tmp_path, name, images, timeouts={"ready": 60})
    result = agent("up", "--config", str(cfg), timeout=90)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the vllm container keeps crashing" in result.stderr
    assert "last log lines of vllm" in result.stderr
    assert "sandbox-agent logs vllm" in result.stderr
