"""Settings: sources in order, validation that names the key, atomic save."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from agent import settings
from agent.errors import BadInput


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    s = settings.load(tmp_path / "absent.yaml")
    assert s.model.id == "mistralai/Mistral-7B-Instruct-v0.3"
    assert s.api.port == 8000 and s.ui.port == 3000
    assert s.model.max_model_len == "auto" and s.gpus == "auto"
    assert ":latest" not in s.images.vllm and ":" in s.images.vllm
    assert s.source is None


def test_sources_in_order_file_env_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump({"model": {"id": "org/from-file", "revision": "v1"}, "api": {"port": 8100}})
    )
    env = {"MODEL_ID": "org/from-env", "API_PORT": "8200", "UI_ENABLED": "false", "GPUS": "2"}
    s = settings.load(cfg, env=env, flags={"model.id": "org/from-flag"})
    assert s.model.id == "org/from-flag"  # flag beats env beats file
    assert s.model.revision == "v1"  # file beats default
    assert s.api.port == 8200  # env string coerced to int
    assert s.ui.enabled is False and s.gpus == 2
    assert s.source == cfg


def test_config_chosen_by_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("project: other\n")
    assert settings.load(env={"SANDBOX_AGENT_CONFIG": str(cfg)}).project == "other"


def test_empty_env_value_is_ignored(tmp_path: Path) -> None:
    # Linode hands optional UDFs over as empty strings.
    s = settings.load(tmp_path / "none.yaml", env={"MODEL_ID": "", "SERVED_MODEL_NAME": ""})
    assert s.model.id == settings.DEFAULTS["model"]["id"]


def test_extra_args_from_env_are_split_never_shell_evaluated(tmp_path: Path) -> None:
    s = settings.load(
        tmp_path / "n.yaml", env={"VLLM_EXTRA_ARGS": "--enable-prefix-caching --max-num-seqs=8"}
    )
    assert s.model.extra_args == ("--enable-prefix-caching", "--max-num-seqs=8")


@pytest.mark.parametrize(
    "data, key, words",
    [
        pytest.param(
            {"modle": {}},
            "modle (in",
            "unknown setting; allowed here: api, backup, docker, gpus, https, hub",
            id="unknown-top-key",
        ),
        pytest.param(
            {"model": {"idd": "a/b"}},
            "model.idd (in",
            "unknown setting; allowed here: extra_args",
            id="unknown-nested-key",
        ),
        pytest.param(
            {"model": "a/b"}, "model (in", "must be a mapping of settings", id="mapping-expected"
        ),
        pytest.param(
            {"model": {"id": "a/b;rm -rf /"}},
            "model.id",
            "is not a Hugging Face repo id",
            id="shell-chars",
        ),
        pytest.param(
            {"model": {"id": "a/b/c"}},
            "model.id",
            "is not a Hugging Face repo id",
            id="two-slashes",
        ),
        pytest.param(
            {"model": {"id": "-a/b"}},
            "model.id",
            "is not a Hugging Face repo id",
            id="leading-dash",
        ),
        pytest.param(
            {"model": {"id": ".a/b"}}, "model.id", "is not a Hugging Face repo id", id="leading-dot"
        ),
        pytest.param(
            {"model": {"id": "a/.."}}, "model.id", "is not a Hugging Face repo id", id="dot-dot"
        ),
        pytest.param(
            {"model": {"id": "a/b c"}}, "model.id", "is not a Hugging Face repo id", id="space"
        ),
        pytest.param(
            {"model": {"id": "justname"}}, "model.id", "is not a Hugging Face repo id", id="no-org"
        ),
        pytest.param(
            {"model": {"id": "org/a--b"}},
            "model.id",
            "is not a Hugging Face repo id",
            id="double-dash",
        ),
        pytest.param(
            {"model": {"id": "org/name-"}},
            "model.id",
            "is not a Hugging Face repo id",
            id="trailing-dash",
        ),
        pytest.param(
            {"model": {"id": "org/name."}},
            "model.id",
            "is not a Hugging Face repo id",
            id="trailing-dot",
        ),
        pytest.param(
            {"model": {"id": "org/name.git"}},
            "model.id",
            "is not a Hugging Face repo id",
            id="dot-git",
        ),
        pytest.param(
            {"paths": {"models": "/opt/m:/etc"}},
            "paths.models",
            "use an absolute path of letters",
            id="path-colon",
        ),
        pytest.param(
            {"paths": {"models": "/opt/my models"}},
            "paths.models",
            "use an absolute path of letters",
            id="path-space",
        ),
        pytest.param(
            {"model": {"id": 7}}, "model.id", "is not a Hugging Face repo id", id="not-a-string"
        ),
        pytest.param(
            {"model": {"revision": "$(id)"}},
            "model.revision",
            "is not a branch, tag or commit",
            id="revision-shell",
        ),
        pytest.param(
            {"api": {"port": 0}}, "api.port", "use a whole number from 1 to 65535", id="port-zero"
        ),
        pytest.param(
            {"api": {"port": 70000}},
            "api.port",
            "use a whole number from 1 to 65535",
            id="port-too-big",
        ),
        pytest.param(
            {"ui": {"port": "http"}},
            "ui.port",
            "use a whole number from 1 to 65535",
            id="port-word",
        ),
        pytest.param(
            {"api": {"port": True}},
            "api.port",
            "use a whole number from 1 to 65535",
            id="port-bool",
        ),
        pytest.param(
            {"api": {"bind": "everywhere"}}, "api.bind", "is not an IP address", id="bind"
        ),
        pytest.param(
            {"model": {"gpu_memory_utilization": 1.5}},
            "model.gpu_memory_utilization",
            "a fraction from 0.05 to 0.99",
            id="util-high",
        ),
        pytest.param(
            {"model": {"max_model_len": 12}},
            "model.max_model_len",
            "from 256 to 10000000 or 'auto'",
            id="len-small",
        ),
        pytest.param(
            {"model": {"tensor_parallel_size": "many"}},
            "model.tensor_parallel_size",
            "or 'auto'",
            id="tp-word",
        ),
        pytest.param(
            {"model": {"extra_args": "--x"}},
            "model.extra_args",
            "must be a list of strings",
            id="extra-not-list",
        ),
        pytest.param(
            {"model": {"extra_args": ["--x; reboot"]}},
            "model.extra_args",
            "is not allowed: letters, digits",
            id="extra-shell",
        ),
        pytest.param({"gpus": "some"}, "gpus", "use auto, none, all or a count 1-64", id="gpus"),
        pytest.param({"ui": {"enabled": "maybe"}}, "ui.enabled", "use true or false", id="bool"),
        pytest.param(
            {"ui": {"admin_email": "root"}}, "ui.admin_email", "is not an email address", id="email"
        ),
        pytest.param(
            {"images": {"vllm": "Bad Image"}},
            "images.vllm",
            "is not a Docker image reference",
            id="image",
        ),
        pytest.param(
            {"hub": {"endpoint": "ftp://x"}}, "hub.endpoint", "is not an http(s) URL", id="endpoint"
        ),
        pytest.param(
            {"paths": {"models": "relative/dir"}},
            "paths.models",
            "use an absolute path of letters, digits and _ . / @ + - without '..'",
            id="path-relative",
        ),
        pytest.param(
            {"paths": {"ui_data": "/opt/../etc"}},
            "paths.ui_data",
            "use an absolute path of letters, digits and _ . / @ + - without '..'",
            id="path-dotdot",
        ),
        pytest.param(
            {"project": "Has Spaces"}, "project", "is not a compose project name", id="project"
        ),
    ],
)
def test_bad_config_is_refused_naming_the_key(
    tmp_path: Path, data: dict, key: str, words: str
) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(data))
    before = sorted(tmp_path.iterdir())
    with pytest.raises(BadInput) as err:
        settings.load(cfg)
    assert err.value.exit_code == 2
    assert err.value.message.startswith(key), err.value.message
    assert words in err.value.message
    assert sorted(tmp_path.iterdir()) == before  # nothing written


@pytest.mark.parametrize(
    "env, words",
    [
        pytest.param(
            {"MODEL_ID": "evil/`reboot`"},
            "model.id (from environment MODEL_ID): 'evil/`reboot`' is not",
            id="model",
        ),
        pytest.param(
            {"API_PORT": "99999"},
            "api.port (from environment API_PORT): '99999' is not allowed",
            id="port",
        ),
        pytest.param(
            {"GPU_MEMORY_UTILIZATION": "lots"},
            "model.gpu_memory_utilization (from environment",
            id="util",
        ),
    ],
)
def test_bad_environment_names_the_udf(tmp_path: Path, env: dict, words: str) -> None:
    with pytest.raises(BadInput) as err:
        settings.load(tmp_path / "none.yaml", env=env)
    assert words in err.value.message


def test_bad_flag_names_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"model.id \(from command line\)"):
        settings.load(tmp_path / "none.yaml", flags={"model.id": "nope"})


@pytest.mark.parametrize(
    "text, words",
    [
        pytest.param("model: [unclosed", "is not valid YAML", id="yaml"),
        pytest.param("- a\n- b\n", "must hold a mapping of settings", id="list"),
    ],
)
def test_unreadable_file(tmp_path: Path, text: str, words: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(BadInput, match=words):
        settings.load(cfg)


@pytest.mark.parametrize(
    "repo",
    [
        "mistralai/Mistral-7B-Instruct-v0.3",
        "meta-llama/Llama-3.1-8B",
        "a_b/c.d-e",
        "Qwen/Qwen2.5-0.5B",
        "x/y",
        "org/gitrepo",
        "org/a.gitx",
    ],
)
def test_real_repo_ids_are_accepted(tmp_path: Path, repo: str) -> None:
    assert settings.load(tmp_path / "n.yaml", env={"MODEL_ID": repo}).model.id == repo


def test_save_is_atomic_and_keeps_backup(tmp_path: Path) -> None:
    cfg = tmp_path / "etc" / "config.yaml"
    first = settings.load(cfg, flags={"model.id": "org/first"})
    settings.save(first, cfg)
    second = settings.load(cfg, flags={"model.id": "org/second"})
    settings.save(second, cfg)
    assert settings.load(cfg).model.id == "org/second"
    assert (
        yaml.safe_load(cfg.with_name("config.yaml.bak").read_text())["model"]["id"] == "org/first"
    )
    assert sorted(p.name for p in cfg.parent.iterdir()) == [
        "config.yaml",
        "config.yaml.bak",
    ]  # no temp left
    assert stat.S_IMODE(os.stat(cfg).st_mode) == 0o644


def test_saved_settings_round_trip(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    s = settings.load(cfg, env={"VLLM_EXTRA_ARGS": "--enforce-eager", "MAX_MODEL_LEN": "8192"})
    settings.save(s, cfg)
    again = settings.load(cfg)
    assert again.as_dict() == s.as_dict()
    assert "token" not in cfg.read_text().lower()


@pytest.mark.parametrize(
    ("bind", "stored", "local"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1", True),
        ("::FFFF:7f00:1", "127.0.0.1", True),
        ("::ffff:127.8.9.10", "127.8.9.10", True),
        ("::ffff:0.0.0.0", "0.0.0.0", False),
        ("::ffff:192.0.2.7", "192.0.2.7", False),
        ("::1", "::1", True),
    ],
)
def test_an_ipv4_mapped_bind_is_the_ipv4_address_it_stands_for(
    tmp_path: Path, bind: str, stored: str, local: bool
) -> None:
    """Issue 14 j: `::ffff:127.0.0.1` is stored as 127.0.0.1 (not `::ffff:7f00:1`, which the
    MOTD called public), and the proxy rule's loopback() reads it the same way."""
    env = {"UI_BIND": bind, "WATCH_METRICS_BIND": bind, "API_BIND": bind}
    s = settings.load(tmp_path / "none.yaml", env=env)  # https.domain auto: a proxy guards
    assert (s.api.bind, s.ui.bind, s.watch.metrics_bind) == (stored, stored, stored)
    assert settings.loopback(s.api.bind) is local and settings.loopback(bind) is local
    off = {**env, "HTTPS_DOMAIN": "off"}
    if local:
        assert settings.load(tmp_path / "none.yaml", env=off).api.bind == stored
    else:
        with pytest.raises(BadInput) as caught:
            settings.load(tmp_path / "none.yaml", env=off)
        assert caught.value.key == "api.bind (from environment API_BIND)"
        assert f"{stored} would put vLLM's own port on the network" in caught.value.message


def test_the_login_message_calls_a_mapped_loopback_bind_local(tmp_path: Path, write_config) -> None:
    """The MOTD's words for `API_BIND=::ffff:127.0.0.1`: this box only, no public address."""
    from agent.markers import BootState
    from agent.steps import StepContext, motd

    mapped = {"bind": "::ffff:127.0.0.1"}
    cfg = write_config({"api": mapped, "ui": dict(mapped), "https": {"domain": "off"}})
    s = settings.load(cfg)
    root = tmp_path / "root"
    root.mkdir()
    facts = motd.facts(StepContext(s, BootState(s.paths.state, "1"), root=root))
    assert facts.api_local_only is True  # "on this box only: ssh -L to reach it"
    assert (facts.api_url, facts.ui_url) == ("http://127.0.0.1:8000/v1", "http://127.0.0.1:3000")
