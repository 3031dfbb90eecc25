"""`switch-model` and `update`: change the running stack, gated, rolled back on failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.cli.environment import confirm, signals_raise
from agent.cli.options import (
    WholeNumber,
    config_file,
    config_option,
    json_option,
    load_settings,
    refuse_settings_environment,
    reloader,
    up_options,
)
from agent.cli.render import guarded, render

if TYPE_CHECKING:
    from agent.switch import ChangeResult

yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


@click.command(name="switch-model")
@click.argument("name", metavar="MODEL")
@click.option("--served-name", default=None, help="The name clients ask for (default: MODEL).")
@click.option(
    "--max-model-len",
    type=WholeNumber(256, 10_000_000),
    default=None,
    help="Context length (default: what fits).",
)
@yes_option
@config_option
@json_option
@guarded
def switch_model(
    name: str,
    served_name: str | None,
    max_model_len: int | None,
    yes: bool,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Serve MODEL (org/name[@revision]) instead: fetched while the old one serves, swapped,
    health-gated, rolled back when it does not come up. Chat history is untouched."""
    from agent import switch
    from agent.refs import ModelRef

    refuse_settings_environment("switch-model")
    settings = load_settings(config_path)
    ref = ModelRef.parse(name)
    if served_name is not None:
        load_settings(config_path, {"model.served_name": served_name})  # validated first
    confirm(yes, f"Switch {settings.model.ref} to {ref}?")
    with signals_raise():
        result = switch.switch_model(
            settings,
            config_file(config_path),
            ref,
            reloader(config_path),
            up_options(settings, as_json),
            served_name=served_name,
            max_model_len=max_model_len,
        )
    render(result, as_json, change_text)


@click.command()
@click.option("--vllm-image", default=None, help="vLLM's new image.")
@click.option("--webui-image", default=None, help="Open WebUI's new image.")
@click.option("--proxy-image", default=None, help="The proxy's (Caddy) new image.")
@yes_option
@config_option
@json_option
@guarded
def update(
    vllm_image: str | None,
    webui_image: str | None,
    proxy_image: str | None,
    yes: bool,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Move the stack to new images, one service at a time, each gated; when one does not
    come up, the whole update is rolled back. Without a flag, every service moves to the
    image this agent pins; with some, only those services change."""
    from agent import switch

    refuse_settings_environment("update")
    settings = load_settings(config_path)
    flags = {"images.vllm": vllm_image, "images.webui": webui_image, "images.proxy": proxy_image}
    load_settings(config_path, {k: v for k, v in flags.items() if v})  # validated first
    confirm(yes, "Update the stack's images?")
    with signals_raise():
        result = switch.update(
            settings,
            config_file(config_path),
            reloader(config_path),
            up_options(settings, as_json),
            vllm_image=vllm_image,
            webui_image=webui_image,
            proxy_image=proxy_image,
        )
    render(result, as_json, change_text)


def change_text(result: ChangeResult) -> Iterator[str]:
    if not result.changed:
        yield f"nothing to change: {', '.join(f'{k} {v}' for k, v in result.after.items())}"
        return
    for key, old in result.before.items():
        if result.after.get(key) != old:
            yield f"{key}: {old} -> {result.after[key]}"
    done = ", ".join(f"{name} {action}" for name, action in result.actions.items())
    yield f"done in {result.seconds:.0f}s ({done})"


COMMANDS = (switch_model, update)
