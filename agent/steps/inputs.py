"""What bootstrap takes from the StackScript, checked before anything changes, then kept.

The settings arrive validated (agent.settings: the UDFs are environment names). Here: the
Hugging Face token, the instance id, the offline bundle, and the ports (free, unless this
instance's stack already holds them). Only when all of it is good are config.yaml (atomically,
the previous kept as .bak) and the token (0600, `paths.secrets/hf_token`) written: the UDFs are
gone after a reboot, and the resume unit reads these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from agent import settings as settings_mod
from agent.errors import AgentError, BadInput
from agent.secrets import HF_TOKEN, SecretStore
from agent.settings import Settings
from agent.state import BootState, check_instance_id, record_instance_id

TOKEN = re.compile(r"^[A-Za-z0-9_.=-]{8,512}$")  # hf_... and older api_... tokens
BUNDLE = re.compile(r"^/[A-Za-z0-9_./@+-]{0,255}$")


@dataclass(frozen=True)
class Inputs:
    settings: Settings
    config_path: Path
    instance_id: str
    token: str | None
    token_source: str
    bundle: Path | None


def check_token(value: str | None, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not TOKEN.fullmatch(value):
        # never the value itself: it is a secret, and the error reaches the console log
        raise BadInput(
            where,
            f"is not a Hugging Face token ({len(value)} characters; a token is 8 to 512 "
            "letters, digits and _ . = - such as hf_...)",
            fix="paste the token from https://huggingface.co/settings/tokens, or leave it empty",
        )
    return value


def check_bundle(value: str | None, where: str) -> Path | None:
    if not value:
        return None
    if not BUNDLE.fullmatch(value) or ".." in value.split("/"):
        raise BadInput(where, f"{value[:80]!r} is not an absolute path of a bundle folder")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise BadInput(where, f"{value} is not a folder", fix="pass the bundle's folder")
    return path if path.is_dir() else None


def check_ports(settings: Settings, state: BootState) -> None:
    """Each published port free, unless this instance's stack already serves there (a run
    killed while it started the stack leaves its containers holding them)."""
    from agent import engine, stack
    from agent.stack import port_free

    if state.marker("stack") is not None:
        return
    try:
        if stack.project_containers(engine.connect(settings.docker.host), settings.project):
            return
    except AgentError:
        pass  # no engine yet: nothing of ours can hold a port
    wanted = [("API_PORT", settings.api.bind, settings.api.port)]
    if settings.ui.enabled:
        wanted.append(("UI_PORT", settings.ui.bind, settings.ui.port))
    for name, bind, port in wanted:
        if not port_free(bind, port):
            raise BadInput(
                f"{name} ({port})",
                f"port {port} on {bind} is in use by another program (or {bind} is not an "
                "address of this box)",
                fix=f"free the port or choose another {name}",
            )


def save(inputs: Inputs) -> None:
    """config.yaml and the token, each written only when it differs from what is there."""
    path = inputs.config_path
    wanted = inputs.settings.as_dict()
    try:
        current = yaml.safe_load(path.read_text()) if path.exists() else None
    except (OSError, yaml.YAMLError):
        current = None
    if current != wanted:
        settings_mod.save(inputs.settings, path)
    record_instance_id(inputs.settings.paths.state, inputs.instance_id)
    if inputs.token is not None:
        store = SecretStore(inputs.settings.paths.secrets)
        if store.read(HF_TOKEN) != inputs.token:
            store.write(HF_TOKEN, inputs.token)


def gather(
    settings: Settings,
    *,
    config_path: Path,
    instance_id: str,
    instance_source: str,
    token: str | None,
    token_source: str,
    bundle: str | None,
    bundle_source: str,
) -> Inputs:
    """Every input checked; raises BadInput naming the first bad one. Writes nothing."""
    check_instance_id(instance_id, instance_source)
    return Inputs(
        settings,
        config_path,
        instance_id,
        check_token(token, token_source),
        token_source,
        check_bundle(bundle, bundle_source),
    )
