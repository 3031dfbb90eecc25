"""`sandbox-agent up` and the real `docker compose up -d`, run by turns in paths.stack as the
seed's users do, keep each other's containers; a real change (a rotated secret, a new image
under the same tag, a changed setting) recreates only the service it touches, and Compose then
agrees with what the agent made.

One stack for the module; the tests run in order against it.
"""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.stack_support import (
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


class Stack:
    def __init__(self, folder: Path, client: Any) -> None:
        self.folder, self.client = folder, client
        self.project = project_name("agree")
        vllm, webui = standin_images()
        # vLLM under a tag of this module's own, so a test can point it at a new image.
        self.vllm_tag = f"sandbox-test/agree-vllm:{uuid.uuid4().hex[:8]}"
        client.images.get(vllm).tag(self.vllm_tag)
        self.built: list[str] = []
        self.config = write_config(folder, self.project, (self.vllm_tag, webui))
        self.first_up = self.agent("up")

    def agent(self, *args: str) -> Any:
        return agent(*args, "--config", str(self.config))

    def compose_up(self) -> Any:
        """The real `docker compose up -d` in paths.stack, as a person runs it there."""
        from tests.fakes.compose_v2 import docker_compose

        return docker_compose(["up", "-d"], cwd=self.folder / "stack", check=True)

    def containers(self) -> dict[str, Any]:
        found = self.client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={self.project}"}
        )
        return {c.labels["com.docker.compose.service"]: c for c in found}

    def ids(self) -> dict[str, str]:
        return {name: c.id for name, c in self.containers().items()}

    def set(self, **over: Any) -> None:
        data = yaml.safe_load(self.config.read_text())
        for key, value in over.items():
            data[key] = {**data[key], **value}
        self.config.write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    client = docker_client()
    folder = tmp_path_factory.mktemp("agree")
    fake_snapshot(folder / "models", "acme/tiny-chat")
    st = Stack(folder, client)
    try:
        yield st
    finally:
        remove_project(client, st.project)
        for tag in [st.vllm_tag, *st.built]:
            with contextlib.suppress(Exception):  # clean-up: a tag already gone is fine
                client.images.remove(tag)


def assert_compose_keeps_everything(stack: Stack) -> None:
    before = stack.ids()
    result = stack.compose_up()
    assert stack.ids() == before, result.stderr
    assert "Recreate" not in result.stderr, result.stderr
    assert {name: c.status for name, c in stack.containers().items()} == {
        "vllm": "running",
        "open-webui": "running",
    }


def test_compose_up_after_agent_up_keeps_both_then_agent_up_keeps_them_too(stack: Stack) -> None:
    assert stack.first_up.returncode == 0, stack.first_up.stdout + stack.first_up.stderr
    before = stack.ids()
    assert set(before) == {"vllm", "open-webui"}
    assert_compose_keeps_everything(stack)
    result = stack.agent("up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vllm kept, open-webui kept" in result.stdout
    assert stack.ids() == before


def test_a_rotated_ui_secret_recreates_only_open_webui(stack: Stack) -> None:
    before = stack.ids()
    secret = stack.folder / "secrets" / "webui_secret_key"
    secret.write_text("rotated-" + uuid.uuid4().hex + "\n")
    result = stack.agent("up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vllm kept, open-webui recreated" in result.stdout
    after = stack.ids()
    assert after["vllm"] == before["vllm"] and after["open-webui"] != before["open-webui"]
    assert_compose_keeps_everything(stack)


def test_a_new_image_under_the_same_tag_recreates_only_vllm(stack: Stack) -> None:
    before = stack.ids()
    old_id = stack.client.images.get(stack.vllm_tag).id
    dockerfile = f"FROM {old_id}\nLABEL org.sandbox-agent.agree={uuid.uuid4().hex}\n"
    image, _ = stack.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), rm=True)
    stack.built.append(image.id)
    image.tag(stack.vllm_tag)
    result = stack.agent("up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vllm recreated, open-webui kept" in result.stdout
    after = stack.ids()
    assert after["vllm"] != before["vllm"] and after["open-webui"] == before["open-webui"]
    assert stack.containers()["vllm"].image.id == image.id
    assert_compose_keeps_everything(stack)


def test_a_changed_setting_recreates_only_vllm(stack: Stack) -> None:
    before = stack.ids()
    stack.set(model={"served_name": "tiny-agree"})
    result = stack.agent("up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vllm recreated, open-webui kept" in result.stdout
    after = stack.ids()
    assert after["vllm"] != before["vllm"] and after["open-webui"] == before["open-webui"]
    assert_compose_keeps_everything(stack)
    key = (stack.folder / "secrets" / "api_key").read_text().strip()
    port = yaml.safe_load(stack.config.read_text())["api"]["port"]
    _, body = http(f"http://127.0.0.1:{port}/v1/models", key=key)
    assert [m["id"] for m in body["data"]] == ["tiny-agree"]


def test_containers_compose_made_are_kept_by_agent_up(stack: Stack) -> None:
    from tests.fakes.compose_v2 import docker_compose

    docker_compose(["down"], cwd=stack.folder / "stack", check=True)
    assert stack.ids() == {}
    stack.compose_up()  # now Compose makes the containers and the network
    made = stack.ids()
    assert set(made) == {"vllm", "open-webui"}
    result = stack.agent("up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vllm kept, open-webui kept" in result.stdout
    assert stack.ids() == made
