"""stack.exposure on the real engine: a published port that lets a stranger in is a failure."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import settings
from agent.checks import stack as stack_checks
from agent.checks.base import DoctorContext
from tests.integration.stack_support import (
    PROJECT_LABEL,
    docker_client,
    free_port,
    project_name,
    remove_project,
    standin_images,
)

pytestmark = pytest.mark.docker


@pytest.fixture
def open_stack(tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    """vLLM without an API key and a UI nobody has claimed, published on every address:
    what a hand-edited compose file or an older seed box can leave behind."""
    client = docker_client()
    vllm_image, ui_image = standin_images()
    project = project_name("exp")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    api_port, ui_port = free_port(), free_port()

    def labels(service: str) -> dict[str, str]:
        return {
            PROJECT_LABEL: project,
            "com.docker.compose.service": service,
            "com.docker.compose.oneoff": "False",
            "com.docker.compose.config-hash": "x",
        }

    try:
        client.containers.run(
            vllm_image,
            ["/model", "--served-model-name", "m"],
            name=f"{project}-vllm-1",
            volumes={str(model): {"bind": "/model", "mode": "ro"}},
            ports={"8000/tcp": ("0.0.0.0", api_port)},
            labels=labels("vllm"),
            detach=True,
        )
        client.containers.run(
            ui_image,
            name=f"{project}-open-webui-1",
            environment={"DATA_DIR": "/tmp/ui"},
            ports={"8080/tcp": ("0.0.0.0", ui_port)},
            labels=labels("open-webui"),
            detach=True,
        )
        yield project, api_port, ui_port
    finally:
        remove_project(client, project)


def exposure(tmp_path: Path, project: str) -> stack_checks.Check:
    s = settings.load(tmp_path / "none.yaml", flags={"project": project, "model.served_name": "m"})
    return stack_checks.check_exposure(DoctorContext(settings=s, root=tmp_path))


def test_open_api_and_unclaimed_ui_fail_exposure(tmp_path: Path, open_stack) -> None:
    project, api_port, ui_port = open_stack
    deadline = time.monotonic() + 20
    check = exposure(tmp_path, project)
    while (
        not ("vLLM" in check.detail and "Open WebUI" in check.detail)
        and time.monotonic() < deadline
    ):
        time.sleep(0.5)
        check = exposure(tmp_path, project)
    assert check.status == "fail"
    assert check.summary == "a service is open to anyone who can reach it"
    assert (
        f"vLLM at http://127.0.0.1:{api_port} answers /v1/models without an API key" in check.detail
    )
    assert (
        f"Open WebUI at http://127.0.0.1:{ui_port}: no user exists yet: the first visitor to sign up becomes the admin"
        in check.detail
    )
    assert "bind the port to 127.0.0.1" in check.fix


def test_nothing_running_is_not_called_safe(tmp_path: Path) -> None:
    check = exposure(tmp_path, project_name("none"))
    assert (check.status, check.summary) == ("skip", "no service of the stack is running")


def test_a_port_the_engine_picked_is_checked_too(tmp_path: Path) -> None:
    """`ports: ["8000"]` in a hand-edited file: the engine picks the host port at start."""
    client = docker_client()
    vllm_image, _ = standin_images()
    project = project_name("exp")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    try:
        container = client.containers.run(
            vllm_image,
            ["/model", "--served-model-name", "m"],
            name=f"{project}-vllm-1",
            volumes={str(model): {"bind": "/model", "mode": "ro"}},
            ports={"8000/tcp": None},
            labels={PROJECT_LABEL: project, "com.docker.compose.service": "vllm"},
            detach=True,
        )
        container.reload()
        port = next(b["HostPort"] for b in container.ports["8000/tcp"] if "." in b["HostIp"])
        deadline = time.monotonic() + 20
        check = exposure(tmp_path, project)
        while "vLLM" not in check.detail and time.monotonic() < deadline:
            time.sleep(0.5)
            check = exposure(tmp_path, project)
        assert check.status == "fail"
        assert (
            f"vLLM at http://127.0.0.1:{port} answers /v1/models without an API key" in check.detail
        )
    finally:
        remove_project(client, project)
