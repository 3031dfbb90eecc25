"""The vLLM and Open WebUI stand-ins behave like the services they stand in for.

Real Docker engine, real images built from tests/fakes/images/ (cached by content hash), real
HTTP. Other tests trust these stand-ins to show every state a real service shows; this file
is what makes that trust earned.
"""

from __future__ import annotations

import contextlib
import json
import socket
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from tests.fakes import images  # tests/conftest.py puts the repo root on sys.path
from tests.fakes.compose_v2 import docker_compose

pytestmark = pytest.mark.docker

LABEL = "org.sandbox-agent.test"
API_KEY = "sk-standin-test-key"


# --- tiny HTTP client (stdlib: no dependency on what the agent uses) -------------------------


class Reply:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> object:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    body: object | None = None,
    *,
    token: str | None = None,
    timeout: float = 5.0,
) -> Reply:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read(), dict(exc.headers))


def answers(url: str, timeout: float = 0.5) -> bool:
    """True when something answers HTTP at url (any status)."""
    try:
        http("GET", url, timeout=timeout)
    except (urllib.error.URLError, OSError, ConnectionError):
        return False
    return True


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise RuntimeError(
            f"the Docker engine is not reachable ({exc}); start it: "
            "`nohup dockerd >/var/log/dockerd.log 2>&1 &`"
        ) from exc
    yield client
    client.close()


@pytest.fixture(scope="session")
def vllm_image(docker_client: docker.DockerClient) -> str:
    return images.ensure_image("vllm-standin")


@pytest.fixture(scope="session")
def webui_image(docker_client: docker.DockerClient) -> str:
    return images.ensure_image("webui-standin")


class Started:
    """A started stand-in container and where the host reaches it."""

    def __init__(self, container, port: int | None) -> None:
        self.container = container
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")

    def wait_exit(self, timeout: float = 20) -> int:
        return int(self.container.wait(timeout=timeout)["StatusCode"])

    def wait_ready(self, path: str = "/health", timeout: float = 20) -> float:
        """Wait until the server answers HTTP; return the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if answers(self.url + path):
                return time.monotonic() - started
            self.container.reload()
            if self.container.status == "exited":
                pytest.fail(f"container exited before it answered:\n{self.logs()}")
            time.sleep(0.1)
        pytest.fail(f"no answer on {self.url}{path} after {timeout}s:\n{self.logs()}")


@pytest.fixture
def run_container(docker_client: docker.DockerClient) -> Iterator[Callable[..., Started]]:
    """Start containers (ports published on 127.0.0.1, engine-chosen); all removed afterwards."""
    created = []

    def run(
        image: str,
        command=None,
        *,
        port: int | None = None,
        network: str | None = None,
        alias: str | None = None,
        **kwargs,
    ) -> Started:
        if network:
            kwargs["network"] = network
            if alias:
                kwargs["networking_config"] = {
                    network: docker_client.api.create_endpoint_config(aliases=[alias])
                }
        container = docker_client.containers.run(
            image,
            command,
            detach=True,
            name=f"standin-test-{uuid.uuid4().hex[:10]}",
            labels={LABEL: "standins"},
            ports={f"{port}/tcp": ("127.0.0.1", None)} if port else {},
            **kwargs,
        )
        created.append(container)
        host_port = None
        if port:
            container.reload()
            host_port = int(
                container.attrs["NetworkSettings"]["Ports"][f"{port}/tcp"][0]["HostPort"]
            )
        return Started(container, host_port)

    yield run
    for container in created:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    net = docker_client.networks.create(
        f"standin-test-{uuid.uuid4().hex[:10]}", driver="bridge", labels={LABEL: "standins"}
    )
    yield net.name
    net.reload()
    for container in net.containers:
        container.remove(force=True, v=True)
    net.remove()


@pytest.fixture
def model_dir(tmp_path: Path) -> Callable[..., Path]:
    """Make a local model folder (config.json, optionally standin.json) like a snapshot."""

    def make(name: str = "tiny", standin: dict | None = None) -> Path:
        folder = tmp_path / "models" / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"architectures": ["StandinForCausalLM"]}))
        if standin is not None:
            (folder / "standin.json").write_text(json.dumps(standin))
        return folder

    return make


def start_vllm(run_container, vllm_image, folder: Path, *args: str, env=None, **kwargs) -> Started:
    return run_container(
        vllm_image,
        ["/models/m", "--served-model-name", "tiny-chat", *args],
        port=8000,
        volumes={str(folder): {"bind": "/models/m", "mode": "ro"}},
        environment=env or {},
        **kwargs,
    )


def chat(content: str, model: str = "tiny-chat", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


# --- vLLM stand-in --------------------------------------------------------------------------


def test_vllm_guards_v1_with_the_api_key_and_leaves_health_open(
    run_container, vllm_image, model_dir
):
    vllm = start_vllm(
        run_container,
        vllm_image,
        model_dir(),
        "--api-key",
        API_KEY,
        "--max-model-len",
        "2048",
        "--enable-prefix-caching",
        "--max-num-seqs",
        "4",
    )
    vllm.wait_ready()

    assert http("GET", vllm.url + "/health").status == 200
    assert http("GET", vllm.url + "/version").json()["version"]
    assert "vllm:num_requests_running" in http("GET", vllm.url + "/metrics").text

    assert http("GET", vllm.url + "/v1/models").status == 401
    denied = http("GET", vllm.url + "/v1/models", token="wrong")
    assert (denied.status, denied.json()) == (401, {"error": "Unauthorized"})
    assert http("POST", vllm.url + "/v1/chat/completions", chat("hi")).status == 401

    models = http("GET", vllm.url + "/v1/models", token=API_KEY)
    assert models.status == 200
    assert [m["id"] for m in models.json()["data"]] == ["tiny-chat"]
    assert models.json()["data"][0]["max_model_len"] == 2048

    reply = http("POST", vllm.url + "/v1/chat/completions", chat("hello there"), token=API_KEY)
    assert reply.status == 200
    body = reply.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "stand-in reply from tiny-chat: hello there"
    assert body["usage"]["completion_tokens"] == 6

    short = http("POST", vllm.url + "/v1/chat/completions", chat("hi", max_tokens=1), token=API_KEY)
    assert short.json()["choices"][0]["finish_reason"] == "length"

    unknown = http(
        "POST", vllm.url + "/v1/chat/completions", chat("hi", model="gpt-4"), token=API_KEY
    )
    assert unknown.status == 404
    assert "The model `gpt-4` does not exist." in unknown.json()["error"]["message"]

    stream = http(
        "POST", vllm.url + "/v1/chat/completions", chat("a b", stream=True), token=API_KEY
    )
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    events = [line[6:] for line in stream.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    pieces = [json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]]
    assert "".join(pieces) == "stand-in reply from tiny-chat: a b"

    completion = http(
        "POST", vllm.url + "/v1/completions", {"model": "tiny-chat", "prompt": "x"}, token=API_KEY
    )
    assert completion.json()["choices"][0]["text"] == "stand-in completion from tiny-chat: x"
    assert "Application startup complete" in vllm.logs()


def test_vllm_reads_the_api_key_from_vllm_api_key(run_container, vllm_image, model_dir):
    vllm = start_vllm(run_container, vllm_image, model_dir(), env={"VLLM_API_KEY": API_KEY})
    vllm.wait_ready()
    assert http("GET", vllm.url + "/v1/models").status == 401
    assert http("GET", vllm.url + "/v1/models", token=API_KEY).status == 200


def test_vllm_serves_the_model_argument_when_no_served_name(run_container, vllm_image, model_dir):
    folder = model_dir()
    vllm = run_container(
        vllm_image,
        ["/models/m"],
        port=8000,
        volumes={str(folder): {"bind": "/models/m", "mode": "ro"}},
    )
    vllm.wait_ready()
    assert [m["id"] for m in http("GET", vllm.url + "/v1/models").json()["data"]] == ["/models/m"]


@pytest.mark.parametrize(
    "mount",
    [pytest.param(None, id="path-missing"), pytest.param("empty", id="no-config-json")],
)
def test_vllm_exits_1_when_the_model_path_is_not_a_model(
    run_container, vllm_image, tmp_path, mount
):
    volumes = {}
    if mount:
        (tmp_path / mount).mkdir()
        volumes = {str(tmp_path / mount): {"bind": "/models/m", "mode": "ro"}}
    vllm = run_container(vllm_image, ["/models/m", "--served-model-name", "x"], volumes=volumes)
    assert vllm.wait_exit() == 1
    assert "Invalid repository ID or local directory specified: '/models/m'" in vllm.logs()


def test_vllm_offline_resolves_a_repo_id_from_the_hf_cache(run_container, vllm_image, tmp_path):
    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": "/hf"}
    volumes = {str(tmp_path): {"bind": "/hf", "mode": "ro"}}

    cached = run_container(vllm_image, ["org/tiny"], port=8000, environment=env, volumes=volumes)
    missing = run_container(vllm_image, ["org/other"], environment=env, volumes=volumes)

    cached.wait_ready()
    assert [m["id"] for m in http("GET", cached.url + "/v1/models").json()["data"]] == ["org/tiny"]
    assert missing.wait_exit() == 1
    assert "'org/other'" in missing.logs()


def test_vllm_does_not_listen_until_the_model_is_loaded(run_container, vllm_image, model_dir):
    # standin.json in the model folder: this model "loads" for 2 s.
    vllm = start_vllm(run_container, vllm_image, model_dir(standin={"load_seconds": 2}))
    started = time.monotonic()
    time.sleep(0.5)
    assert not answers(vllm.url + "/health"), "answered while loading"
    vllm.wait_ready()
    assert time.monotonic() - started >= 1.8
    assert "behaviour from /models/m/standin.json" in vllm.logs()


def test_vllm_health_fails_when_told_by_env(run_container, vllm_image, model_dir):
    vllm = start_vllm(run_container, vllm_image, model_dir(), env={"STANDIN_HEALTH": "fail"})
    vllm.wait_ready()
    assert http("GET", vllm.url + "/health").status == 503
    # the API itself still answers: only the health probe reports the engine dead
    assert http("GET", vllm.url + "/v1/models").status == 200


def test_vllm_mode_flips_at_runtime_health_hang_crash(run_container, vllm_image, model_dir):
    vllm = start_vllm(run_container, vllm_image, model_dir())
    vllm.wait_ready()
    mode = vllm.url + "/_standin/mode"

    http("POST", mode, {"health": "fail"})
    assert http("GET", vllm.url + "/health").status == 503
    http("POST", mode, {"health": "ok"})
    assert http("GET", vllm.url + "/health").status == 200

    # a hung engine behind a live API server: health 200, completions never answer
    http("POST", mode, {"hang": "engine"})
    assert http("GET", vllm.url + "/health").status == 200
    assert http("GET", vllm.url + "/v1/models").status == 200
    with pytest.raises((socket.timeout, TimeoutError, urllib.error.URLError)):
        http("POST", vllm.url + "/v1/chat/completions", chat("hi"), timeout=1)

    http("POST", mode, {"hang": True})
    with pytest.raises((socket.timeout, TimeoutError, urllib.error.URLError)):
        http("GET", vllm.url + "/health", timeout=1)
    assert http("GET", vllm.url + "/version").status == 200

    http("POST", mode, {"hang": False})
    assert http("POST", vllm.url + "/v1/chat/completions", chat("hi")).status == 200

    assert http("POST", mode, {"crash": True}).status == 200
    assert vllm.wait_exit(timeout=10) == 1
    assert "EngineCore died unexpectedly" in vllm.logs()


def test_vllm_crashes_after_the_configured_seconds(run_container, vllm_image, model_dir):
    vllm = start_vllm(run_container, vllm_image, model_dir(), env={"STANDIN_CRASH_AFTER": "1.5"})
    vllm.wait_ready()
    started = time.monotonic()
    assert vllm.wait_exit(timeout=10) == 1
    assert time.monotonic() - started < 5


def test_vllm_hang_from_env_accepts_connections_but_never_answers(
    run_container, vllm_image, model_dir
):
    vllm = start_vllm(run_container, vllm_image, model_dir(), env={"STANDIN_HANG": "1"})
    vllm.wait_ready(path="/version")
    with pytest.raises((socket.timeout, TimeoutError, urllib.error.URLError)):
        http("GET", vllm.url + "/health", timeout=1)


def test_vllm_stops_promptly_on_sigterm(run_container, vllm_image, model_dir):
    vllm = start_vllm(run_container, vllm_image, model_dir())
    vllm.wait_ready()
    started = time.monotonic()
    vllm.container.stop(timeout=10)
    assert time.monotonic() - started < 3
    assert vllm.wait_exit() == 0


# --- Open WebUI stand-in --------------------------------------------------------------------


def test_webui_creates_the_admin_from_env_and_refuses_a_second_signup(
    run_container, webui_image, tmp_path
):
    data = tmp_path / "webui-data"
    data.mkdir()
    env = {
        "WEBUI_ADMIN_EMAIL": "Admin@Example.com",
        "WEBUI_ADMIN_PASSWORD": "s3cret-pass",
        "WEBUI_ADMIN_NAME": "Box Admin",
        "WEBUI_SECRET_KEY": "keep-me",
    }
    volumes = {str(data): {"bind": "/app/backend/data", "mode": "rw"}}
    ui = run_container(webui_image, port=8080, environment=env, volumes=volumes)
    ui.wait_ready()

    assert http("GET", ui.url + "/health").json() == {"status": True}
    config = http("GET", ui.url + "/api/config").json()
    assert config["features"]["enable_signup"] is False
    assert config["onboarding"] is False

    wrong = http(
        "POST", ui.url + "/api/v1/auths/signin", {"email": "admin@example.com", "password": "x"}
    )
    assert wrong.status == 400
    signin = http(
        "POST",
        ui.url + "/api/v1/auths/signin",
        {"email": "admin@example.com", "password": "s3cret-pass"},
    )
    assert signin.status == 200
    token = signin.json()["token"]
    me = http("GET", ui.url + "/api/v1/auths/", token=token).json()
    assert (me["email"], me["name"], me["role"]) == ("admin@example.com", "Box Admin", "admin")
    assert http("GET", ui.url + "/api/v1/auths/").status == 401

    second = http(
        "POST",
        ui.url + "/api/v1/auths/signup",
        {"name": "Eve", "email": "eve@example.com", "password": "pw"},
    )
    assert second.status == 403
    assert "You do not have permission" in second.json()["detail"]

    users = json.loads((data / "standin-users.json").read_text())["users"]
    assert [u["email"] for u in users] == ["admin@example.com"]
    assert "s3cret-pass" not in (data / "standin-users.json").read_text()

    # a recreated container keeps the users; the same secret keeps the session valid
    ui.container.remove(force=True)
    again = run_container(
        webui_image,
        port=8080,
        environment={**env, "WEBUI_ADMIN_EMAIL": "other@example.com"},
        volumes=volumes,
    )
    again.wait_ready()
    assert http("GET", again.url + "/api/v1/auths/", token=token).status == 200
    assert "WEBUI_ADMIN_EMAIL ignored" in again.logs()


def test_webui_first_signup_becomes_admin_then_signup_closes(run_container, webui_image):
    ui = run_container(webui_image, port=8080)
    ui.wait_ready()
    assert http("GET", ui.url + "/api/config").json()["onboarding"] is True
    first = http(
        "POST",
        ui.url + "/api/v1/auths/signup",
        {"name": "Ann", "email": "ann@example.com", "password": "pw"},
    )
    assert (first.status, first.json()["role"]) == (200, "admin")
    second = http(
        "POST",
        ui.url + "/api/v1/auths/signup",
        {"name": "Bob", "email": "bob@example.com", "password": "pw"},
    )
    assert second.status == 403


def test_webui_lists_and_chats_with_vllm_by_service_name(
    run_container, vllm_image, webui_image, model_dir, network
):
    run_container(
        vllm_image,
        ["/models/m", "--served-model-name", "tiny-chat", "--api-key", API_KEY],
        network=network,
        alias="vllm",
        volumes={str(model_dir()): {"bind": "/models/m", "mode": "ro"}},
    )
    admin = {"WEBUI_ADMIN_EMAIL": "a@example.com", "WEBUI_ADMIN_PASSWORD": "pw"}
    ui = run_container(
        webui_image,
        port=8080,
        network=network,
        alias="open-webui",
        environment={
            **admin,
            "OPENAI_API_BASE_URL": "http://vllm:8000/v1",
            "OPENAI_API_KEY": API_KEY,
        },
    )
    wrong_key = run_container(
        webui_image,
        port=8080,
        network=network,
        environment={
            **admin,
            "OPENAI_API_BASE_URL": "http://vllm:8000/v1",
            "OPENAI_API_KEY": "not-the-key",
        },
    )
    nowhere = run_container(
        webui_image,
        port=8080,
        network=network,
        environment={
            **admin,
            "OPENAI_API_BASE_URL": "http://no-such-service:8000/v1",
            "OPENAI_API_KEY": API_KEY,
        },
    )
    for started in (ui, wrong_key, nowhere):
        started.wait_ready()

    def token_for(started: Started) -> str:
        return http(
            "POST",
            started.url + "/api/v1/auths/signin",
            {"email": "a@example.com", "password": "pw"},
        ).json()["token"]

    token = token_for(ui)
    deadline = time.monotonic() + 15  # vLLM stand-in may still be starting
    while (models := http("GET", ui.url + "/api/models", token=token)).status != 200:
        assert time.monotonic() < deadline, models.text
        time.sleep(0.2)
    assert [m["id"] for m in models.json()["data"]] == ["tiny-chat"]
    assert http("GET", ui.url + "/api/models").status == 401

    reply = http("POST", ui.url + "/api/chat/completions", chat("ping"), token=token)
    assert reply.json()["choices"][0]["message"]["content"] == "stand-in reply from tiny-chat: ping"
    streamed = http(
        "POST", ui.url + "/api/chat/completions", chat("ping", stream=True), token=token
    )
    assert streamed.text.rstrip().endswith("data: [DONE]")

    refused = http("GET", wrong_key.url + "/api/models", token=token_for(wrong_key))
    assert refused.status == 502
    assert "401" in refused.json()["detail"]
    unreachable = http("GET", nowhere.url + "/api/models", token=token_for(nowhere))
    assert unreachable.status == 502
    assert "unreachable" in unreachable.json()["detail"]


# --- Compose v2 against this engine ---------------------------------------------------------


def test_compose_v2_brings_up_the_standins_healthy(vllm_image, webui_image, model_dir, tmp_path):
    project = f"standin-test-{uuid.uuid4().hex[:8]}"
    compose_file = tmp_path / "docker-compose.yml"
    compose_file.write_text(
        textwrap.dedent(f"""\
        services:
          vllm:
            image: {vllm_image}
            command: ["/models/m", "--served-model-name", "tiny-chat", "--api-key", "{API_KEY}"]
            volumes: ["{model_dir()}:/models/m:ro"]
            healthcheck:
              test: ["CMD", "curl", "-fsS", "http://localhost:8000/health"]
              interval: 1s
              timeout: 2s
              retries: 30
          open-webui:
            image: {webui_image}
            environment:
              OPENAI_API_BASE_URL: http://vllm:8000/v1
              OPENAI_API_KEY: {API_KEY}
            ports: ["127.0.0.1::8080"]
            depends_on:
              vllm: {{condition: service_healthy}}
            healthcheck:
              test: ["CMD", "python3", "-c", "import urllib.request as u; u.urlopen('http://localhost:8080/health')"]
              interval: 1s
              timeout: 2s
              retries: 30
        """)
    )
    base = ["-p", project, "-f", str(compose_file)]
    try:
        up = docker_compose(
            [*base, "up", "-d", "--wait", "--wait-timeout", "40"], cwd=tmp_path, timeout=60
        )
        assert up.returncode == 0, up.stderr
        ps = docker_compose([*base, "ps", "--format", "json"], cwd=tmp_path, check=True)
        rows = [json.loads(line) for line in ps.stdout.splitlines() if line.strip()]
        assert sorted((r["Service"], r["Health"]) for r in rows) == [
            ("open-webui", "healthy"),
            ("vllm", "healthy"),
        ]
    finally:
        docker_compose([*base, "down", "-v", "--remove-orphans", "-t", "2"], cwd=tmp_path)
