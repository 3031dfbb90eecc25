"""Issue 14 i: image references parsed by the distribution grammar
([registry[:port]/]path[:tag][@digest]), and an image from a registry other than Docker Hub
and ghcr.io runs only when images.registries (IMAGE_REGISTRIES) names it: vLLM's image gets
the API key, the GPUs, `ipc: host` and the model folder read-write. At settings load, so for
every image setting and for `update`'s flags alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from agent import settings
from agent.cli import main
from agent.errors import BadInput
from agent.refs import ImageRef

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "path", "tag", "digest"),
    [
        ("vllm/vllm-openai:v0.30.0", "docker.io", "vllm/vllm-openai", "v0.30.0", None),
        ("caddy:2.10.2", "docker.io", "caddy", "2.10.2", None),
        ("ubuntu", "docker.io", "ubuntu", None, None),
        ("docker.io/library/ubuntu:24.04", "docker.io", "library/ubuntu", "24.04", None),
        ("index.docker.io/vllm/vllm-openai:v1", "docker.io", "vllm/vllm-openai", "v1", None),
        ("ghcr.io/open-webui/open-webui:v0.12.4", "ghcr.io", "open-webui/open-webui", "v0.12.4",
         None),
        ("localhost:5000/a/b:c", "localhost:5000", "a/b", "c", None),
        ("localhost/a", "localhost", "a", None, None),
        ("Registry.Example.com/a", "registry.example.com", "a", None, None),
        ("Upper/case", "upper", "case", None, None),  # an upper-case first part is a host
        ("[::1]:5000/a:1", "[::1]:5000", "a", "1", None),
        (f"vllm/vllm-openai:v0.30.0@{DIGEST}", "docker.io", "vllm/vllm-openai", "v0.30.0", DIGEST),
        (f"vllm/vllm-openai@{DIGEST}", "docker.io", "vllm/vllm-openai", None, DIGEST),
        ("a/b__c.d-e--f:T_1.x-y", "docker.io", "a/b__c.d-e--f", "T_1.x-y", None),
        ("sandbox-test/vllm-standin:818efd4d2cadc221", "docker.io", "sandbox-test/vllm-standin",
         "818efd4d2cadc221", None),
    ],
)  # fmt: skip
def test_a_reference_is_read_as_the_distribution_grammar_reads_it(
    text: str, registry: str, path: str, tag: str | None, digest: str | None
) -> None:
    assert ImageRef.parse(text, "x") == ImageRef(registry, path, tag, digest)


@pytest.mark.parametrize(
    "text",
    [
        "a@b@c:d:e",
        "a:b:c",
        "vllm/vllm-openai:latest$(id)",
        "upper/Case",
        "Upper",
        "a//b",
        "a/b/",
        "-a/b",
        "a..b/c",
        "a/b:" + "t" * 129,
        "a/b:-tag",
        "a/b@sha256:abc",
        "a/b@sha256:" + "A" * 64,
        "a/b@md5:" + "a" * 32,
        "a/b@" + "a" * 64,
        "registry.example.com:99999/a",
        "reg_istry.example.com/a",
        "a/" + "b" * 300,
        "vllm/vllm-openai:v0.30.0\n",
        "ｖllm/vllm",
        "",
    ],
)
def test_what_the_grammar_does_not_take_is_bad_input(text: str) -> None:
    with pytest.raises(BadInput) as caught:
        ImageRef.parse(text, "images.vllm")
    assert caught.value.key == "images.vllm" and caught.value.exit_code == 2
    assert "is not a Docker image reference" in caught.value.message


@pytest.mark.parametrize("name", ["VLLM_IMAGE", "WEBUI_IMAGE", "PROXY_IMAGE"])
def test_an_image_of_an_unnamed_registry_is_refused_naming_the_setting(
    tmp_path: Path, name: str
) -> None:
    key = "images." + name.split("_")[0].lower()
    with pytest.raises(BadInput) as caught:
        settings.load(tmp_path / "none.yaml", env={name: "quay.io/someone/image:1"})
    assert caught.value.key == f"{key} (from environment {name})"
    assert caught.value.message.endswith(
        "'quay.io/someone/image:1' comes from quay.io, a registry that images.registries does "
        "not name (only Docker Hub and ghcr.io are trusted without it)"
    )
    assert caught.value.fix is not None and "IMAGE_REGISTRIES=quay.io" in caught.value.fix


def test_a_named_registry_is_trusted_comma_or_whitespace_separated(tmp_path: Path) -> None:
    env = {
        "IMAGE_REGISTRIES": "quay.io, Registry.Example.com:5000\tlocalhost:5000,,",
        "VLLM_IMAGE": "registry.example.com:5000/vllm/vllm-openai:v0.30.0",
        "WEBUI_IMAGE": "quay.io/open-webui/open-webui:v0.12.4",
        "PROXY_IMAGE": "localhost:5000/caddy:2",
    }
    s = settings.load(tmp_path / "none.yaml", env=env)
    assert s.images.registries == ("quay.io", "registry.example.com:5000", "localhost:5000")
    assert s.images.vllm == env["VLLM_IMAGE"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"images": {"registries": ["index.docker.io", "quay.io"]}}))
    assert settings.load(cfg).images.registries == ("docker.io", "quay.io")
    assert settings.load(tmp_path / "none.yaml").images.registries == ()  # none by default


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("quay.io/x", "'quay.io/x' is not a registry"),
        ("ok.example under_score.example", "'under_score.example' is not a registry"),
        ("host:0", "'host:0' is not a registry"),
    ],
)
def test_a_registry_that_is_none_is_refused(tmp_path: Path, value: str, words: str) -> None:
    with pytest.raises(BadInput) as caught:
        settings.load(tmp_path / "none.yaml", env={"IMAGE_REGISTRIES": value})
    assert caught.value.key == "images.registries (from environment IMAGE_REGISTRIES)"
    assert words in caught.value.message


@pytest.mark.parametrize(
    ("flag", "image", "words"),
    [
        ("--vllm-image", "a@b@c:d:e", "'a@b@c:d:e' is not a Docker image reference"),
        ("--vllm-image", "evil.example/vllm:1", "comes from evil.example, a registry that"),
        ("--webui-image", "evil.example:444/ui", "comes from evil.example:444, a registry"),
    ],
)
def test_update_refuses_a_bad_image_with_exit_2_before_anything(
    write_config, fake_commands, flag: str, image: str, words: str
) -> None:
    config = write_config()
    before = config.read_text()
    ran = CliRunner().invoke(
        main, ["update", flag, image, "--yes", "--config", str(config)], catch_exceptions=False
    )
    assert ran.exit_code == 2, ran.output
    key = "images.vllm" if flag == "--vllm-image" else "images.webui"
    assert ran.output.startswith(f"error: {key} (from command line): ") and words in ran.output
    assert fake_commands.calls == [] and config.read_text() == before
