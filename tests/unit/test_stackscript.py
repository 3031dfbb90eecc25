"""stackscript.sh: its UDF header as Linode reads it, and a body that never lets a shell
read a form value as code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from agent import __version__
from agent.settings import DEFAULTS, ENV_KEYS

SCRIPT = Path(__file__).resolve().parents[2] / "stackscript.sh"
UDF = re.compile(r"^# <UDF (.*?)\s*/>$")
ATTR = re.compile(r'(\w+)="([^"]*)"')


def udfs() -> dict[str, dict[str, str]]:
    found = {}
    for line in SCRIPT.read_text().splitlines():
        if m := UDF.match(line):
            attrs = dict(ATTR.findall(m.group(1)))
            found[attrs["name"]] = attrs
    return found


def body() -> list[str]:
    return [line for line in SCRIPT.read_text().splitlines() if not line.lstrip().startswith("#")]


def test_the_form_has_the_fields_the_issue_names_with_linodes_rules() -> None:
    fields = udfs()
    assert list(fields) == [
        "MODEL_ID",
        "HF_TOKEN_PASSWORD",
        "API_BIND",
        "ADMIN_EMAIL",
        "MAX_MODEL_LEN",
        "AGENT_VERSION",
    ]
    for name, attrs in fields.items():
        assert re.fullmatch(r"[A-Za-z0-9_]{1,63}", name) and attrs["label"]
        assert "default" in attrs, f"{name}: without a default the field is required"
        assert not ("oneOf" in attrs and "manyOf" in attrs)
    assert fields["MODEL_ID"]["default"] == DEFAULTS["model"]["id"]
    assert fields["MODEL_ID"]["example"]
    assert (
        "password" in "HF_TOKEN_PASSWORD".lower() and fields["HF_TOKEN_PASSWORD"]["default"] == ""
    )
    assert fields["API_BIND"]["oneOf"] == "127.0.0.1,0.0.0.0"
    assert fields["MAX_MODEL_LEN"]["default"] == "auto"
    assert fields["AGENT_VERSION"]["default"] == __version__
    assert "password" not in fields["ADMIN_EMAIL"]["label"].lower().split("(")[0]


def test_every_setting_field_is_a_name_the_agent_reads() -> None:
    for name in udfs():
        assert name in ENV_KEYS or name in ("HF_TOKEN_PASSWORD", "AGENT_VERSION"), name


def test_no_form_value_is_read_by_a_shell_as_code() -> None:
    text = "\n".join(body())
    assert not re.search(r"\beval\b|\bsed\b|<<|\bsource\b|bash -c|sh -c", text)
    for name in udfs():
        # a value appears only quoted, as one argument (never spliced into a command string)
        for use in re.findall(rf".?\$\{{?{name}\b[^}}\s\"]*\}}?.?", text):
            assert use.startswith('"'), use
    assert 'exec "$VENV/bin/sandbox-agent" bootstrap' in text
    assert "/var/log/stackscript.log" in text and "/dev/ttyS0" in text


def test_the_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
