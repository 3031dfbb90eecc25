from __future__ import annotations

import os
import stat

from agent import log
from agent.secrets import API_KEY, SecretStore


def test_secret_is_generated_once_0600_and_registered(tmp_path) -> None:
    store = SecretStore(tmp_path / "secrets")
    key = store.ensure(API_KEY)
    assert len(key) >= 40 and store.ensure(API_KEY) == key
    assert stat.S_IMODE(os.stat(store.path(API_KEY)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.folder).st_mode) == 0o700
    assert log.redact_text(f"key={key}") == f"key={log.REDACTED}"


def test_hf_token_file_wins_over_environment(tmp_path) -> None:
    store = SecretStore(tmp_path)
    assert store.hf_token({"HF_TOKEN": "hf_from_env_123456"}) == "hf_from_env_123456"
    store.write("hf_token", "hf_from_file_123456")
    assert store.hf_token({"HF_TOKEN": "hf_from_env_123456"}) == "hf_from_file_123456"
    assert store.hf_token({}) == "hf_from_file_123456"
