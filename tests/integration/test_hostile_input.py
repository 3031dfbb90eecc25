"""Issue 8's hostile inputs through the CLI as a person runs it: each is refused with exit 2,
the field named, a short message, and nothing on disk changed (the whole tree compared)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.stack_support import agent

BOMB = (
    "a: &a ['x','x','x','x','x','x','x','x','x']\n"
    + "".join(
        f"{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
        for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "model: {id: *i}\n"
)


def snapshot(folder: Path) -> dict[str, Any]:
    """Every path under `folder` with its mode, and the bytes of each file."""
    found: dict[str, Any] = {}
    for p in sorted(folder.rglob("*")):
        info = p.lstat()
        data = p.read_bytes() if stat.S_ISREG(info.st_mode) else None
        found[str(p.relative_to(folder))] = (stat.S_IMODE(info.st_mode), data)
    return found


def config(tmp_path: Path, **over: Any) -> Path:
    data: dict[str, Any] = {
        "paths": {n: str(tmp_path / n) for n in ("models", "ui_data", "stack", "state", "secrets")}
    }
    for key, value in over.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# (environment, config overrides, the key named, words of the message)
CASES = [
    pytest.param({"VLLM_EXTRA_ARGS": "--api-key="}, {}, "model.extra_args (from environment VLLM_EXTRA_ARGS)", "is set by sandbox-agent (--api-key)", id="api-key-off"),
    pytest.param({"VLLM_EXTRA_ARGS": "--dtype bfloat16 --api-key=x"}, {}, "model.extra_args", "is set by sandbox-agent (--api-key)", id="api-key-replaced"),
    pytest.param({"VLLM_EXTRA_ARGS": "--api_key=x"}, {}, "model.extra_args", "(--api-key)", id="api-key-underscore"),
    pytest.param({"VLLM_EXTRA_ARGS": "--api-k=x"}, {}, "model.extra_args", "(--api-key)", id="api-key-prefix"),
    pytest.param({"VLLM_EXTRA_ARGS": "--host=0.0.0.0"}, {}, "model.extra_args", "(--host)", id="host"),
    pytest.param({"VLLM_EXTRA_ARGS": "--port 9"}, {}, "model.extra_args", "(--port)", id="port"),
    pytest.param({"VLLM_EXTRA_ARGS": "--served-model-name=gpt-4"}, {}, "model.extra_args", "(--served-model-name)", id="served-name"),
    pytest.param({"VLLM_EXTRA_ARGS": "evil/model --dtype=half"}, {}, "model.extra_args", "would be read by vLLM as the model to serve", id="positional-model"),
    pytest.param({"UI_DATA_DIR": "/"}, {}, "paths.ui_data (from environment UI_DATA_DIR)", "/ is a folder of the system itself", id="ui-data-root"),
    pytest.param({"MODELS_DIR": "/etc"}, {}, "paths.models (from environment MODELS_DIR)", "/etc is a folder of the system itself", id="models-etc"),
    pytest.param({"MODELS_DIR": "/usr/share/models"}, {}, "paths.models", "inside /usr, which the operating system owns", id="models-in-usr"),
    pytest.param({"UI_DATA_DIR": "/var/lib/docker/volumes/x"}, {}, "paths.ui_data", "inside /var/lib/docker", id="ui-in-docker"),
    pytest.param({"UI_DATA_DIR": "/root/.ssh"}, {}, "paths.ui_data (from environment UI_DATA_DIR)", "/root/.ssh is not inside a folder data may live in (/opt, /srv, /mnt, /data, /tmp, /var/tmp)", id="ui-in-root-ssh"),
    pytest.param({"UI_DATA_DIR": "/var/spool/cron/crontabs"}, {}, "paths.ui_data", "is not inside a folder data may live in", id="ui-in-crontabs"),
    pytest.param({"MODELS_DIR": "/var/lib/dpkg"}, {}, "paths.models (from environment MODELS_DIR)", "/var/lib/dpkg is not inside a folder data may live in", id="models-in-dpkg"),
    pytest.param({"MODELS_DIR": "/var/log/journal"}, {}, "paths.models", "is not inside a folder data may live in", id="models-in-journal"),
    pytest.param({}, {"paths": {"secrets": "SAME_AS_UI"}}, "paths.ui_data", "overlap", id="secrets-is-ui-data"),
    pytest.param({}, {"paths": {"secrets": "INSIDE_UI"}}, "paths.ui_data", "overlap", id="secrets-inside-ui-data"),
    pytest.param({"API_PORT": "²"}, {}, "api.port (from environment API_PORT)", "'\\xb2' is not allowed", id="superscript-port"),
    pytest.param({"UI_PORT": "٣٠٠٠"}, {}, "ui.port", "is not allowed: use a whole number", id="arabic-digits"),
    pytest.param({"HF_ENDPOINT": "https://hub.example:99999"}, {}, "hub.endpoint (from environment HF_ENDPOINT)", "has a port outside 1-65535", id="endpoint-port"),
    pytest.param({"API_BIND": "fe80::1%eth0"}, {}, "api.bind (from environment API_BIND)", "no IPv6 zone", id="ipv6-zone"),
    pytest.param({"MODEL_REVISION": "main/"}, {}, "model.revision (from environment MODEL_REVISION)", "is not a branch, tag or commit", id="revision-trailing-slash"),
    pytest.param({"MODEL_REVISION": "a/./b"}, {}, "model.revision", "is not a branch, tag or commit", id="revision-dot-part"),
    pytest.param({"DOCKER_HOST": "ssh://root@elsewhere"}, {}, "docker.host (from environment DOCKER_HOST)", "is not a Docker host", id="docker-host"),
    pytest.param({"MODEL_ID": "x" * 100_000 + "/y"}, {}, "model.id (from environment MODEL_ID)", "is not a Hugging Face repo id", id="huge-value"),
]  # fmt: skip


@pytest.mark.parametrize("env, over, key, words", CASES)
def test_hostile_value_is_refused_before_anything_changes(
    tmp_path: Path, env: dict[str, str], over: dict[str, Any], key: str, words: str
) -> None:
    paths = over.get("paths", {})
    for name, value in list(paths.items()):
        paths[name] = {"SAME_AS_UI": str(tmp_path / "ui_data"),
                       "INSIDE_UI": str(tmp_path / "ui_data" / "secrets")}[value]  # fmt: skip
    (tmp_path / "ui_data").mkdir()
    (tmp_path / "ui_data" / "webui.db").write_bytes(b"chat history")
    cfg = config(tmp_path, **over)
    before = snapshot(tmp_path)
    ran = agent("up", "--config", str(cfg), env=env, timeout=30)
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.startswith(f"error: {key}"), ran.stderr
    assert words in ran.stderr
    assert len(ran.stderr) < 2000 and "internal error" not in ran.stderr
    assert snapshot(tmp_path) == before


def test_a_data_path_that_leads_to_the_root_through_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "models").symlink_to("/")
    cfg = config(tmp_path)
    before = snapshot(tmp_path)
    ran = agent("up", "--config", str(cfg), timeout=30)
    assert ran.returncode == 2
    assert (
        f"error: paths.models (from {cfg}): {tmp_path}/models leads to / is a folder" in ran.stderr
    )
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "text, words",
    [
        pytest.param("api: {bind: 127.0.0.1}\napi: {port: 18001}\n", "line 2: the key 'api' appears twice", id="duplicate-top"),
        pytest.param("ui:\n  port: 3001\n  port: 3002\n", "line 3: the key 'port' appears twice", id="duplicate-nested"),
        pytest.param("base: &b {port: 1}\napi: *b\n", "line 2: YAML aliases (*name) are not allowed", id="alias"),
    ],
)  # fmt: skip
def test_config_file_traps_are_refused(tmp_path: Path, text: str, words: str) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    ran = agent("doctor", "--config", str(cfg), timeout=30)
    assert ran.returncode == 2 and f"error: {cfg}: {words}" in ran.stderr, ran.stderr


def test_an_alias_bomb_is_refused_fast_with_a_short_message(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(BOMB)
    assert len(BOMB) < 600
    start = time.monotonic()
    ran = agent("doctor", "--config", str(cfg), timeout=30)
    took = time.monotonic() - start
    assert ran.returncode == 2 and "YAML aliases (*name) are not allowed" in ran.stderr
    assert len(ran.stderr) < 4096 and took < 5  # a CLI start included; the refusal itself is ms


def test_a_huge_scalar_and_a_binary_file_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("w") as fh:
        fh.write("project: ")
        fh.write("a" * (100 << 20))
    ran = agent("doctor", "--config", str(big), timeout=30)
    assert ran.returncode == 2 and "is larger than 256 KiB" in ran.stderr and len(ran.stderr) < 1000
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"project: \xff\xfe\n")
    ran = agent("doctor", "--config", str(binary), timeout=30)
    assert ran.returncode == 2 and "is not UTF-8 text (byte 9)" in ran.stderr


def test_a_config_path_too_long_to_look_up_is_bad_input(tmp_path: Path) -> None:
    ran = agent("doctor", "--config", "/" + "x" * 5000, timeout=30)
    assert ran.returncode == 2 and "error: --config:" in ran.stderr
    assert "cannot be looked up: File name too long" in ran.stderr and len(ran.stderr) < 1000


@pytest.mark.parametrize(
    "args, key, words",
    [
        pytest.param(["logs", "vllm", "--tail", "²"], "--tail", "is not a number of lines", id="tail"),
        pytest.param(["model", "fit", "acme/x", "--gpu-memory", "9" * 400], "--gpu-memory", "is not a memory size of one GPU", id="gpu-memory-overflow"),
        pytest.param(["model", "fit", "acme/x", "--gpu-memory", "1e400"], "--gpu-memory", "is not a memory size", id="gpu-memory-exponent"),
    ],
)  # fmt: skip
def test_bad_command_line_values_are_bad_input(
    tmp_path: Path, args: list[str], key: str, words: str
) -> None:
    before = snapshot(tmp_path)
    ran = agent(*args, "--config", str(config(tmp_path)), timeout=30)
    assert ran.returncode == 2 and ran.stderr.startswith(f"error: {key}: ") and words in ran.stderr
    assert snapshot(tmp_path) == {**before, "config.yaml": snapshot(tmp_path)["config.yaml"]}


@pytest.mark.parametrize(
    "args, option, words",
    [
        pytest.param(["model", "fit", "acme/x", "--gpu-memory", "24GB", "--gpus", "٢"], "--gpus", "'\\u0662' is not a whole number from 1 to 64", id="gpus-arabic"),
        pytest.param(["model", "fit", "acme/x", "--gpu-memory", "24GB", "--gpus", "²"], "--gpus", "is not a whole number", id="gpus-superscript"),
        pytest.param(["switch-model", "acme/x", "--max-model-len", "٤٠٩٦", "--yes"], "--max-model-len", "is not a whole number from 256", id="max-len-arabic"),
        pytest.param(["switch-model", "acme/x", "--max-model-len", "4096.0", "--yes"], "--max-model-len", "is not a whole number", id="max-len-float"),
    ],
)  # fmt: skip
def test_numbers_on_the_command_line_are_ascii_digits_only(
    tmp_path: Path, args: list[str], option: str, words: str
) -> None:
    cfg = config(tmp_path)
    before = snapshot(tmp_path)
    ran = agent(*args, "--config", str(cfg), timeout=30)
    assert ran.returncode == 2, ran.stderr
    assert f"Invalid value for '{option}'" in ran.stderr and words in ran.stderr, ran.stderr
    assert snapshot(tmp_path) == before


def test_docker_host_is_honoured(tmp_path: Path) -> None:
    sock = tmp_path / "no-engine.sock"
    ran = agent("doctor", "--json", "--config", str(config(tmp_path)),
                env={"DOCKER_HOST": f"unix://{sock}"}, timeout=60)  # fmt: skip
    import json

    checks = {c["id"]: c for c in json.loads(ran.stdout)["checks"]}
    assert checks["docker.engine"]["status"] == "fail"
    assert (
        f"the Docker engine at unix://{sock} is not answering" in checks["docker.engine"]["detail"]
    )


def test_a_world_open_secrets_folder_is_reported_and_left_alone(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    os.chmod(secrets, 0o1777)
    (secrets / "api_key").write_text("k" * 43 + "\n")
    os.chmod(secrets / "api_key", 0o644)
    import json

    ran = agent("doctor", "--json", "--config", str(config(tmp_path)), timeout=60)
    check = {c["id"]: c for c in json.loads(ran.stdout)["checks"]}["host.secrets"]
    assert check["status"] == "fail"
    assert f"{secrets} is writable by others (mode 1777)" in check["detail"]
    assert f"{secrets}/api_key is readable by others (mode 644)" in check["detail"]
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o1777  # doctor changes nothing


@pytest.mark.parametrize(
    "env, args, words",
    [
        pytest.param({}, ["--template", "BAD"], "error: the compose template: is not valid YAML", id="bad-template"),
        pytest.param({"HF_TOKEN": "hf_" + "a" * 34, "HF_ENDPOINT": "http://10.9.8.7:8080"}, [],
                     "error: hub.endpoint", id="token-over-plain-http"),
    ],
)  # fmt: skip
def test_up_refuses_before_it_fetches_the_model_or_takes_its_lock(
    tmp_path: Path, env: dict[str, str], args: list[str], words: str
) -> None:
    # the model is not in the cache: `up` would fetch it first, from a Hub that is not there
    cfg = config(tmp_path, hub={"endpoint": "http://127.0.0.1:9"}, model={"id": "acme/tiny"})
    bad = tmp_path / "bad.yml"
    bad.write_text("services:\n  vllm: [this is no service\n")
    args = [str(bad) if a == "BAD" else a for a in args]
    before = snapshot(tmp_path)
    ran = agent("up", "--config", str(cfg), *args, env=env, timeout=60)
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.startswith(words), ran.stderr
    assert snapshot(tmp_path) == before  # no lock file, no partial download, no secret
