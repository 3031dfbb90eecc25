"""What every verb takes: --config and --json, and what it reads of its environment
(agent.cli.environment): the settings, the host root, the metadata service, the token."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from agent.cli.environment import current
from agent.errors import BadInput

if TYPE_CHECKING:
    from agent.deploy import UpOptions
    from agent.settings import Settings
    from agent.steps.inputs import Given

F = TypeVar("F", bound=Callable[..., Any])


class WholeNumber(click.ParamType[int]):
    """A whole number in [low, high] written in ASCII digits: click's int takes `٢` too."""

    name = "integer"

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from agent.validate import shown, whole_number

        found = value if isinstance(value, int) else whole_number(value)
        if found is None or not self.low <= found <= self.high:
            self.fail(f"{shown(value)} is not a whole number from {self.low} to {self.high}")
        return found


def config_option(fn: F) -> F:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Settings file (default: $SANDBOX_AGENT_CONFIG or /etc/sandbox-agent/config.yaml).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(fn)


def load_settings(config_path: Path | None, flags: dict[str, Any] | None = None) -> Settings:
    """The one place that hands the process environment to the settings."""
    from agent import settings

    if config_path is not None and not settings.config_exists(config_path):
        raise BadInput("--config", f"{config_path} does not exist", fix="pass an existing file")
    return settings.load(config_path, env=current().environ, flags=flags)


def refuse_settings_environment(verb: str) -> None:
    """A change saves the settings file and brings the stack to it, but the environment
    outranks that file: a settings variable this shell sets (one the change writes, or any
    other left exported: API_PORT, HF_ENDPOINT, UI_DATA_DIR) would be applied unasked and
    saved into the file, or undo the change at the next command. Refused, exit 2, every such
    variable named."""
    from agent.settings import ENV_KEYS

    env = current()
    found = [name for name in ENV_KEYS if env.get(name)]
    if not found:
        return
    one = len(found) == 1
    raise BadInput(
        ", ".join(found),
        f"{'is' if one else 'are'} set in this environment and {'outranks' if one else 'outrank'}"
        f" the settings file; a change applies and saves only what it changes, so `{verb}` "
        "refuses while a settings variable is set; nothing was changed",
        fix=f"unset {' '.join(found)}, then run `sandbox-agent {verb}` again (to change "
        "another setting: edit the settings file, then run `sandbox-agent up`)",
    )


def config_file(config_path: Path | None) -> Path:
    """The settings file a change (or the bootstrap) writes: --config, else
    $SANDBOX_AGENT_CONFIG, else the default (it need not exist yet)."""
    from agent import settings

    found = settings.config_path(config_path, current().environ)
    return Path(os.path.abspath(found))  # a change's journal names it; a repair runs anywhere


def reloader(config_path: Path | None) -> Callable[[dict[str, Any] | None], Settings]:
    """Settings loaded again (a change saved the file), with `flags` on top."""
    return lambda flags: load_settings(config_path, flags)


def host_root() -> Path:
    """`/` on a box. SANDBOX_AGENT_ROOT points the host checks at a laid-out tree (tests)."""
    return Path(current().get("SANDBOX_AGENT_ROOT") or "/")


def metadata_url() -> str:
    """The Linode metadata service. SANDBOX_AGENT_METADATA_URL points it at a local one (tests:
    no test reaches the link-local address)."""
    from agent import linode

    return current().get("SANDBOX_AGENT_METADATA_URL") or linode.METADATA


def hf_token(settings: Settings) -> str | None:
    """The Hugging Face token: the secret file, else HF_TOKEN from this process's environment."""
    from agent.secrets import SecretStore

    return SecretStore(settings.paths.secrets).hf_token(current().environ)


def up_options(settings: Settings, as_json: bool, template: Path | None = None) -> UpOptions:
    """How a verb's `up` reaches this box, from its environment: the root, the token, the
    metadata service, and progress to a person (to stderr beside --json)."""
    from agent.deploy import UpOptions

    return UpOptions(
        root=host_root(),
        template=template,
        progress=progress_printer(as_json),
        token=hf_token(settings),
        metadata=metadata_url(),
    )


def progress_printer(as_json: bool) -> Callable[[str], None]:
    """Progress lines go to stdout for a person, to stderr when stdout carries the JSON."""
    from agent.log import safe_text

    env = current()
    return lambda line: env.echo(safe_text(line), err=as_json)


def bootstrap_given(bundle: str | None) -> Given:
    """The StackScript's non-setting inputs from the environment (--bundle over the
    variable), each with the name it came by."""
    from agent.steps.inputs import Given

    env = current()
    token_name = "HF_TOKEN_PASSWORD" if env.get("HF_TOKEN_PASSWORD") else "HF_TOKEN"
    given = Given(
        token=env.get(token_name),
        token_source=token_name,
        instance_id=env.get("LINODE_ID"),
        bundle=env.get("SANDBOX_AGENT_BUNDLE"),
    )
    return replace(given, bundle=bundle, bundle_source="--bundle") if bundle else given


def systemd_env() -> dict[str, str]:
    """What systemd hands a service through the environment, for `watch`: the notify socket,
    the watchdog interval and the PID it is meant for, and the journal stream of stderr."""
    names = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
    environ = current().environ
    return {name: environ[name] for name in names if name in environ}
