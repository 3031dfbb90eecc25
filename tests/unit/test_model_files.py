"""Which files of a repo vLLM gets, and how a model reference is read."""

from __future__ import annotations

import pytest

from agent.errors import BadInput
from agent.models import ModelRef, select_files

LLAMA_3_8B_REPO = [  # meta-llama/Meta-Llama-3-8B-Instruct, as listed on the Hub
    ".gitattributes",
    "LICENSE",
    "README.md",
    "USE_POLICY.md",
    "config.json",
    "generation_config.json",
    "model-00001-of-00004.safetensors",
    "model-00002-of-00004.safetensors",
    "model-00003-of-00004.safetensors",
    "model-00004-of-00004.safetensors",
    "model.safetensors.index.json",
    "original/consolidated.00.pth",
    "original/params.json",
    "original/tokenizer.model",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
]
MISTRAL_7B_V03_REPO = [  # mistralai/Mistral-7B-Instruct-v0.3: HF shards and Mistral's own file
    "README.md",
    "config.json",
    "consolidated.safetensors",
    "generation_config.json",
    "model-00001-of-00003.safetensors",
    "model-00002-of-00003.safetensors",
    "model-00003-of-00003.safetensors",
    "model.safetensors.index.json",
    "params.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer.model.v3",
    "tokenizer_config.json",
]


def test_llama3_gets_safetensors_shards_and_no_original_checkpoint():
    assert select_files(LLAMA_3_8B_REPO) == [
        "config.json",
        "generation_config.json",
        "model-00001-of-00004.safetensors",
        "model-00002-of-00004.safetensors",
        "model-00003-of-00004.safetensors",
        "model-00004-of-00004.safetensors",
        "model.safetensors.index.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


def test_mistral_gets_hf_shards_not_the_consolidated_duplicate():
    chosen = select_files(MISTRAL_7B_V03_REPO)
    assert "consolidated.safetensors" not in chosen
    assert {"model-00003-of-00003.safetensors", "tokenizer.model", "params.json"} <= set(chosen)


def test_bin_beside_safetensors_is_never_fetched():
    chosen = select_files(
        [
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "pytorch_model.bin.index.json",
            "model.safetensors.index.json",
            "tf_model.h5",
            "flax_model.msgpack",
            "model.gguf",
            "chat_template.jinja",
        ]
    )
    assert chosen == [
        "chat_template.jinja",
        "config.json",
        "model.safetensors",
        "model.safetensors.index.json",
    ]


def test_bin_only_repo_keeps_its_bin_shards_and_index():
    chosen = select_files(
        [
            "config.json",
            "pytorch_model-00001-of-00002.bin",
            "pytorch_model-00002-of-00002.bin",
            "pytorch_model.bin.index.json",
            "vocab.json",
            "merges.txt",
        ]
    )
    assert chosen == [
        "config.json",
        "merges.txt",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
        "vocab.json",
    ]


@pytest.mark.parametrize(
    ("text", "revision", "expected"),
    [
        pytest.param("org/name", None, ModelRef("org/name", "main"), id="default-main"),
        pytest.param("org/name@v1.0", None, ModelRef("org/name", "v1.0"), id="at-revision"),
        pytest.param("org/name", "refs/pr/1", ModelRef("org/name", "refs/pr/1"), id="flag"),
    ],
)
def test_model_ref_parse(text, revision, expected):
    assert ModelRef.parse(text, revision) == expected


@pytest.mark.parametrize("text", ["noslash", "a/b/c", "org/../x", "org/na me", "org/name@bad rev"])
def test_bad_model_ref_is_bad_input_naming_the_field(text):
    with pytest.raises(BadInput) as caught:
        ModelRef.parse(text)
    assert caught.value.exit_code == 2 and str(caught.value).startswith("MODEL")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("org/a--b", id="double-dash-joins-org-and-name-in-the-cache"),
        pytest.param("org/name-", id="trailing-dash"),
        pytest.param("org/.name", id="leading-dot"),
        pytest.param("org/name.git", id="dot-git"),
    ],
)
def test_repo_ids_the_hub_refuses_are_bad_input_not_a_library_error(text):
    with pytest.raises(BadInput) as caught:
        ModelRef.parse(text)
    assert str(caught.value).startswith(f"MODEL: {text!r} is not a Hugging Face repo id")
    assert "org/name, e.g. mistralai/Mistral-7B-Instruct-v0.3" in caught.value.fix


@pytest.mark.parametrize("revision", ["a/../../x", "refs/./x", "a//b", "v1/"])
def test_revision_that_could_leave_refs_is_refused(revision):
    with pytest.raises(BadInput) as caught:
        ModelRef.parse("org/name", revision)
    assert str(caught.value).startswith(f"MODEL revision: {revision!r} is not a branch")
    assert "40-character commit sha" in caught.value.fix


def test_a_model_ref_built_directly_is_validated_too():
    with pytest.raises(BadInput, match="model revision"):
        ModelRef("org/name", "x/../../../etc/cron.d/job")


def test_a_ref_file_that_is_not_a_commit_is_ignored(tmp_path):
    from agent import models, settings

    s = settings.load(
        tmp_path / "absent.yaml",
        env={},
        flags={"paths.models": str(tmp_path / "models"), "model.id": "org/name"},
    )
    refs = models.repo_dir(s, "org/name") / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("../../../../etc\n")
    assert models.cached_commit(s, ModelRef("org/name")) is None
    with pytest.raises(models.ModelNotCached, match="not fully downloaded"):
        models.snapshot_path(s)
    (refs / "main").write_text("a" * 40 + "\n")
    assert models.cached_commit(s, ModelRef("org/name")) == "a" * 40
