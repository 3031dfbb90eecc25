"""`sandbox-agent up | status | logs | down` on the real engine with the stand-in images.

One stack is brought up for the module and the tests run in order against it, as a person
would use it: up, look, change the model, down and up again. Real Compose v2 checks that what
docker-py made is a Compose project.
"""

from __future__ import annotations

import json
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
    labelled,
    project_name,
    remove_project,
    standin_images,
    tree_digest,
    write_config,
)

pytestmark = pytest.mark.docker
HF_TOKEN = "hf_" + "T0kenThatMustStayWithTheAgent" * 2


class Stack:
    def __init__(self, folder: Path, project: str, images: tuple[str, str], client: Any) -> None:
        self.folder, self.project, self.images, self.client = folder, project, images, client
        self.config = write_config(folder, project, images)
        data = yaml.safe_load(self.config.read_text())
        self.api = f"http://127.0.0.1:{data['api']['port']}"
        self.ui = f"http://127.0.0.1:{data['ui']['port']}"
        self.first_up: Any = None

    def set(self, **over: Any) -> None:
        data = yaml.safe_load(self.config.read_text())
        for key, value in over.items():
            data[key] = {**data[key], **value}
        self.config.write_text(yaml.safe_dump(data))

    def run(self, *args: str) -> Any:
        return agent(*args, "--config", str(self.config))

    def ids(self) -> dict[str, str]:
        found = self.client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={self.project}"}
        )
        return {c.labels["com.docker.compose.service"]: c.id for c in found}

    def key(self) -> str:
        return (self.folder / "secrets" / "api_key").read_text().strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    client = docker_client()
    images = standin_images()
    folder = tmp_path_factory.mktemp("stack")
    fake_snapshot(folder / "models", "acme/tiny-chat")
    st = Stack(folder, project_name(), images, client)
    try:
        st.first_up = agent("up", "--config", str(st.config), env={"HF_TOKEN": HF_TOKEN})
        yield st
    finally:
        remove_project(client, st.project)


def test_up_ends_with_both_services_ready(stack: Stack) -> None:
    result = stack.first_up
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for line in (
        "vllm created, open-webui created",
        "waiting for a chat completion",
        "waiting for Open WebUI /health",
        "ready in",
    ):
        assert line in out
    admin = stack.folder / "secrets" / "webui_admin"
    assert f"admin sign-in in {admin}" in out
    password = admin.read_text().splitlines()[1]
    assert password not in out + result.stderr
    assert stack.key() not in out + result.stderr


def test_the_hf_token_reaches_no_container_file_or_output(stack: Stack) -> None:
    for service, cid in stack.ids().items():
        inspect = stack.client.api.inspect_container(cid)
        assert HF_TOKEN not in json.dumps(inspect), service
        assert not any(
            e.startswith(("HF_TOKEN=", "HUGGING_FACE_HUB_TOKEN=")) for e in inspect["Config"]["Env"]
        ), service
    for path in [
        stack.folder / "stack" / "docker-compose.yml",
        *(stack.folder / "secrets").glob("*.env"),
    ]:
        assert HF_TOKEN not in path.read_text(), path
    assert HF_TOKEN not in stack.first_up.stdout + stack.first_up.stderr


def test_compose_v2_lists_both_services_running(stack: Stack) -> None:
    from tests.fakes.compose_v2 import docker_compose

    result = docker_compose(["-p", stack.project, "ps", "--format", "json"], check=True)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert {r["Service"]: r["State"] for r in rows} == {"vllm": "running", "open-webui": "running"}
    assert {r["Name"] for r in rows} == {f"{stack.project}-vllm-1", f"{stack.project}-open-webui-1"}


def test_rendered_file_holds_no_secret_and_is_valid_for_compose(stack: Stack) -> None:
    from tests.fakes.compose_v2 import docker_compose

    path = stack.folder / "stack" / "docker-compose.yml"
    text = path.read_text()
    assert stack.key() not in text
    assert "VLLM_API_KEY" not in text
    docker_compose(["-f", str(path), "config", "-q"], check=True)
    for name in ("vllm.env", "open-webui.env"):
        assert (stack.folder / "secrets" / name).stat().st_mode & 0o777 == 0o600


def test_api_needs_the_key_from_the_secrets_folder(stack: Stack) -> None:
    status, _ = http(f"{stack.api}/v1/models")
    assert status == 401
    status, body = http(f"{stack.api}/v1/models", key=stack.key())
    assert status == 200
    assert [m["id"] for m in body["data"]] == ["tiny"]
    inspect = stack.client.api.inspect_container(f"{stack.project}-vllm-1")
    assert stack.key() not in json.dumps(inspect["Config"]["Cmd"])


def test_a_second_signup_on_the_ui_is_refused(stack: Stack) -> None:
    body = {"name": "mallory", "email": "mallory@example.com", "password": "x" * 12}
    status, _ = http(f"{stack.ui}/api/v1/auths/signup", body=body)
    assert status == 403
    email, password = (stack.folder / "secrets" / "webui_admin").read_text().splitlines()
    status, answer = http(
        f"{stack.ui}/api/v1/auths/signin", body={"email": email, "password": password}
    )
    assert status == 200 and answer["role"] == "admin"


def test_second_up_keeps_the_same_containers(stack: Stack) -> None:
    before = stack.ids()
    result = stack.run("up")
    assert result.returncode == 0, result.stderr
    assert "vllm kept, open-webui kept" in result.stdout
    assert stack.ids() == before


def test_status_logs_and_doctor_see_the_stack(stack: Stack) -> None:
    result = stack.run("status", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    states = {s["service"]: (s["state"], s["image"]) for s in data["services"]}
    assert states == {
        "vllm": ("running", stack.images[0]),
        "open-webui": ("running", stack.images[1]),
    }
    assert data["admin_login_file"] == str(stack.folder / "secrets" / "webui_admin")
    text = stack.run("status")
    assert "Open WebUI admin sign-in: " in text.stdout
    assert "chat/completions" in stack.run("logs", "vllm").stdout
    doctor = json.loads(stack.run("doctor", "--json").stdout)
    checks = {c["id"]: c["status"] for c in doctor["checks"] if c["id"].startswith("stack.")}
    assert checks == {
        "stack.api": "ok",
        "stack.ui": "ok",
        "stack.exposure": "ok",
        "stack.change": "ok",
    }


def test_changing_the_served_name_recreates_only_vllm(stack: Stack) -> None:
    before = stack.ids()
    stack.set(model={"served_name": "tiny-2"})
    result = stack.run("up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vllm recreated, open-webui kept" in result.stdout
    after = stack.ids()
    assert after["vllm"] != before["vllm"] and after["open-webui"] == before["open-webui"]
    _, body = http(f"{stack.api}/v1/models", key=stack.key())
    assert [m["id"] for m in body["data"]] == ["tiny-2"]


def test_changing_the_model_recreates_only_vllm(stack: Stack) -> None:
    snapshot = fake_snapshot(stack.folder / "models", "acme/other-chat")
    before = stack.ids()
    stack.set(model={"id": "acme/other-chat"})
    result = stack.run("up")
    assert result.returncode == 0, result.stdout + result.stderr
    after = stack.ids()
    assert after["vllm"] != before["vllm"] and after["open-webui"] == before["open-webui"]
    cmd = stack.client.api.inspect_container(after["vllm"])["Config"]["Cmd"]
    assert (
        cmd[0] == "/root/.cache/huggingface/hub/models--acme--other-chat/snapshots/" + snapshot.name
    )


def test_down_then_up_keeps_every_byte_of_the_chat_history(stack: Stack) -> None:
    from tests.fakes.compose_v2 import docker_compose

    data = stack.folder / "ui_data"
    before = tree_digest(data)
    assert before, "the UI wrote nothing to its data folder"
    result = stack.run("down")
    assert result.returncode == 0, result.stderr
    assert labelled(stack.client, stack.project) == ([], [])
    assert docker_compose(["-p", stack.project, "ps", "-q"], check=True).stdout.strip() == ""
    assert tree_digest(data) == before
    result = stack.run("up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree_digest(data) == before
    email, password = (stack.folder / "secrets" / "webui_admin").read_text().splitlines()
    status, _ = http(f"{stack.ui}/api/v1/auths/signin", body={"email": email, "password": password})
    assert status == 200
