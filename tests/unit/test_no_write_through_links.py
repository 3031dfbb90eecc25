"""Issue 14 a: every file we write goes temp file + rename, never through a link.

A planted `<config>.bak`, a link as the config itself and links at guessable temp names are
each left pointing at a victim file; the real save paths (settings.save, the bootstrap's
`inputs.save`, the model cache's pull lock) run; the victim is byte-identical with its mode,
and the .bak is a regular file holding the old settings."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from agent import files, settings
from agent.errors import AgentError
from agent.models.cache import pull_lock
from agent.steps import inputs

VICTIM_TEXT = "root:x:0:0:victim, never to be written\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere" / "victim"
    path.parent.mkdir()
    path.write_text(VICTIM_TEXT)
    os.chmod(path, 0o600)
    return path


def untouched(victim: Path) -> bool:
    return victim.read_text() == VICTIM_TEXT and stat.S_IMODE(victim.stat().st_mode) == 0o600


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_planted_bak_link_is_replaced_not_followed(tmp_path: Path, victim: Path) -> None:
    cfg = tmp_path / "etc" / "config.yaml"
    settings.save(settings.load(cfg, flags={"model.id": "org/first"}), cfg)
    old = cfg.read_text()
    bak = cfg.with_name("config.yaml.bak")
    bak.symlink_to(victim)
    settings.save(settings.load(cfg, flags={"model.id": "org/second"}), cfg)
    assert untouched(victim)
    assert not bak.is_symlink() and stat.S_ISREG(bak.lstat().st_mode)
    assert bak.read_text() == old and mode(bak) == 0o644
    assert settings.load(cfg).model.id == "org/second"
    assert sorted(p.name for p in cfg.parent.iterdir()) == ["config.yaml", "config.yaml.bak"]


def test_a_link_as_the_config_itself_is_replaced_and_its_target_never_copied(
    tmp_path: Path, victim: Path
) -> None:
    cfg = tmp_path / "etc" / "config.yaml"
    cfg.parent.mkdir()
    cfg.symlink_to(victim)
    files.atomic_write(cfg, "project: mine\n", mode=0o644, keep_backup=True)
    assert untouched(victim)
    assert not cfg.is_symlink() and cfg.read_text() == "project: mine\n" and mode(cfg) == 0o644
    # the link's target is not read into a world-readable backup
    assert not cfg.with_name("config.yaml.bak").exists()


def test_links_at_temp_like_names_are_never_opened(tmp_path: Path, victim: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    cfg = folder / "config.yaml"
    cfg.write_text("project: old\n")
    planted = [".config.yaml.tmp", "config.yaml.tmp", ".config.yaml.bak.tmp", "config.yaml~"]
    for name in planted:
        (folder / name).symlink_to(victim)
    files.atomic_write(cfg, "project: new\n", keep_backup=True)
    assert untouched(victim)
    assert cfg.read_text() == "project: new\n"
    assert cfg.with_name("config.yaml.bak").read_text() == "project: old\n"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*planted, "config.yaml", "config.yaml.bak"]
    )  # no temp file left behind, the planted links left as they were
    assert all((folder / name).is_symlink() for name in planted)


def test_the_backup_is_never_wider_than_the_old_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("project: private\n")
    os.chmod(cfg, 0o600)
    files.atomic_write(cfg, "project: new\n", mode=0o644, keep_backup=True)
    assert mode(cfg.with_name("config.yaml.bak")) == 0o600 and mode(cfg) == 0o644


def test_a_fifo_as_the_config_is_not_read_and_does_not_block(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    os.mkfifo(cfg)
    files.atomic_write(cfg, "project: new\n", keep_backup=True)
    assert cfg.read_text() == "project: new\n" and not cfg.with_name("config.yaml.bak").exists()


def test_the_bootstrap_saves_its_inputs_without_following_a_planted_bak(
    tmp_path: Path, victim: Path, write_config
) -> None:
    cfg = write_config({"model": {"id": "org/before"}})
    old = cfg.read_text()
    cfg.with_name("config.yaml.bak").symlink_to(victim)
    token_link = tmp_path / "secrets" / "hf_token"
    token_link.parent.mkdir(mode=0o700)
    token_link.symlink_to(victim)
    s = settings.load(cfg, env={"MODEL_ID": "org/from-the-form"})
    given = inputs.Given(token="hf_" + "t" * 30, instance_id="12345")
    got = inputs.gather(s, given, config_path=cfg, root=tmp_path)
    with pytest.raises(AgentError, match="symbolic link"):
        inputs.save(got)  # the token file is a planted link: refused, never written through
    assert untouched(victim)
    bak = cfg.with_name("config.yaml.bak")
    assert stat.S_ISREG(bak.lstat().st_mode) and bak.read_text() == old and mode(bak) == 0o644
    assert yaml.safe_load(cfg.read_text())["model"]["id"] == "org/from-the-form"
    token_link.unlink()
    inputs.save(got)
    assert untouched(victim) and mode(token_link) == 0o600


def test_the_model_pull_lock_is_never_opened_through_a_link(
    tmp_path: Path, victim: Path, write_config
) -> None:
    s = settings.load(write_config())
    lock = s.paths.models / ".sandbox-agent" / "pull.lock"
    lock.parent.mkdir(parents=True)
    lock.symlink_to(tmp_path / "elsewhere" / "created-by-root")  # dangling: O_CREAT would make it
    with pytest.raises(AgentError, match="a link is never followed") as caught, pull_lock(s):
        pass
    assert caught.value.fix == f"remove {lock}; the next pull makes a new one"
    assert not (tmp_path / "elsewhere" / "created-by-root").exists()
    lock.unlink()
    lock.symlink_to(victim)
    with pytest.raises(AgentError), pull_lock(s):
        pass
    assert untouched(victim)
