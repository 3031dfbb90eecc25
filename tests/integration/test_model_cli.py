"""`sandbox-agent model ...` as a subprocess against the local Hub server: words and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import AGENT
from tests.fakes.hub_server import running_hub
from tests.integration.test_models_hub import tiny_files
from tests.unit.test_fit import LLAMA_3_8B, LLAMA_31_70B

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_cli_test_token_abcdefghijklmnop"


def command() -> list[str]:
    return [AGENT, "model"]


@pytest.fixture(scope="module")
def hub():
    with running_hub() as server:
        server.add_repo("acme/tiny", tiny_files())
        server.add_repo("acme/gated", tiny_files(), gated="manual")
        server.tokens.add(TOKEN)
        server.repos["acme/gated"].approved.add(TOKEN)
        for repo, config in (
            ("meta-llama/Meta-Llama-3-8B-Instruct", LLAMA_3_8B),
            ("meta-llama/Llama-3.1-70B-Instruct", LLAMA_31_70B),
        ):
            server.add_repo(
                repo, {"config.json": json.dumps(config).encode(), "tokenizer.json": b"{}"}
            )  # sizes from config.json
        yield server


@pytest.fixture
def run(tmp_path, hub):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "hub": {"endpoint": hub.url},
                "model": {"id": "acme/tiny"},
                "paths": {"models": str(tmp_path / "models"), "secrets": str(tmp_path / "secrets")},
            }
        )
    )

    def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MODEL"))}
        return subprocess.run(
            [*command(), *args, "--config", str(config)],
            cwd=ROOT,
            env={**clean, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    return invoke


def test_pull_gives_safetensors_config_tokenizer_and_no_bin(run, tmp_path):
    done = run("pull", "acme/tiny", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "model.safetensors" in result["files"] and "config.json" in result["files"]
    snapshot = Path(result["path"])
    assert (snapshot / "tokenizer.json").exists()
    assert not list((tmp_path / "models").rglob("*.bin"))
    listed = run("list")
    assert listed.returncode == 0 and "acme/tiny" in listed.stdout
    assert "complete  (serving)" in listed.stdout


def test_gated_without_token_fails_naming_the_token_and_where_to_put_it(run, tmp_path):
    done = run("pull", "acme/gated")
    assert done.returncode == 1
    assert "error: acme/gated is gated: a Hugging Face token is needed" in done.stderr
    assert f"{tmp_path}/secrets/hf_token" in done.stderr and "HF_TOKEN" in done.stderr
    assert "https://huggingface.co/acme/gated" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "models").rglob("*.safetensors"))


def test_gated_with_token_from_env_or_secret_file_pulls_and_never_prints_it(run, tmp_path):
    done = run("pull", "acme/gated", "--json", env={"HF_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    for path in (tmp_path / "models").rglob("*"):  # nor written into the cache
        assert path.is_symlink() or path.is_dir() or TOKEN.encode() not in path.read_bytes()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets/hf_token").write_text(TOKEN + "\n")
    assert run("pull", "acme/gated").returncode == 0


def test_bad_model_id_is_bad_input_naming_the_field(run):
    done = run("pull", "not a repo")
    assert done.returncode == 2
    assert "error: MODEL: 'not a repo' is not a Hugging Face repo id" in done.stderr


def test_repo_id_the_hub_would_refuse_is_bad_input_not_an_internal_error(run):
    done = run("pull", "acme/tiny-")
    assert done.returncode == 2 and "internal error" not in done.stderr
    assert "error: MODEL: 'acme/tiny-' is not a Hugging Face repo id" in done.stderr


def test_pull_with_the_hub_down_keeps_a_complete_model_and_says_so(run, tmp_path):
    assert run("pull", "acme/tiny").returncode == 0
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text().replace(_endpoint_host(config), "127.0.0.1:9"))
    done = run("pull", "acme/tiny")
    assert done.returncode == 0, done.stderr
    assert "already complete (Hub unreachable: kept the cached copy, main not re-checked)" in (
        done.stdout
    )


def _endpoint_host(config: Path) -> str:
    return yaml.safe_load(config.read_text())["hub"]["endpoint"].split("//")[1]


def test_fit_on_this_box_reads_its_gpus_through_nvml(run, tmp_path, fake_nvml_dir):
    from tests.conftest import agent_env
    from tests.fakes import nvml

    scenario = nvml.SCENARIOS["one_20gb"].write(tmp_path / "scenario")
    env = nvml.fake_env(fake_nvml_dir, scenario, base=agent_env(SANDBOX_AGENT_ROOT=str(tmp_path)))
    done = run("fit", "meta-llama/Meta-Llama-3-8B-Instruct", env=env)
    assert done.returncode == 0, done.stderr
    # 20 GiB x 0.90 = 19.3 GB - 16.1 GB of weights - 2 GiB: KV cache for 8,539 tokens
    assert done.stdout.startswith("meta-llama/Meta-Llama-3-8B-Instruct on 1 x 21.47 GB")
    assert "fits: tensor_parallel_size 1, max_model_len 8192" in done.stdout
    more = run("fit", "meta-llama/Meta-Llama-3-8B-Instruct", "--gpus", "8", env=env)
    assert more.returncode == 2
    assert "error: --gpus: this box has 1 usable GPU(s), not 8" in more.stderr
    assert "pass --gpu-memory too (e.g. --gpu-memory 80GB)" in more.stderr


def test_unknown_model_fails_with_exit_1(run):
    done = run("pull", "acme/missing", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["kind"] == "ModelNotFound"


def test_fit_llama3_8b_on_one_24gb_gpu(run):
    done = run("fit", "meta-llama/Meta-Llama-3-8B-Instruct", "--gpu-memory", "24GB", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert (plan["fits"], plan["tensor_parallel_size"], plan["max_model_len"]) == (True, 1, 8192)


def test_fit_70b_on_one_24gb_gpu_is_refused_with_numbers(run):
    done = run("fit", "meta-llama/Llama-3.1-70B-Instruct", "--gpu-memory", "24GB")
    assert done.returncode == 1
    assert "does not fit" in done.stdout and "141.1 GB" in done.stdout
    assert "21.6 GB (24.0 GB x 0.90)" in done.stdout
    assert "fix: use more or larger GPUs, a quantized variant (AWQ, GPTQ, FP8)" in done.stderr


def test_fit_70b_on_eight_80gb_gpus(run):
    done = run("fit", "meta-llama/Llama-3.1-70B-Instruct", "--gpu-memory", "80GB", "--gpus", "8")
    assert done.returncode == 0, done.stderr
    assert "fits: tensor_parallel_size 8, max_model_len 131072" in done.stdout


def test_rm_refuses_the_serving_model(run):
    run("pull", "acme/tiny")
    done = run("rm", "acme/tiny")
    assert done.returncode == 1 and "is the serving model" in done.stderr
    revision = run("rm", "acme/other@v1")
    assert revision.returncode == 2
    assert "`model rm` removes every revision of a model" in revision.stderr
