"""model.extra_args may not reach a flag the agent sets, in any spelling vLLM's parser reads
as that flag (each spelling below checked against the real vLLM 0.30.0 parser in
tests/integration/test_vllm_cli_contract.py)."""

from __future__ import annotations

import pytest

from agent.errors import BadInput
from agent.validate import extra_args, owned_flag


@pytest.mark.parametrize(
    "args, flag",
    [
        pytest.param(["--api-key.a=b"], "--api-key", id="dotted-json-key"),
        pytest.param(["--api-k.a=b"], "--api-key", id="dotted-prefix"),
        pytest.param(["--api_key.a", "b"], "--api-key", id="dotted-underscore-spaced"),
        pytest.param(["--host.a=b"], "--host", id="dotted-host"),
        pytest.param(["--served-model-name.x=y"], "--served-model-name", id="dotted-served-name"),
        pytest.param(["--dtype=half", "-t", "8"], "-tp", id="short-prefix-of-tp"),
        pytest.param(["-t=8"], "-tp", id="short-prefix-with-value"),
        pytest.param(["-tp.x=1"], "-tp", id="dotted-short"),
    ],
)
def test_every_spelling_of_an_owned_flag_is_refused(args: list[str], flag: str) -> None:
    with pytest.raises(BadInput) as err:
        extra_args(args, "model.extra_args")
    assert err.value.exit_code == 2
    assert err.value.message.startswith("model.extra_args")
    assert f"is set by sandbox-agent ({flag}) and may not be passed here" in err.value.message


@pytest.mark.parametrize(
    "arg",
    [
        "--api-server-count=2",
        "--config-format=mistral",
        "--tokenizer=/root/.cache/huggingface/tok.v2",
        "--limit-mm-per-prompt.image=2",
        "-O3",
        "-pp",
        "-1",
        "-.5",
        "--",
    ],
)
def test_flags_that_only_look_alike_stay_allowed(arg: str) -> None:
    assert owned_flag(arg) is None
    assert extra_args(["--seed", arg], "model.extra_args") == ("--seed", arg)


@pytest.mark.parametrize(
    "args",
    [["--config", "/tmp/x.yaml"], ["--config=/tmp/x.yaml"], ["--conf", "/x"], ["--confi", "/x"]],
)
def test_a_vllm_config_file_is_refused_it_could_turn_the_key_off(args: list[str]) -> None:
    with pytest.raises(BadInput) as err:
        extra_args(args, "model.extra_args")
    assert "names a vLLM config file, which could set the flags sandbox-agent owns" in (
        err.value.message
    )


def test_config_format_is_not_the_config_file() -> None:
    assert extra_args(["--config-format", "hf"], "model.extra_args") == ("--config-format", "hf")
