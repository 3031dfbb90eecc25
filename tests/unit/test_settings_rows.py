"""One row per setting: everything else is derived; the front door's settings and the rules
between settings (vLLM's raw port never public, no shared ports)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from agent import settings
from agent.errors import BadInput
from agent.settings import ROWS

SETTINGS = Path(settings.__file__).parent


def _leaves(cls: type, prefix: str = "") -> set[str]:
    import typing

    out: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.compare:
            continue
        kind = hints[f.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            out |= _leaves(kind, f"{prefix}{f.name}.")
        else:
            out.add(prefix + f.name)
    return out


def test_each_setting_is_one_row_and_every_field_has_one() -> None:
    keys = [row.key for row in ROWS]
    assert len(keys) == len(set(keys))
    assert set(keys) == _leaves(settings.Settings)
    assert set(settings.SCHEMA) == set(keys)
    envs = [row.env for row in ROWS if row.env]
    assert len(envs) == len(set(envs)) and set(settings.ENV_KEYS) == set(envs)


def test_each_key_is_written_once_in_the_settings_rows() -> None:
    text = (SETTINGS / "rows.py").read_text() + (SETTINGS / "typed.py").read_text()
    for row in ROWS:
        assert len(re.findall(re.escape(f'"{row.key}"'), text)) == 1, row.key


def test_defaults_round_trip_through_the_file(tmp_path: Path) -> None:
    s = settings.load(tmp_path / "absent.yaml")
    cfg = tmp_path / "c.yaml"
    settings.save(s, cfg)
    saved = yaml.safe_load(cfg.read_text())
    assert saved == settings.DEFAULTS
    assert settings.load(cfg) == s


def test_the_front_door_defaults() -> None:
    s = settings.load(Path("/nonexistent/absent.yaml"))
    h = s.https
    assert (h.domain, h.email, h.acme_ca_root) == ("auto", None, None)
    assert (h.http_port, h.port, h.api_port) == (80, 443, 8443)
    assert h.acme_ca == "https://acme-v02.api.letsencrypt.org/directory"
    assert s.api.bind == "127.0.0.1"  # the API is public only through the proxy
    assert s.images.proxy.startswith("caddy:2.") and "latest" not in s.images.proxy


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("box.example.com\n}\n:9000 {", id="newline-braces"),
        pytest.param("box.example.com {", id="brace"),
        pytest.param("a b.example.com", id="space"),
        pytest.param("box.example.com#x", id="hash"),
        pytest.param("box.example.com:8080", id="port"),
        pytest.param('"box".example.com', id="quote"),
        pytest.param("{env.API_KEY}.example.com", id="placeholder"),
        pytest.param("-box.example.com", id="leading-hyphen"),
        pytest.param("box..example.com", id="empty-label"),
        pytest.param("localhost", id="no-dot"),
        pytest.param("bücher.example", id="non-ascii"),
    ],
)
def test_a_domain_that_would_break_out_of_the_caddyfile_is_refused(value: str) -> None:
    with pytest.raises(BadInput) as err:
        settings.load(Path("/nonexistent/c.yaml"), env={"HTTPS_DOMAIN": value})
    assert err.value.message.startswith("https.domain (from environment HTTPS_DOMAIN): ")
    assert "is not a domain name" in err.value.message


@pytest.mark.parametrize(
    "value", ["me@example.com\n}", "me@exa mple.com", "me{x}@example.com", "me@example.com#"]
)
def test_an_acme_email_that_would_break_out_is_refused(value: str) -> None:
    with pytest.raises(BadInput, match=r"^https.email \(from environment ACME_EMAIL\): "):
        settings.load(Path("/nonexistent/c.yaml"), env={"ACME_EMAIL": value})


def test_domain_is_case_folded_and_keywords_kept() -> None:
    load = settings.load
    assert load(Path("/x/c.yaml"), env={"HTTPS_DOMAIN": "Chat.Example.COM"}).https.domain == (
        "chat.example.com"
    )
    assert load(Path("/x/c.yaml"), env={"HTTPS_DOMAIN": "OFF"}).https.domain == "off"


def test_plain_http_acme_ca_is_refused() -> None:
    with pytest.raises(BadInput, match=r"https.acme_ca .*is not an https URL"):
        settings.load(Path("/x/c.yaml"), env={"ACME_CA": "http://ca.example.com/dir"})


def test_no_proxy_and_a_public_api_is_refused_with_the_fix() -> None:
    with pytest.raises(BadInput) as err:
        settings.load(Path("/x/c.yaml"), env={"HTTPS_DOMAIN": "off", "API_BIND": "0.0.0.0"})
    assert err.value.message.startswith("api.bind (from environment API_BIND): 0.0.0.0 would put")
    assert "HTTPS_DOMAIN" in (err.value.fix or "") and "ssh -L" in (err.value.fix or "")


def test_no_proxy_keeps_a_public_ui_and_a_loopback_api() -> None:
    s = settings.load(Path("/x/c.yaml"), env={"HTTPS_DOMAIN": "off", "UI_BIND": "0.0.0.0"})
    assert (s.https.domain, s.ui.bind, s.api.bind) == ("off", "0.0.0.0", "127.0.0.1")


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"API_PORT": "3000"}, "ui.port: 3000 is the port of api.port too"),
        (
            {"WATCH_METRICS_PORT": "8000"},
            "watch.metrics_port (from environment WATCH_METRICS_PORT): 8000 is the port of api.port too",
        ),
        (
            {"HTTPS_PORT": "3000"},
            "https.port (from environment HTTPS_PORT): 3000 is the port of ui.port too",
        ),
        (
            {"HTTPS_API_PORT": "443"},
            "https.api_port (from environment HTTPS_API_PORT): 443 is the port of https.port too",
        ),
        (
            {"HTTP_PORT": "8471"},
            "https.http_port (from environment HTTP_PORT): 8471 is the port of watch.metrics_port too",
        ),
    ],
)
def test_two_listeners_on_one_port_are_refused(env: dict[str, str], words: str) -> None:
    with pytest.raises(BadInput) as err:
        settings.load(Path("/x/c.yaml"), env=env)
    assert words in err.value.message


def test_proxy_ports_do_not_clash_when_the_proxy_is_off() -> None:
    s = settings.load(Path("/x/c.yaml"), env={"HTTPS_DOMAIN": "off", "HTTPS_PORT": "3000"})
    assert s.https.port == 3000


def test_the_settings_doc_lists_every_row_as_it_is() -> None:
    doc = (SETTINGS.parents[1] / "docs" / "settings.md").read_text()
    start = doc.index("-->\n", doc.index("<!-- settings table")) + 4
    end = doc.index("<!-- end of settings table -->")
    assert doc[start:end] == settings.rows.markdown_table()
