"""Issue 14 f: a data folder is mounted read-write into a root container, so it may only lie
inside the folders data may live in (an allow-list: /opt, /srv, /mnt, /data and the system's
temporary folders; the agent's own /etc/sandbox-agent and /var/lib/sandbox-agent for state
and secrets), also through a link, and every folder of it that exists belongs to root and is
closed to others, as the secrets folder must be."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from agent import settings
from agent.errors import BadInput

NOT_DATA = "is not inside a folder data may live in (/opt, /srv, /mnt, /data, /tmp, /var/tmp)"


def said(error: BadInput) -> str:
    """The message after the key it names."""
    assert error.message.startswith(f"{error.key}: ")
    return error.message[len(error.key) + 2 :]


def paths(tmp_path: Path) -> dict[str, str]:
    return {n: str(tmp_path / n) for n in ("models", "ui_data", "stack", "state", "secrets")}


def load(tmp_path: Path, env: dict[str, str] | None = None, **over: str) -> settings.Settings:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"paths": {**paths(tmp_path), **over}}))
    return settings.load(cfg, env=env or {})


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("UI_DATA_DIR", "/root/.ssh", "paths.ui_data"),
        ("UI_DATA_DIR", "/home/alice/chats", "paths.ui_data"),
        ("UI_DATA_DIR", "/var/spool/cron/crontabs", "paths.ui_data"),
        ("UI_DATA_DIR", "/var/lib/systemd", "paths.ui_data"),
        ("MODELS_DIR", "/var/lib/dpkg", "paths.models"),
        ("MODELS_DIR", "/var/lib/containerd", "paths.models"),
        ("MODELS_DIR", "/var/log/journal", "paths.models"),
        ("MODELS_DIR", "/models", "paths.models"),
        ("MODELS_DIR", "/var/lib/sandbox-agent/models", "paths.models"),  # state's, not data's
    ],
)
def test_people_s_and_the_system_s_folders_are_refused(
    tmp_path: Path, name: str, value: str, key: str
) -> None:
    with pytest.raises(BadInput) as caught:
        load(tmp_path, {name: value})
    assert caught.value.key == f"{key} (from environment {name})"
    assert said(caught.value) == f"{value} {NOT_DATA}"
    assert caught.value.exit_code == 2


def test_the_agent_s_own_installation_is_no_data_folder(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as caught:
        load(tmp_path, {"MODELS_DIR": "/opt/sandbox-agent/venv"})
    assert said(caught.value) == (
        "/opt/sandbox-agent/venv is inside /opt/sandbox-agent, the agent's own installation"
    )


def test_secrets_may_live_in_the_agent_s_folder_under_etc_but_nowhere_else_there(
    tmp_path: Path,
) -> None:
    with pytest.raises(BadInput) as caught:
        load(tmp_path, secrets="/etc/ssh/keys")
    assert caught.value.key.startswith("paths.secrets (from ")
    assert said(caught.value) == (
        "/etc/ssh/keys is not inside a folder data may live in (/opt, /srv, /mnt, /data, /tmp, "
        "/var/tmp, /var/lib/sandbox-agent, /etc/sandbox-agent)"
    )
    s = settings.load(tmp_path / "none.yaml")  # the defaults are where they belong
    assert (str(s.paths.secrets), str(s.paths.state)) == (
        "/etc/sandbox-agent/secrets",
        "/var/lib/sandbox-agent",
    )


def test_a_link_into_a_person_s_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ui_data").symlink_to("/root/.ssh")
    with pytest.raises(BadInput) as caught:
        load(tmp_path)
    assert said(caught.value) == f"{tmp_path}/ui_data leads to /root/.ssh {NOT_DATA}"


def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ui_data").mkdir()
    os.chown(tmp_path / "ui_data", 1000, 1000)
    with pytest.raises(BadInput) as caught:
        load(tmp_path)
    assert caught.value.key.startswith("paths.ui_data")
    assert said(caught.value) == f"{tmp_path}/ui_data belongs to another user (uid 1000)"


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_a_folder_others_may_write_into_is_refused_also_above_the_data_folder(
    tmp_path: Path, mode: int
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(BadInput) as caught:
        load(tmp_path, models=str(shared / "models"))
    assert caught.value.key.startswith("paths.models")
    assert said(caught.value) == f"{shared} is writable by others (mode {mode:o})"


def test_the_temporary_folder_serves_in_a_folder_of_root_s_own(tmp_path: Path) -> None:
    """/tmp itself is open to all (sticky): allowed as the base; pytest's folder in it is
    root's, 0700, so the tests' data folders pass."""
    assert os.stat("/tmp").st_mode & 0o1777 == 0o1777
    s = load(tmp_path)
    assert s.paths.ui_data == tmp_path / "ui_data"
