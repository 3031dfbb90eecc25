"""Rendering the stack: variables from the settings, refusals that name the culprit, no secret
in the file, and the real Compose v2 accepts the result."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from agent import gpu, stack
from agent import settings as settings_mod
from agent.errors import AgentError, BadInput

MODEL_PATH = "/root/.cache/huggingface/hub/models--acme--tiny/snapshots/" + "a" * 40
KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def make_settings(write_config):
    def make(**data):
        base = {
            "project": "render-test",
            "gpus": "none",
            "model": {"id": "acme/tiny", "served_name": "tiny"},
            "api": {"port": 18000, "bind": "127.0.0.1"},
            "ui": {"port": 13000},
        }
        for key, value in data.items():
            base[key] = {**base[key], **value} if isinstance(base.get(key), dict) else value
        return settings_mod.load(write_config(base))

    return make


def spec(**kw) -> stack.StackSpec:
    return stack.StackSpec(**{"model_path": MODEL_PATH, **kw})


def services(rendered: stack.Rendered) -> dict:
    return yaml.safe_load(rendered.text)["services"]


def test_render_fills_every_variable_from_the_settings(make_settings) -> None:
    s = make_settings()
    out = stack.render(s, spec(tensor_parallel_size=2, max_model_len=4096))
    assert "${" not in out.text
    vllm, ui = services(out)["vllm"], services(out)["open-webui"]
    assert vllm["image"] == s.images.vllm and ui["image"] == s.images.webui
    assert vllm["command"] == [
        MODEL_PATH,
        "--served-model-name=tiny",
        "--max-model-len=4096",
        "--tensor-parallel-size=2",
        "--gpu-memory-utilization=0.9",
    ]
    assert vllm["environment"]["HF_HUB_OFFLINE"] == "1"
    assert vllm["ports"] == ["127.0.0.1:18000:8000"]
    assert ui["ports"] == ["0.0.0.0:13000:8080"]
    assert vllm["volumes"][0] == f"{s.paths.models}:/root/.cache/huggingface"
    assert vllm["env_file"] == [str(s.paths.secrets / "vllm.env")]
    assert ui["volumes"] == [f"{s.paths.ui_data}:/app/backend/data"]
    assert ui["environment"]["OPENAI_API_BASE_URL"] == "http://vllm:8000/v1"
    assert out.path == s.paths.stack / "docker-compose.yml"


def test_no_gpu_request_and_no_context_length_when_left_unset(make_settings) -> None:
    vllm = services(stack.render(make_settings(), spec()))["vllm"]
    assert "deploy" not in vllm
    assert not any(a.startswith("--max-model-len") for a in vllm["command"])


@pytest.mark.parametrize("count", [pytest.param("all", id="all"), pytest.param(2, id="two")])
def test_gpu_request_becomes_an_nvidia_device_reservation(make_settings, count) -> None:
    vllm = services(stack.render(make_settings(), spec(gpu_count=count)))["vllm"]
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": count, "capabilities": ["gpu"]}]


def test_extra_args_are_spliced_into_the_command(make_settings) -> None:
    s = make_settings(model={"extra_args": ["--enable-prefix-caching", "--dtype=half"]})
    command = services(stack.render(s, spec()))["vllm"]["command"]
    assert command[-2:] == ["--enable-prefix-caching", "--dtype=half"]


def test_ui_disabled_leaves_the_ui_out(make_settings) -> None:
    s = make_settings(ui={"enabled": False})
    out = stack.render(s, spec(secret_env={"open-webui": {"OPENAI_API_KEY": KEY}}))
    assert list(services(out)) == ["vllm"]
    assert out.env_files == {}


def with_path(s, **paths):  # noqa: ANN001, ANN003, ANN201
    """Settings refuse `$` in paths; render must still never let one become a variable."""
    return dataclasses.replace(
        s, paths=dataclasses.replace(s.paths, **{k: Path(v) for k, v in paths.items()})
    )


def test_dollar_in_a_value_is_escaped_for_compose_and_read_back(make_settings, tmp_path) -> None:
    s = with_path(make_settings(), models=str(tmp_path / "m$odels"))
    out = stack.render(s, spec())
    assert "m$$odels:/root/.cache/huggingface" in out.text
    (s.paths.secrets).mkdir(parents=True)
    for name in ("vllm", "open-webui"):
        stack.env_file(s, name).write_text("")
    project = stack.load_project(out.path, text=out.text)
    assert project.services[0].config["volumes"][0].startswith(str(tmp_path / "m$odels") + ":")


def test_a_literal_dollar_brace_in_a_path_is_no_variable(make_settings, tmp_path) -> None:
    ui_data = str(tmp_path / "ui-${HOME}")
    s = with_path(make_settings(), ui_data=ui_data)
    out = stack.render(s, spec())
    s.paths.secrets.mkdir(parents=True)
    for name in ("vllm", "open-webui"):
        stack.env_file(s, name).write_text("")
    ui = stack.load_project(out.path, text=out.text).services[1]
    assert ui.config["volumes"] == [f"{ui_data}:/app/backend/data"]


def test_unknown_variable_is_refused_by_name(make_settings) -> None:
    template = stack.TEMPLATE.read_text().replace("${API_PORT}", "${API_PROT}")
    with pytest.raises(BadInput) as err:
        stack.render(make_settings(), spec(), template)
    assert "unknown variable(s) ${API_PROT}" in str(err.value)
    assert "API_PORT" in str(err.value)  # the fix lists the known ones


def test_unknown_compose_key_is_refused_by_name(make_settings) -> None:
    template = stack.TEMPLATE.read_text().replace("    ipc: host\n", "    privileged: true\n")
    with pytest.raises(BadInput) as err:
        stack.render(make_settings(), spec(), template)
    assert "services.vllm.privileged: unknown compose key" in str(err.value)
    assert err.value.exit_code == 2


def test_a_service_without_an_image_is_refused_by_name(make_settings) -> None:
    template = stack.TEMPLATE.read_text().replace("    image: ${WEBUI_IMAGE}\n", "")
    with pytest.raises(BadInput) as err:
        stack.render(make_settings(), spec(), template)
    assert "services.open-webui.image: is missing: every service needs a pinned image" in str(
        err.value
    )
    assert err.value.exit_code == 2


def test_secrets_go_to_env_files_never_into_the_compose_file(make_settings) -> None:
    s = make_settings()
    env = {"vllm": {"VLLM_API_KEY": KEY}, "open-webui": {"OPENAI_API_KEY": KEY}}
    out = stack.render(s, spec(secret_env=env))
    assert KEY not in out.text
    assert out.env_files[s.paths.secrets / "vllm.env"].endswith(f"VLLM_API_KEY='{KEY}'\n")
    stack.write_env_files(out)
    assert (s.paths.secrets / "vllm.env").stat().st_mode & 0o777 == 0o600


def test_env_file_values_reach_compose_and_the_agent_alike(make_settings) -> None:
    from tests.fakes.compose_v2 import docker_compose

    s = make_settings()
    tricky = ' my pa$$word #1 "x" $HOME '  # what a person may put in the admin file
    out = stack.render(
        s,
        spec(
            secret_env={
                "vllm": {"VLLM_API_KEY": KEY},
                "open-webui": {"WEBUI_ADMIN_PASSWORD": tricky},
            }
        ),
    )
    stack.write_env_files(out)
    ui = stack.load_project(out.path, text=out.text).services[1]
    assert ui.env["WEBUI_ADMIN_PASSWORD"] == tricky
    result = docker_compose(["-f", str(stack.write(out)), "config", "--format", "json"])
    assert result.returncode == 0, result.stderr
    env = yaml.safe_load(result.stdout)["services"]["open-webui"]["environment"]
    assert env["WEBUI_ADMIN_PASSWORD"].replace("$$", "$") == tricky


@pytest.mark.parametrize(
    "value",
    [pytest.param("it's", id="quote"), pytest.param("a\nENABLE_SIGNUP=True", id="line-break")],
)
def test_an_env_value_an_env_file_cannot_carry_is_refused(make_settings, value) -> None:
    s = make_settings()
    with pytest.raises(AgentError) as err:
        stack.render(s, spec(secret_env={"open-webui": {"WEBUI_ADMIN_PASSWORD": value}}))
    path = s.paths.secrets / "open-webui.env"
    assert err.value.message == (
        f"the value of WEBUI_ADMIN_PASSWORD for {path} contains a quote or a line break"
    )
    assert value not in str(err.value)
    assert "delete that file to have a new value generated" in err.value.fix


def test_an_env_value_ending_in_a_backslash_is_refused(make_settings) -> None:
    # Compose would read `\'` as a quote inside the value and run on into the next line.
    s = make_settings()
    with pytest.raises(AgentError) as err:
        stack.render(s, spec(secret_env={"open-webui": {"WEBUI_ADMIN_PASSWORD": "pass\\"}}))
    path = s.paths.secrets / "open-webui.env"
    assert (
        err.value.message == f"the value of WEBUI_ADMIN_PASSWORD for {path} ends with a backslash"
    )


def test_a_secret_that_would_land_in_the_file_is_refused(make_settings) -> None:
    s = make_settings(model={"served_name": "leaky-name-123"})
    with pytest.raises(AgentError, match="refusing to write a secret of vllm"):
        stack.render(s, spec(secret_env={"vllm": {"VLLM_API_KEY": "leaky-name-123"}}))


@pytest.mark.parametrize(
    "setting, detected, runtime, expected",
    [
        pytest.param("none", 4, True, None, id="none"),
        pytest.param("auto", 0, True, None, id="auto-no-gpu"),
        pytest.param("auto", 2, False, None, id="auto-no-runtime"),
        pytest.param("auto", 2, True, "all", id="auto"),
        pytest.param("all", 2, True, "all", id="all"),
        pytest.param(2, 8, True, 2, id="count"),
    ],
)
def test_gpu_request_follows_the_setting(setting, detected, runtime, expected) -> None:
    assert gpu.gpu_request(setting, detected, runtime) == expected


def test_gpus_requested_without_a_runtime_says_how_to_fix_it() -> None:
    with pytest.raises(AgentError) as err:
        gpu.gpu_request("all", 0, False)
    assert "the Docker engine has no NVIDIA runtime" in err.value.message
    assert "sandbox-agent bootstrap" in err.value.fix and "gpus: none" in err.value.fix


def test_project_orders_services_and_hashes_env_file_contents(make_settings) -> None:
    s = make_settings()
    out = stack.render(
        s, spec(secret_env={"vllm": {"VLLM_API_KEY": KEY}, "open-webui": {"OPENAI_API_KEY": KEY}})
    )
    stack.write_env_files(out)
    first = stack.load_project(out.path, text=out.text)
    assert [svc.name for svc in first.services] == ["vllm", "open-webui"]
    assert first.services[0].env["VLLM_API_KEY"] == KEY
    assert first.services[0].env["HF_HUB_OFFLINE"] == "1"
    before = [svc.config_hash for svc in first.services]
    stack.env_file(s, "vllm").write_text("VLLM_API_KEY=rotated-key-987654\n")
    after = [svc.config_hash for svc in stack.load_project(out.path, out.text).services]
    assert after[0] != before[0] and after[1] == before[1]
    assert first.container_name("vllm") == "render-test-vllm-1"


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("127.0.0.1:8000:8000", ("127.0.0.1", 8000, 8000), id="ipv4"),
        pytest.param("[::1]:3000:8080", ("::1", 3000, 8080), id="ipv6"),
        pytest.param("3000:8080", ("0.0.0.0", 3000, 8080), id="no-ip"),
    ],
)
def test_parse_port(text, expected) -> None:
    assert stack.parse_port(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("8000", id="no-host-port"),
        pytest.param(8000, id="an-int"),
        pytest.param("8000-8001:8000-8001", id="range"),
        pytest.param("53:53/udp", id="udp"),
        pytest.param("127.0.0.1:70000:8000", id="too-big"),
    ],
)
def test_a_port_the_agent_cannot_publish_is_refused_by_service(make_settings, text) -> None:
    s = make_settings()
    template = stack.TEMPLATE.read_text().replace("${API_BIND}:${API_PORT}:8000", str(text))
    out = stack.render(s, spec(), template)
    with pytest.raises(BadInput) as err:
        stack.load_project(out.path, text=out.text)
    assert (
        err.value.message
        == f"services.vllm.ports: {str(text)!r} is not a port the agent can publish"
    )
    assert err.value.fix == "use [HOST_IP:]HOST_PORT:CONTAINER_PORT, TCP, one port each"


@pytest.mark.parametrize(
    "text, words",
    [
        pytest.param("name: [", "is not valid YAML", id="yaml"),
        pytest.param("services: {}", "has no project `name`", id="no-name"),
        pytest.param(
            "name: p\nservices: {a: {image: i, command: ['${X}']}}",
            "variables left unfilled: X",
            id="leftover",
        ),
        pytest.param(
            "name: p\nservices: {a: {image: i, depends_on: [b]}, b: {image: i, depends_on: [a]}}",
            "depends_on: a cycle: a -> b -> a",
            id="cycle",
        ),
        pytest.param(
            "name: p\nservices: {a: {image: i, depends_on: [c]}}",
            "services.a.depends_on: no service named 'c'",
            id="unknown-dependency",
        ),
        pytest.param(
            "name: p\nservices: {a: {image: i, ports: 80}}",
            "services.a.ports: must be a list",
            id="ports-not-a-list",
        ),
    ],
)
def test_a_broken_compose_file_is_refused_with_what_is_wrong(tmp_path, text, words) -> None:
    with pytest.raises(BadInput) as err:
        stack.load_project(tmp_path / "docker-compose.yml", text=text)
    assert words in err.value.message


def test_a_missing_compose_file_says_to_run_up(tmp_path) -> None:
    with pytest.raises(AgentError) as err:
        stack.load_project(tmp_path / "docker-compose.yml")
    assert err.value.message == f"{tmp_path / 'docker-compose.yml'} does not exist"
    assert err.value.fix == "run `sandbox-agent up`"


def test_environment_as_a_list_is_read_like_a_mapping(tmp_path) -> None:
    text = "name: p\nservices: {a: {image: i, environment: ['A=1', 'B=x=y', 'C=']}}"
    env = stack.load_project(tmp_path / "c.yml", text=text).services[0].env
    assert env == {"A": "1", "B": "x=y", "C": ""}


def test_rendered_file_passes_the_real_docker_compose_config(make_settings) -> None:
    from tests.fakes.compose_v2 import docker_compose

    s = make_settings()
    out = stack.render(
        s,
        spec(
            gpu_count="all",
            max_model_len=8192,
            secret_env={"vllm": {"VLLM_API_KEY": KEY}, "open-webui": {"OPENAI_API_KEY": KEY}},
        ),
    )
    stack.write_env_files(out)
    path = stack.write(out)
    result = docker_compose(["-f", str(path), "config", "--format", "json"])
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["name"] == "render-test"
    assert config["services"]["vllm"]["environment"]["VLLM_API_KEY"] == KEY  # from the env file
    assert set(config["services"]) == {"vllm", "open-webui"}
    assert Path(path).read_text().startswith("# Rendered by sandbox-agent")
