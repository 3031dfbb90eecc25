"""What bootstrap takes from the StackScript, checked before anything changes, then kept.

The settings arrive validated (agent.settings: the UDFs are environment names). Here: the
Hugging Face token, the instance id, the offline bundle, and the ports (free, unless this
instance's stack already holds them). Only when all of it is good are config.yaml (atomically,
the previous kept as .bak), the token (0600, `paths.secrets/hf_token`) and the bundle's path
(this instance's state, `bundle`) written: the UDFs are gone after a reboot, and the resume
unit reads these. A run given no bundle takes the recorded one; a bundle that is not there is
refused, never silently replaced by the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from agent import settings as settings_mod
from agent.errors import AgentError, BadInput
from agent.files import atomic_write
from agent.markers import (
    INSTANCE_ID,
    BootState,
    check_instance_id,
    local_instance_id,
    record_instance_id,
    recorded_instance_id,
)
from agent.secrets import HF_TOKEN, SecretStore
from agent.settings import Settings
from agent.steps import units
from agent.steps.base import StepContext

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
    bundle_source: str = ""


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


BUNDLE_NOTE = "bundle"  # in this instance's state: the bundle the first run was given


def check_bundle(value: str | None, where: str, recorded: bool = False) -> Path | None:
    if not value:
        return None
    if not BUNDLE.fullmatch(value) or ".." in value.split("/"):
        raise BadInput(where, f"{value[:80]!r} is not an absolute path of a bundle folder")
    path = Path(value)
    if not path.exists():
        fix = (
            f"put the bundle back at {value}, or pass `--bundle DIR` where it is now"
            if recorded
            else "pass the bundle's folder (`python packaging/build.py bundle DIR` makes one), "
            "or leave it unset to pull from the network"
        )
        raise BadInput(where, f"{value} does not exist: no bundle there", fix=fix)
    if not path.is_dir():
        raise BadInput(where, f"{value} is not a folder", fix="pass the bundle's folder")
    return path


def recorded_bundle(state_dir: Path, instance_id: str) -> tuple[str | None, str]:
    """The bundle an earlier run of this instance was given, and where that is said."""
    if not INSTANCE_ID.fullmatch(instance_id):
        return None, ""
    note = BootState(state_dir, instance_id).note(BUNDLE_NOTE)
    try:
        value = note.read_text().strip()
    except OSError:
        return None, ""
    return value or None, f"the bundle an earlier run was given ({note})"


def check_ports(settings: Settings, state: BootState) -> None:
    """Each published port free, unless this instance's stack already serves there (a run
    killed while it started the stack leaves its containers holding them)."""
    from agent import door, engine, stack
    from agent.stack import port_free

    if state.marker("stack") is not None:
        return
    try:
        if stack.project_containers(engine.connect(settings.docker.host), settings.project):
            return
    except AgentError:
        pass  # no engine yet: nothing of ours can hold a port
    # the door the settings open once named (auto's name is asked later, by the stack step)
    front = door.wants(settings)
    api_bind, ui_bind = door.published(front, settings.api.bind), settings.ui.bind
    wanted = [("API_PORT", api_bind, settings.api.port)]
    if settings.ui.enabled:
        wanted.append(("UI_PORT", door.published(front, ui_bind), settings.ui.port))
    if front.on:
        h = settings.https
        wanted += [
            ("HTTP_PORT", "0.0.0.0", h.http_port),
            ("PROXY_HEALTH_PORT", "127.0.0.1", h.health_port),
        ]
        if front.ui:
            wanted.append(("HTTPS_PORT", door.listen(ui_bind) or "0.0.0.0", h.port))
        if front.api:
            wanted.append(
                ("HTTPS_API_PORT", door.listen(settings.api.bind) or "0.0.0.0", h.api_port)
            )
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
    if inputs.bundle is not None:
        _record_bundle(inputs.settings.paths.state, inputs.instance_id, inputs.bundle)
    if inputs.token is not None:
        store = SecretStore(inputs.settings.paths.secrets)
        if store.read(HF_TOKEN) != inputs.token:
            store.write(HF_TOKEN, inputs.token)


def _record_bundle(state_dir: Path, instance_id: str, bundle: Path) -> None:
    note = BootState(state_dir, instance_id).note(BUNDLE_NOTE)
    try:
        current = note.read_text().strip()
    except OSError:
        current = None
    if current != str(bundle):
        atomic_write(note, f"{bundle}\n", mode=0o600)


@dataclass(frozen=True)
class Given:
    """The bootstrap's inputs that are not settings, as they arrived, each with the name it
    came by (the form's variables, or --bundle): an error names that."""

    token: str | None = None
    token_source: str = "HF_TOKEN"
    instance_id: str | None = None  # None: the one the last run recorded, else the machine id
    instance_source: str = "LINODE_ID"
    bundle: str | None = None  # None: the one recorded for this instance
    bundle_source: str = "SANDBOX_AGENT_BUNDLE"


def gather(settings: Settings, given: Given, *, config_path: Path, root: Path) -> Inputs:
    """Every input checked; raises BadInput naming the first bad one. Writes nothing.

    With no instance id given (a later boot's resume unit, a person asking for --status):
    the one the last run recorded, else this machine's id. With no bundle given: the one
    recorded for this instance."""
    instance, instance_source = given.instance_id, given.instance_source
    if instance is None:
        instance, instance_source = (
            recorded_instance_id(settings.paths.state),
            "the recorded instance id",
        )
    if instance is None:
        instance, instance_source = local_instance_id(root), "the machine id"
    check_instance_id(instance, instance_source)
    bundle, bundle_source = given.bundle, given.bundle_source
    recorded = not bundle
    if recorded:
        bundle, bundle_source = recorded_bundle(settings.paths.state, instance)
    found = check_bundle(bundle, bundle_source, recorded=recorded)
    token = check_token(given.token, given.token_source)
    return Inputs(settings, config_path, instance, token, given.token_source, found, bundle_source)


def context(got: Inputs, *, root: Path, tty: bool, metadata: str) -> StepContext:
    """The steps' context for these inputs (the settings file named only when it is not the
    default one: the units the bootstrap installs name it then)."""
    return StepContext(
        got.settings,
        BootState(got.settings.paths.state, got.instance_id),
        root=root,
        token=got.token or None,
        bundle=got.bundle,
        tty=tty,
        config_path=None if got.config_path == settings_mod.DEFAULT_CONFIG else got.config_path,
        metadata=metadata,
    )


def check_units(got: Inputs) -> None:
    """With the box's own systemd: the units the bootstrap installs must see the settings
    file and the bundle (exit 2 otherwise, before anything changes)."""
    units.check_visible(got.config_path, got.bundle, got.bundle_source)
