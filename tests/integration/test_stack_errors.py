"""`sandbox-agent up` refusing bad input on the real engine: a clear error naming the culprit,
exit 1 or 2, and nothing half-started (no container, no network, no compose file)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import stack
from agent.errors import AgentError
from tests.integration.stack_support import (
    agent,
    docker_client,
    fake_snapshot,
    labelled,
    project_name,
    remove_project,
    rendered_project,
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
    template.write_text(
        stack.TEMPLATE.read_text().replace("    ipc: host\n", "    privileged: true\n")
    )
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


def test_model_not_downloaded_and_hub_unreachable_starts_nothing(tmp_path, project, images) -> None:
    """`up` fetches a model it has not got (issue 8); when the Hub cannot be reached it says so
    and starts nothing (before: `up` only told the person to run `model pull`)."""
    name, client = project
    cfg = write_config(
        tmp_path, name, images, model={"id": "acme/never-pulled"},
        hub={"endpoint": "http://127.0.0.1:9"},
    )  # fmt: skip
    result = agent("up", "--config", str(cfg))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error: cannot reach http://127.0.0.1:9: ConnectError" in result.stderr
    assert "finished files are kept, run the pull again" in result.stderr
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
    assert re.search(r"the vllm container crashed \d+ time\(s\) while up waited", result.stderr)
    assert "last log lines of vllm" in result.stderr
    assert "sandbox-agent logs vllm" in result.stderr


def states(client: Any, name: str) -> dict[str, str]:
    return {
        c.labels[stack.L_SERVICE]: c.status
        for c in client.containers.list(all=True, filters={"label": f"{stack.L_PROJECT}={name}"})
    }


def test_a_paused_service_is_resumed_by_up(tmp_path, project, images) -> None:
    name, client = project
    compose = rendered_project(tmp_path, name, images)
    stack.reconcile(client, compose)
    client.containers.get(f"{name}-open-webui-1").pause()
    assert stack.reconcile(client, compose) == {"vllm": "kept", "open-webui": "started"}
    assert states(client, name) == {"vllm": "running", "open-webui": "running"}


def test_containers_whose_network_was_pruned_are_recreated(tmp_path, project, images) -> None:
    name, client = project
    compose = rendered_project(tmp_path, name, images)
    stack.reconcile(client, compose)
    for container in client.containers.list(filters={"label": f"{stack.L_PROJECT}={name}"}):
        container.stop(timeout=1)
    client.networks.get(f"{name}_default").remove()  # what `docker network prune` does
    assert stack.reconcile(client, compose) == {"vllm": "recreated", "open-webui": "recreated"}
    assert states(client, name) == {"vllm": "running", "open-webui": "running"}


def test_a_second_container_claiming_a_service_is_removed(tmp_path, project, images) -> None:
    name, client = project
    compose = rendered_project(tmp_path, name, images)
    stack.reconcile(client, compose)
    labels = {**compose.labels("open-webui"), "com.docker.compose.container-number": "2"}
    client.containers.create(images[1], name=f"{name}-open-webui-2", labels=labels)
    assert stack.reconcile(client, compose) == {"vllm": "kept", "open-webui": "kept"}
    assert sorted(labelled(client, name)[0]) == [f"{name}-open-webui-1", f"{name}-vllm-1"]


def test_a_foreign_network_with_the_stacks_name_is_refused(tmp_path, project, images) -> None:
    name, client = project
    compose = rendered_project(tmp_path, name, images)
    network = client.networks.create(f"{name}_default", driver="bridge")
    try:
        with pytest.raises(AgentError) as err:
            stack.reconcile(client, compose)
        assert err.value.message == (
            f"a Docker network named {name}_default exists but is not "
            "this stack's (driver bridge, project label none)"
        )
        assert f"`docker network rm {name}_default`" in err.value.fix
        assert labelled(client, name) == ([], [])
    finally:
        network.remove()


def test_down_says_what_still_holds_the_network(tmp_path, project, images) -> None:
    name, client = project
    stack.reconcile(client, rendered_project(tmp_path, name, images))
    stranger = client.containers.run(
        images[1],
        name=f"{name}-stranger",
        detach=True,
        network=f"{name}_default",
        environment={"DATA_DIR": "/tmp"},
    )
    try:
        with pytest.raises(AgentError) as err:
            stack.down(client, name)
        assert err.value.message.startswith(f"could not remove the network {name}_default: ")
        assert f"`docker network inspect {name}_default`" in err.value.fix
        assert labelled(client, name) == ([], [f"{name}_default"])
    finally:
        stranger.remove(force=True)


def test_an_engine_that_stopped_answering_is_an_agent_error(tmp_path, images) -> None:
    import docker

    compose = rendered_project(tmp_path, project_name("gone"), images)
    gone = docker.DockerClient(base_url=f"unix://{tmp_path}/docker.sock", version="1.41")
    calls = [
        lambda: stack.reconcile(gone, compose),
        lambda: stack.down(gone, compose.name),
        lambda: stack.status(gone, compose.name, ("vllm",)),
    ]
    for call in calls:
        with pytest.raises(AgentError) as err:
            call()
        assert "Connection aborted" in err.value.message
        assert err.value.fix.startswith("check the engine with `systemctl status docker`") or (
            "run `sandbox-agent down` again" in err.value.fix
        )


def test_logs_with_a_tail_that_is_no_number_exits_2(tmp_path) -> None:
    result = agent("logs", "vllm", "--tail", "ten", "--config", str(tmp_path / "none.yaml"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: --tail: 'ten' is not a number of lines" in result.stderr
