"""The front door: which of the UI and the API face the network through the proxy, under
which name, and where the proxy keeps its certificates. Decided from the settings and the
name saved at the last `up`, never from the network (so doctor, status and the watchdog
agree with the stack `up` started, at no cost).

`https.domain: auto` is the box's own Linode name, its public IPv4 dashed under
ip.linodeusercontent.com (on the Public Suffix List: each box has its own Let's Encrypt
limits). `up` asks the metadata service once and saves the name here; off Linode there is
none, and auto means off.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path

from agent.files import atomic_write
from agent.settings import Settings, loopback

LINODE_SUFFIX = "ip.linodeusercontent.com"
NAME_FILE = "proxy/name.json"  # under paths.state: the auto name `up` resolved
STORE = "proxy/data"  # under paths.state: Caddy's $XDG_DATA_HOME, the certificate store
CONFIG = "proxy/config"  # under paths.state: Caddy's $XDG_CONFIG_HOME
CADDYFILE = "Caddyfile"  # under paths.stack, beside the compose file
_SAVED = re.compile(r"^[0-9]{1,3}(-[0-9]{1,3}){3}\." + re.escape(LINODE_SUFFIX) + "$")
_WILDCARDS = ("0.0.0.0", "::")


@dataclass(frozen=True)
class Door:
    """What the proxy serves. `name` None: no proxy (https.domain off, or auto off Linode)."""

    name: str | None
    ui: bool  # the UI at https://name[:port]
    api: bool  # the API at https://name:api_port/v1

    @property
    def on(self) -> bool:
        return self.name is not None and (self.ui or self.api)


def linode_name(ipv4: str) -> str:
    """Linode's default reverse-DNS name of a public IPv4 address."""
    return str(ipaddress.IPv4Address(ipv4)).replace(".", "-") + "." + LINODE_SUFFIX


def linode_ipv4(name: str | None) -> str | None:
    """The public IPv4 address a Linode name spells (the metadata service's, when `up` saved
    it); None for any other name."""
    if name is None or not _SAVED.fullmatch(name):
        return None
    try:
        return str(ipaddress.IPv4Address(name.split(".", 1)[0].replace("-", ".")))
    except ValueError:
        return None


def saved_name(settings: Settings) -> str | None:
    """The auto name the last `up` resolved (None: never, or a file that is not one)."""
    try:
        data = json.loads((settings.paths.state / NAME_FILE).read_text())
    except (OSError, ValueError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and _SAVED.fullmatch(name) else None


def save_name(settings: Settings, name: str) -> None:
    if saved_name(settings) != name:
        atomic_write(settings.paths.state / NAME_FILE, json.dumps({"name": name}) + "\n")


def current(settings: Settings, name: str | None = None) -> Door:
    """The door the settings ask for; `name` is auto's resolved name (default: the saved one)."""
    domain = settings.https.domain
    if domain == "off":
        chosen = None
    elif domain == "auto":
        chosen = name or saved_name(settings)
    else:
        chosen = domain
    wanted = wants(settings)
    if chosen is None or not wanted.on:
        return Door(None, False, False)
    return Door(chosen, wanted.ui, wanted.api)


def wants(settings: Settings) -> Door:
    """The door the settings would open once named (`https.domain` off: none), before auto's
    name is known: what the bootstrap checks ports for, and whether `up` asks for a name."""
    ui = settings.ui.enabled and not loopback(settings.ui.bind)
    api = not loopback(settings.api.bind)
    if settings.https.domain == "off" or not (ui or api):
        return Door(None, False, False)
    return Door(settings.https.domain, ui, api)


def listen(bind: str) -> str | None:
    """The address the proxy binds for a door that is open to `bind` (None: every address)."""
    return None if bind in _WILDCARDS else bind


def published(door: Door, bind: str) -> str:
    """Where vLLM or Open WebUI publish their own port: loopback whenever the proxy runs."""
    return "127.0.0.1" if door.on else bind


def ui_url(settings: Settings, door: Door) -> str | None:
    if not door.ui or door.name is None:
        return None
    port = settings.https.port
    return f"https://{door.name}" + ("" if port == 443 else f":{port}")


def api_url(settings: Settings, door: Door) -> str | None:
    """The API's public base (…/v1 is where it answers)."""
    if not door.api or door.name is None:
        return None
    return f"https://{door.name}:{settings.https.api_port}"


def store(settings: Settings) -> Path:
    return settings.paths.state / STORE


def config_dir(settings: Settings) -> Path:
    return settings.paths.state / CONFIG


def caddyfile(settings: Settings) -> Path:
    return settings.paths.stack / CADDYFILE


def health_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.https.health_port}/health"
