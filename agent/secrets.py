"""Secrets as 0600 files under `paths.secrets`: never in config.yaml, never logged.

Every value read or generated here is registered with the log redactor first (of the admin
login, the password: the email is no secret). A secret is never read through a symbolic link;
the folder is created 0700, and an existing folder is used as it is, unless others could
write into it (then nothing is written and the fix says why).
"""

from __future__ import annotations

import errno
import os
import secrets as _random
import stat
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
KNOWN = (API_KEY, HF_TOKEN, WEBUI_SECRET_KEY, WEBUI_ADMIN)
MAX_SECRET = 64 * 1024


@dataclass(frozen=True)
class AdminLogin:
    """The Open WebUI admin the agent created: what `webui_admin` holds."""

    email: str
    password: str


def _register(name: str, value: str) -> None:
    lines = value.splitlines()
    for line in lines[1:] if name == WEBUI_ADMIN else lines:
        log.register_secret(line.strip())


class SecretStore:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / name

    def read(self, name: str) -> str | None:
        path = self.path(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except PermissionError:
            raise AgentError(
                f"cannot read the secret {path}", fix="run sandbox-agent as root"
            ) from None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise AgentError(
                f"{path} is a symbolic link: a secret is never read through one",
                fix=f"replace it with the secret itself (a 0600 file), or delete {path} to have "
                "a new one generated",
            ) from None
        with os.fdopen(fd, "rb") as fh:
            value = fh.read(MAX_SECRET).decode(errors="replace").strip()
        if value:
            _register(name, value)
        return value or None

    def read_all(self) -> None:
        """Read every secret the agent keeps, so the redactor knows them all (`logs`)."""
        for name in KNOWN:
            try:
                self.read(name)
            except AgentError:
                continue

    def problems(self) -> list[str]:
        """What is wrong with the folder and files, for doctor: links, modes, owners."""
        found = []
        try:
            info = self.folder.lstat()
        except FileNotFoundError:
            return []
        if stat.S_ISLNK(info.st_mode):
            found.append(f"{self.folder} is a symbolic link")
        elif info.st_mode & 0o022:
            found.append(f"{self.folder} is writable by others (mode {info.st_mode & 0o7777:o})")
        for name in KNOWN:
            path = self.path(name)
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(info.st_mode):
                found.append(f"{path} is a symbolic link")
            elif info.st_mode & 0o077:
                found.append(f"{path} is readable by others (mode {info.st_mode & 0o777:o})")
            elif info.st_uid != os.geteuid():
                found.append(f"{path} belongs to uid {info.st_uid}, not {os.geteuid()}")
        return found

    def repair(self) -> list[Path]:
        """chmod 0600 the secrets others can read (never through a link); what was repaired."""
        repaired = []
        for name in KNOWN:
            path = self.path(name)
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077:
                os.chmod(path, 0o600, follow_symlinks=False)
                log.get("secrets").warning(
                    "secret.mode_repaired", path=str(path), was=f"{info.st_mode & 0o777:o}"
                )
                repaired.append(path)
        return repaired

    def prepare_folder(self) -> Path:
        """The folder, created 0700 when missing; refused when others could write into it."""
        try:
            info = self.folder.lstat()
        except FileNotFoundError:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            self.folder.mkdir(mode=0o700)
            os.chmod(self.folder, 0o700)  # mkdir's mode is cut by the umask
            return self.folder
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise AgentError(
                f"{self.folder} (paths.secrets) is not a plain folder",
                fix="point paths.secrets at a folder of its own (the default is "
                "/etc/sandbox-agent/secrets)",
            )
        if info.st_mode & 0o022:
            raise AgentError(
                f"{self.folder} (paths.secrets) is writable by others (mode "
                f"{info.st_mode & 0o7777:o}): secrets are not written there",
                fix=f"`chmod 700 {self.folder}`, or point paths.secrets at a folder of its own",
            )
        return self.folder

    def write(self, name: str, value: str) -> Path:
        _register(name, value)
        self.prepare_folder()
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
        log.register_secret(password)
        return AdminLogin(email, password)
