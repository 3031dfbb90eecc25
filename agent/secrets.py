"""Secrets as 0600 files under `paths.secrets`: never in config.yaml, never logged.

Every value read or generated here is registered with the log redactor first.
"""

from __future__ import annotations

import os
import secrets as _random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent import log
from agent.errors import AgentError
from agent.files import atomic_write

API_KEY = "api_key"
HF_TOKEN = "hf_token"
WEBUI_SECRET_KEY = "webui_secret_key"
WEBUI_ADMIN = "webui_admin"  # "email\npassword\n", the UI's first admin


@dataclass(frozen=True)
class AdminLogin:
    """The Open WebUI admin the agent created: what `webui_admin` holds."""

    email: str
    password: str


class SecretStore:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / name

    def read(self, name: str) -> str | None:
        try:
            value = self.path(name).read_text().strip()
        except FileNotFoundError:
            return None
        except PermissionError:
            raise AgentError(
                f"cannot read the secret {self.path(name)}", fix="run sandbox-agent as root"
            ) from None
        if value:
            for line in value.splitlines():
                log.register_secret(line)
        return value or None

    def write(self, name: str, value: str) -> Path:
        log.register_secret(value)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        atomic_write(self.path(name), value.rstrip("\n") + "\n", mode=0o600)
        return self.path(name)

    def ensure(self, name: str, *, nbytes: int = 32) -> str:
        """The secret, generated once (URL-safe random) when it does not exist yet."""
        value = self.read(name)
        if value is None:
            value = _random.token_urlsafe(nbytes)
            self.write(name, value)
        return value

    def hf_token(self, env: Mapping[str, str] | None = None) -> str | None:
        """The Hugging Face token: the secret file first, then HF_TOKEN from the CLI's env."""
        token = self.read(HF_TOKEN)
        if token is None and env and env.get("HF_TOKEN"):
            token = env["HF_TOKEN"].strip()
            log.register_secret(token)
        return token or None

    def admin_login(self) -> AdminLogin | None:
        """The stored admin sign-in, or None when there is none (or it is incomplete)."""
        lines = (self.read(WEBUI_ADMIN) or "").splitlines()
        if len(lines) < 2 or not lines[0] or not lines[1]:
            return None
        return AdminLogin(lines[0], lines[1])

    def ensure_admin_login(self, email: str) -> AdminLogin:
        """The admin sign-in for `email`: the password is generated once and kept, also when
        the email changes."""
        lines = (self.read(WEBUI_ADMIN) or "").splitlines()
        password = lines[1] if len(lines) > 1 and lines[1] else _random.token_urlsafe(18)
        if lines[:1] != [email] or len(lines) < 2:
            self.write(WEBUI_ADMIN, f"{email}\n{password}\n")
        return AdminLogin(email, password)
