"""stackscript.sh: its UDF header as Linode reads it, a body that never lets a shell read a form
value as code, the template that refuses to run unstamped, and the download that installs
nothing whose sha256 is not the stamped one."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

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
        "DOMAIN",
        "ADMIN_EMAIL",
        "MAX_MODEL_LEN",
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
    assert fields["API_BIND"]["label"] == (
        "Who can reach the API: 127.0.0.1 = this box only (ssh -L); "
        "0.0.0.0 = the internet, over HTTPS on port 8443 with the key"
    )
    assert fields["DOMAIN"]["default"] == ""
    assert fields["DOMAIN"]["label"] == (
        "Domain name for HTTPS (empty: this box's own Linode name, "
        "A-B-C-D.ip.linodeusercontent.com)"
    )
    assert fields["MAX_MODEL_LEN"]["default"] == "auto"
    assert "password" not in fields["ADMIN_EMAIL"]["label"].lower().split("(")[0]


def test_every_setting_field_is_a_name_the_agent_reads() -> None:
    for name in udfs():
        # DOMAIN reaches the agent as HTTPS_DOMAIN
        assert name in ENV_KEYS or name in ("HF_TOKEN_PASSWORD", "DOMAIN"), name


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


def fragment(start: str, end: str) -> str:
    text = SCRIPT.read_text()
    begin = text.index(start)
    return text[begin : text.index(end, begin) + len(end)]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DOMAIN": "chat.example.com"}, "chat.example.com"),
        ({"DOMAIN": "$(touch /tmp/pwned-domain)`id`"}, "$(touch /tmp/pwned-domain)`id`"),
        ({"DOMAIN": "a.example.com", "HTTPS_DOMAIN": "b.example.com"}, "b.example.com"),
        ({"DOMAIN": ""}, None),
        ({}, None),
    ],
)
def test_domain_becomes_https_domain_as_plain_text_unless_that_is_set(
    env: dict[str, str], expected: str | None, real_commands: None
) -> None:
    block = fragment("# The HTTPS proxy's name", "\nfi\n")
    show = 'printf "%s" "${HTTPS_DOMAIN-<unset>}"'
    done = subprocess.run(
        ["bash", "-euc", block + show],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("<unset>" if expected is None else expected)
    assert not Path("/tmp/pwned-domain").exists()


def test_the_unstamped_template_refuses_to_run_and_says_how_to_stamp_it(
    real_commands: None,
) -> None:
    # as nobody when root: the script's log and console (/var/log, /dev/ttyS0) stay untouched
    user = (
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    )
    done = subprocess.run(
        [*user, "bash", "-s"],
        input=SCRIPT.read_text(),
        env={"PATH": "/usr/bin:/bin", "HOME": "/", "MODEL_ID": "acme/x"},
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert (
        "error: this stackscript.sh is the unstamped template: it names no release to install.\n"
        "  Stamp it: python packaging/build.py release OUT --base-url URL, publish OUT/ at URL\n"
        "  and deploy OUT/stackscript.sh; or set SANDBOX_AGENT_SOURCE to a bundle folder\n"
        "  (python packaging/build.py bundle DIR).\n"
    ) in done.stdout + done.stderr
    assert "must run as root" not in done.stdout + done.stderr


def fetch(url: str, dest: Path, want: str) -> subprocess.CompletedProcess[str]:
    code = fragment("FETCH='", "\n'\n")[len("FETCH='") : -2]
    return subprocess.run(
        [sys.executable, "-c", code, url, str(dest), want], capture_output=True, text=True
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1, as a release is: (folder, its URL)."""
    folder = tmp_path / "release"
    folder.mkdir()
    handler = functools.partial(QuietFiles, directory=str(folder))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
        httpd.shutdown()


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_the_download_keeps_only_the_file_with_the_stamped_sha256(
    tmp_path: Path, served: tuple[Path, str], real_commands: None
) -> None:
    folder, url = served
    name = "agent-0.1.0-py3-none-any.whl"
    (folder / name).write_bytes(b"the release's wheel")
    good = hashlib.sha256(b"the release's wheel").hexdigest()
    dest = tmp_path / "got.whl"
    ok = fetch(f"{url}/{name}", dest, good)
    assert ok.returncode == 0 and dest.read_bytes() == b"the release's wheel"
    assert ok.stdout == f"{name}: sha256 {good} as stamped\n"

    (folder / name).write_bytes(b"the release's wheel, one byte changed!")
    dest.unlink()
    refused = fetch(f"{url}/{name}", dest, good)
    assert refused.returncode == 1 and not dest.exists()
    got = hashlib.sha256(b"the release's wheel, one byte changed!").hexdigest()
    assert refused.stderr == (
        f"error: {name} is not the file of this release: "
        f"sha256 expected {good}, got {got}; nothing was installed\n"
    )
    missing = fetch(f"{url}/gone.whl", dest, good)  # a 404 is final: no retries
    assert missing.returncode == 1
    assert (
        missing.stderr == f"error: cannot download {url}/gone.whl: HTTP Error 404: File not found\n"
    )
    unstamped = fetch(f"{url}/{name}", dest, "")
    assert unstamped.stderr == (
        f"error: the sha256 stamped for {name} is not one; stamp the script again\n"
    )
    assert not dest.exists()
