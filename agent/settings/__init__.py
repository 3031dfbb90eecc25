"""The settings: one row per setting (rows), typed values (typed), sources merged (load)."""

from agent.settings.load import (
    DEFAULT_CONFIG,
    DEFAULTS,
    ENV_KEYS,
    SCHEMA,
    config_exists,
    config_path,
    load,
    loopback,
    save,
)
from agent.settings.rows import LETS_ENCRYPT, PROXY_IMAGE, ROWS, VLLM_IMAGE, WEBUI_IMAGE, Row
from agent.settings.typed import (
    Endpoint,
    HttpsSettings,
    Images,
    ModelSettings,
    Paths,
    Settings,
    UiSettings,
    WatchSettings,
)

__all__ = [
    "DEFAULTS",
    "DEFAULT_CONFIG",
    "ENV_KEYS",
    "LETS_ENCRYPT",
    "PROXY_IMAGE",
    "ROWS",
    "SCHEMA",
    "VLLM_IMAGE",
    "WEBUI_IMAGE",
    "Endpoint",
    "HttpsSettings",
    "Images",
    "ModelSettings",
    "Paths",
    "Row",
    "Settings",
    "UiSettings",
    "WatchSettings",
    "config_exists",
    "config_path",
    "load",
    "loopback",
    "save",
]
