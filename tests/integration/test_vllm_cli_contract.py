"""The REAL vLLM's contract: every `vllm serve` command line the agent renders parses with
vLLM 0.30.0's own argument parser, the parsed values are the ones the settings meant, and the
key the env file carries is the one vLLM's server checks.

Our stand-in takes any flag; this test does not. vLLM is installed once from PyPI into a
cached venv and run there as a subprocess, every command line in one process
(`tests/fakes/vllm_parser.py`; cold about 5 minutes, then cached). Each command line is the
`command` of the rendered compose file as `load_project` reads it back (the image's
ENTRYPOINT is `vllm serve`), and its environment is the container's: the env file included.

vLLM 0.30.0 does not read VLLM_API_KEY as the `--api-key` flag's default: the parsed
`api_key` stays None, and at startup `init_entrypoints_middleware` installs its key check with
`args.api_key or [envs.VLLM_API_KEY]`. The parse script runs that function under the
container's environment and asks the guarded route with no key, a wrong key and the env's key.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent import deploy, gpu, stack
from agent import settings as settings_mod
from agent.errors import BadInput
from agent.validate import OWNED_FLAGS, owned_flag
from tests.fakes import vllm_parser
from tests.integration.stack_support import fake_snapshot

pytestmark = pytest.mark.vllm

KEY = "sk-contract-0123456789abcdef"
GUARDED = {"guarded": True, "no_key": 401, "wrong_key": 401, "env_key": 200}
BASE = {"id": "acme/tiny", "served_name": "tiny", "tensor_parallel_size": 2, "max_model_len": 32768}

# model settings: the shapes of the five values the agent sets itself
SHAPES = [
    pytest.param({}, id="defaults"),
    pytest.param({"id": "acme/tiny-chat"}, id="served-name-is-the-id"),
    pytest.param({**BASE, "served_name": "acme/tiny-chat:v1"}, id="tp2-32k-slash-colon"),
    pytest.param(
        {
            "id": "Org-1/Big.Model_v2",
            "served_name": "big:latest",
            "tensor_parallel_size": 8,
            "max_model_len": "auto",
            "gpu_memory_utilization": 0.5,
        },
        id="tp8-auto-len-half-memory",
    ),
    pytest.param({"max_model_len": 256, "gpu_memory_utilization": 0.05}, id="lowest-bounds"),
    pytest.param(
        {"max_model_len": 10_000_000, "tensor_parallel_size": 64, "gpu_memory_utilization": 0.99},
        id="highest-bounds",
    ),
]
# model.extra_args (split on whitespace, as VLLM_EXTRA_ARGS is) -> the values vLLM parses
EXTRA = [
    pytest.param(
        "--enable-prefix-caching --max-num-seqs=64 --dtype=bfloat16",
        {"enable_prefix_caching": True, "max_num_seqs": 64, "dtype": "bfloat16"},
        id="prefix-caching-seqs-dtype",
    ),
    pytest.param(
        "--kv-cache-dtype fp8 --enable-sleep-mode",
        {"kv_cache_dtype": "fp8", "enable_sleep_mode": True},
        id="kv-fp8-sleep-mode",
    ),
    pytest.param(
        "--enforce-eager --max-num-batched-tokens=8192 --quantization=fp8",
        {"enforce_eager": True, "max_num_batched_tokens": 8192, "quantization": "fp8"},
        id="eager-batched-quantized",
    ),
    pytest.param(
        "--enable-auto-tool-choice --tool-call-parser=hermes --reasoning-parser=deepseek_r1",
        {
            "enable_auto_tool_choice": True,
            "tool_call_parser": "hermes",
            "reasoning_parser": "deepseek_r1",
        },
        id="tools-and-reasoning",
    ),
    pytest.param(
        "--limit-mm-per-prompt.image=2 --speculative-config.method=ngram --speculative-config.num_speculative_tokens=4",
        {
            "limit_mm_per_prompt": {"image": 2},
            "speculative_config": {"method": "ngram", "num_speculative_tokens": 4},
        },
        id="dotted-json-args",
    ),
    pytest.param(
        "--seed 08 --cpu-offload-gb=4", {"seed": 8, "cpu_offload_gb": 4.0}, id="number-like-strings"
    ),
    pytest.param(
        "--tokenizer-mode=mistral --config-format=mistral --load-format=mistral",
        {"tokenizer_mode": "mistral", "config_format": "mistral", "load_format": "mistral"},
        id="mistral-formats",
    ),
    pytest.param(
        "--max_num_seqs=32 --enable_chunked_prefill --no-enable-prefix-caching",
        {"max_num_seqs": 32, "enable_chunked_prefill": True, "enable_prefix_caching": False},
        id="underscores-and-no-flag",
    ),
    pytest.param(
        "-O3 --generation-config=vllm --trust-remote-code",
        {"optimization_level": "3", "generation_config": "vllm", "trust_remote_code": True},
        id="short-optimization-level",
    ),
]
ACCEPTED = [pytest.param(m, {}, id=p.id) for p in SHAPES for m in p.values] + [
    pytest.param({**BASE, "extra_args": p.values[0].split()}, p.values[1], id=p.id) for p in EXTRA
]

# the BASE command line with a flag swapped (old => new) or args appended -> the words vLLM's
# parser refuses it with, and its exit code (argparse's 2; None: validate() raised)
REFUSED = [
    pytest.param(
        "--tensor-parallel-size=2 => --tensor-parallel-size=two",
        "argument --tensor-parallel-size/-tp: invalid int value: 'two'",
        2,
        id="bad-int",
    ),
    pytest.param(
        "--gpu-memory-utilization=0.9 => --gpu-memory-utilization=most",
        "argument --gpu-memory-utilization: invalid float value: 'most'",
        2,
        id="bad-float",
    ),
    pytest.param(
        "--max-model-len=32768 => --max-model-len=lots",
        "argument --max-model-len: ",
        2,
        id="bad-length",
    ),
    pytest.param(
        "--max-model-length=32768",
        "unrecognized arguments: --max-model-length=32768",
        2,
        id="misspelled-flag",
    ),
    pytest.param("--dtype=bf17", "argument --dtype: invalid choice: 'bf17'", 2, id="bad-choice"),
    pytest.param(
        "--kv-cache-dtype",
        "argument --kv-cache-dtype: expected one argument",
        2,
        id="missing-value",
    ),
    pytest.param(
        "--max-num-seqs 1e3",
        "argument --max-num-seqs: invalid int value: '1e3'",
        2,
        id="exponent-is-no-int",
    ),
    pytest.param(
        "--swap-space=4", "unrecognized arguments: --swap-space=4", 2, id="removed-before-0.30"
    ),
    pytest.param(
        "--disable-log-requests",
        "unrecognized arguments: --disable-log-requests",
        2,
        id="removed-log-flag",
    ),
    pytest.param("-tp8", "unrecognized arguments: -tp8", 2, id="attached-short-value"),
    pytest.param(
        "--dtype=half other/model", "unrecognized arguments: other/model", 2, id="second-positional"
    ),
    pytest.param(
        "--enable-auto-tool-choice",
        "--enable-auto-tool-choice requires --tool-call-parser",
        None,
        id="validate-refuses",
    ),
]

# extra args vLLM reads as a flag the agent owns -> (dest, what vLLM makes of it). The
# settings validator must refuse every one of them.
OWNED = [
    pytest.param(["--api-key=x"], "api_key", ["x"], id="api-key"),
    pytest.param(["--api-key="], "api_key", [None], id="api-key-empty-turns-auth-off"),
    pytest.param(["--api_key=x"], "api_key", ["x"], id="api-key-underscore"),
    pytest.param(["--api-k=x"], "api_key", ["x"], id="api-key-prefix"),
    pytest.param(["--api-key.a=b"], "api_key", ['{"a": "b"}'], id="api-key-dotted"),
    pytest.param(["--api-k.a=b"], "api_key", ['{"a": "b"}'], id="api-key-dotted-prefix"),
    pytest.param(["--host.a=b"], "host", '{"a": "b"}', id="host-dotted"),
    pytest.param(["--host=0.0.0.0"], "host", "0.0.0.0", id="host"),
    pytest.param(["--port", "9000"], "port", 9000, id="port"),
    pytest.param(["--uds=/tmp/vllm.sock"], "uds", "/tmp/vllm.sock", id="uds"),
    pytest.param(["--ser=gpt-4"], "served_model_name", ["gpt-4"], id="served-name-prefix"),
    pytest.param(
        ["--served-model-name.x=y"], "served_model_name", ['{"x": "y"}'], id="served-name-dotted"
    ),
    pytest.param(["-tp", "8"], "tensor_parallel_size", 8, id="tp-short"),
    pytest.param(["-t", "8"], "tensor_parallel_size", 8, id="tp-short-prefix"),
    pytest.param(["--max-model-len=4096"], "max_model_len", 4096, id="max-model-len"),
    pytest.param(
        ["--gpu-memory-utilization=0.99"], "gpu_memory_utilization", 0.99, id="gpu-memory"
    ),
]
OWNED_DESTS = (
    "api_key",
    "host",
    "port",
    "uds",
    "served_model_name",
    "model",
    "tensor_parallel_size",
    "max_model_len",
    "gpu_memory_utilization",
)


@dataclasses.dataclass(frozen=True)
class Rendered:
    command: list[str]
    env: dict[str, str]
    settings: settings_mod.Settings
    spec: stack.StackSpec


def _config(folder: Path, model: dict[str, Any]) -> Path:
    data = {
        "project": "vllm-contract",
        "gpus": "none",
        "model": model,
        "ui": {"enabled": False},  # vLLM's service is the same with the UI; its env file is not
        "paths": {
            name: str(folder / name) for name in ("models", "ui_data", "stack", "state", "secrets")
        },
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def render(folder: Path, model: dict[str, Any]) -> Rendered:
    """The vLLM service as `sandbox-agent up` writes it: the settings, the plan's StackSpec
    (snapshot path, tensor parallel size, context length), the env file with the key."""
    settings = settings_mod.load(_config(folder, model))
    fake_snapshot(settings.paths.models, settings.model.id)
    spec = deploy.plan(settings, None, found=gpu.GpuPlan(None, ())).spec  # type: ignore[arg-type]
    spec = dataclasses.replace(spec, secret_env={stack.VLLM: {"VLLM_API_KEY": KEY}})
    out = stack.render(settings, spec)
    stack.write_env_files(out)
    stack.write(out)
    service = next(s for s in stack.load_project(out.path).services if s.name == stack.VLLM)
    return Rendered(list(service.config["command"]), dict(service.env), settings, spec)


def changed(command: list[str], change: str) -> list[str] | None:
    """`old => new` swaps one argument (None when it is not there); else `change` is appended."""
    if " => " in change:
        old, new = change.split(" => ")
        return [new if arg == old else arg for arg in command] if old in command else None
    return command + change.split()


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every row rendered, then all their command lines through vLLM's parser at once."""
    rows: dict[str, Rendered] = {}
    for param in ACCEPTED:
        rows[param.id] = render(tmp_path_factory.mktemp(param.id), param.values[0])
    base = render(tmp_path_factory.mktemp("base"), BASE)
    cases: dict[str, tuple[list[str], dict[str, str]]] = {"base": (base.command, base.env)}
    cases.update({f"accepted/{k}": (r.command, r.env) for k, r in rows.items()})
    for param in REFUSED:
        command = changed(base.command, param.values[0])
        if command is not None:  # else the test says so
            cases[f"refused/{param.id}"] = (command, base.env)
    for param in OWNED:
        cases[f"owned/{param.id}"] = (base.command + list(param.values[0]), base.env)
    answer = vllm_parser.parse(list(cases.values()), options=OWNED_DESTS)
    return {
        "answer": answer,
        "rows": rows,
        "base": base,
        "parsed": dict(zip(cases, answer.results, strict=True)),
    }


def test_the_parser_is_the_release_the_stack_runs(contract: dict[str, Any]) -> None:
    answer = contract["answer"]
    assert answer.vllm == vllm_parser.VLLM_VERSION
    default = settings_mod.load(Path("/nonexistent")).images.vllm
    assert default == f"vllm/vllm-openai:v{vllm_parser.VLLM_VERSION}"


@pytest.mark.parametrize("model, values", ACCEPTED)
def test_every_rendered_command_line_parses_as_meant(
    contract: dict[str, Any], request: pytest.FixtureRequest, model: dict, values: dict
) -> None:
    row_id = request.node.callspec.id
    row: Rendered = contract["rows"][row_id]
    parsed: vllm_parser.Parsed = contract["parsed"][f"accepted/{row_id}"]
    assert parsed.ok, f"vLLM refused {row.command}:\n{parsed.error}"
    m, spec = row.settings.model, row.spec
    ns = parsed.namespace
    assert ns["model"] == ns["model_tag"] == spec.model_path
    assert spec.model_path.startswith("/root/.cache/huggingface/hub/models--")
    assert ns["served_model_name"] == [m.name]
    assert ns["max_model_len"] == (None if m.max_model_len == "auto" else m.max_model_len)
    assert ns["tensor_parallel_size"] == (
        1 if m.tensor_parallel_size == "auto" else m.tensor_parallel_size
    )
    assert ns["gpu_memory_utilization"] == m.gpu_memory_utilization
    for key, value in values.items():
        assert parsed.values[key] == value, f"{key}: {parsed.values[key]!r}"
    # the key: not on the command line, read by vLLM's server from the env file's VLLM_API_KEY
    assert ns["api_key"] is None and not any(KEY in arg for arg in row.command)
    assert row.env["VLLM_API_KEY"] == KEY
    assert parsed.auth == GUARDED
    assert (ns["host"], ns["port"], ns["uds"]) == (None, 8000, None)  # the published port's


@pytest.mark.parametrize("change, words, code", REFUSED)
def test_vllm_refuses_what_it_cannot_parse(
    contract: dict[str, Any], request: pytest.FixtureRequest, change: str, words: str, code: Any
) -> None:
    assert contract["parsed"]["base"].ok  # refused for the change alone
    parsed = contract["parsed"].get(f"refused/{request.node.callspec.id}")
    assert parsed, f"nothing to swap: {change} in {contract['base'].command}"
    assert not parsed.ok, f"vLLM accepted {list(parsed.argv)}"
    assert words in parsed.error
    assert parsed.exit_code == code  # argparse exits 2; validate() raises (None)


@pytest.mark.parametrize("extra, dest, value", OWNED)
def test_what_vllm_reads_as_an_owned_flag_the_settings_refuse(
    contract: dict[str, Any],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    extra: list,
    dest: str,
    value: Any,
) -> None:
    parsed: vllm_parser.Parsed = contract["parsed"][f"owned/{request.node.callspec.id}"]
    assert parsed.ok, parsed.error
    assert parsed.namespace[dest] == value
    assert contract["parsed"]["base"].namespace[dest] != value  # the extra arg changed it
    if value == [None]:  # `--api-key=`: vLLM's key check is gone, the env key ignored
        assert parsed.auth["guarded"] is False and parsed.auth["no_key"] == 200
    with pytest.raises(BadInput) as err:
        settings_mod.load(_config(tmp_path, {**BASE, "extra_args": extra}))
    assert err.value.message.startswith("model.extra_args")
    assert "is set by sandbox-agent" in err.value.message


def test_the_owned_flags_are_every_spelling_vllm_has_for_them(contract: dict[str, Any]) -> None:
    options: dict[str, list[str]] = contract["answer"].options
    assert set(options) == set(OWNED_DESTS)
    spellings = {s for strings in options.values() for s in strings}
    assert set(OWNED_FLAGS) == spellings  # none missing, none stale
    for spelling in spellings:
        assert owned_flag(f"{spelling}=1") is not None, spelling
