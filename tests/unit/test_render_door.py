"""The stack rendered with the front door open: the proxy service, loopback-only ports for vLLM
and Open WebUI whatever the binds, the UI told its public URL, no secret in any file; and the
door decided from the settings (auto, a domain, off)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from agent import door, stack
from agent import settings as settings_mod
from agent.stack import caddy

MODEL_PATH = "/root/.cache/huggingface/hub/models--acme--tiny/snapshots/" + "a" * 40
KEY = "sk-door-0123456789abcdef"


@pytest.fixture
def make_settings(write_config):
    def make(**data):
        base = {
            "project": "door-test",
            "gpus": "none",
            "model": {"id": "acme/tiny", "served_name": "tiny"},
            "api": {"port": 18000, "bind": "0.0.0.0"},
            "ui": {"port": 13000, "bind": "0.0.0.0", "admin_email": "ops@corp.io"},
            "https": {"domain": "box.example.test"},
        }
        for key, value in data.items():
            base[key] = {**base[key], **value} if isinstance(base.get(key), dict) else value
        return settings_mod.load(write_config(base))

    return make


def rendered(s: settings_mod.Settings) -> stack.Rendered:
    front = door.current(s)
    secret = {stack.VLLM: {"VLLM_API_KEY": KEY}, stack.PROXY: {caddy.KEY_ENV: KEY}}
    return stack.render(s, stack.StackSpec(MODEL_PATH, door=front, secret_env=secret))


def test_the_proxy_owns_every_public_port(make_settings) -> None:
    out = rendered(make_settings())
    services = yaml.safe_load(out.text)["services"]
    assert set(services) == {"vllm", "open-webui", "proxy"}
    assert services["vllm"]["ports"] == ["127.0.0.1:18000:8000"]
    assert services["open-webui"]["ports"] == ["127.0.0.1:13000:8080"]
    proxy = services["proxy"]
    assert proxy["network_mode"] == "host" and "ports" not in proxy
    assert proxy["image"].startswith("caddy:2.")
    assert proxy["env_file"] == [str(Path(out.path).parent.parent / "secrets" / "proxy.env")]


def test_the_ui_is_told_its_public_origin_and_keeps_secure_cookies(make_settings) -> None:
    env = yaml.safe_load(rendered(make_settings()).text)["services"]["open-webui"]["environment"]
    assert env["WEBUI_URL"] == env["CORS_ALLOW_ORIGIN"] == "https://box.example.test"
    assert env["WEBUI_SESSION_COOKIE_SECURE"] == env["WEBUI_AUTH_COOKIE_SECURE"] == "true"
    other = make_settings(https={"port": 5001})
    ui = yaml.safe_load(rendered(other).text)["services"]["open-webui"]["environment"]
    assert ui["WEBUI_URL"] == "https://box.example.test:5001"


def test_no_secret_in_the_compose_file_or_the_caddyfile(make_settings) -> None:
    out = rendered(make_settings())
    assert out.caddyfile is not None
    assert KEY not in out.text and KEY not in out.caddyfile
    assert "{env.SANDBOX_AGENT_API_KEY}" in out.caddyfile
    (proxy_env,) = [text for path, text in out.env_files.items() if path.name == "proxy.env"]
    assert f"SANDBOX_AGENT_API_KEY='{KEY}'" in proxy_env


def test_a_new_caddyfile_changes_the_proxys_config_hash(make_settings) -> None:
    def proxy_hash(s: settings_mod.Settings) -> str:
        out = rendered(s)
        project = stack.load_project(out.path, text=out.text, read_env=False)
        return next(svc.config_hash for svc in project.services if svc.name == "proxy")

    assert proxy_hash(make_settings()) != proxy_hash(make_settings(https={"api_port": 9443}))
    assert proxy_hash(make_settings()) == proxy_hash(make_settings())


def test_the_api_door_denies_by_default(make_settings) -> None:
    text = rendered(make_settings()).caddyfile or ""
    api = text[text.index("box.example.test:8443 {") :]
    api = api[: api.index("\n}\n")]
    assert (
        "path /v1/*" in api and 'header Authorization "Bearer {env.SANDBOX_AGENT_API_KEY}"' in api
    )
    assert 'respond "the API key is required" 401' in api
    assert api.rstrip().endswith("handle {\n\t\trespond 404\n\t}")
    assert "reverse_proxy 127.0.0.1:18000" in api and "flush_interval -1" in api


def test_only_what_faces_the_network_goes_through_the_proxy(make_settings) -> None:
    ui_only = rendered(make_settings(api={"bind": "127.0.0.1"}))
    assert ui_only.caddyfile is not None and ":8443" not in ui_only.caddyfile
    closed = rendered(make_settings(api={"bind": "127.0.0.1"}, ui={"bind": "127.0.0.1"}))
    assert closed.caddyfile is None
    assert "proxy" not in yaml.safe_load(closed.text)["services"]


def test_a_specific_bind_is_what_the_proxy_listens_on(make_settings) -> None:
    text = rendered(make_settings(ui={"bind": "192.0.2.7"})).caddyfile or ""
    ui = text[text.index("box.example.test {") :]
    assert ui.splitlines()[1] == "\tbind 192.0.2.7"
    assert "\tbind 127.0.0.1\n" in text  # the health answer is loopback only


def test_with_the_door_off_the_ui_keeps_its_bind_and_no_proxy_runs(make_settings) -> None:
    s = make_settings(https={"domain": "off"}, api={"bind": "127.0.0.1"})
    out = rendered(s)
    services = yaml.safe_load(out.text)["services"]
    assert "proxy" not in services and out.caddyfile is None
    assert services["open-webui"]["ports"] == ["0.0.0.0:13000:8080"]
    assert "WEBUI_URL" not in services["open-webui"]["environment"]


def test_auto_is_the_saved_linode_name_and_closed_until_resolved(make_settings) -> None:
    s = make_settings(https={"domain": "auto"})
    assert door.current(s).on is False  # nothing saved yet: doctor and status ask no network
    door.save_name(s, door.linode_name("198.51.100.23"))
    front = door.current(s)
    assert front.name == "198-51-100-23.ip.linodeusercontent.com" and front.ui and front.api
    assert door.ui_url(s, front) == "https://198-51-100-23.ip.linodeusercontent.com"
    assert door.api_url(s, front) == "https://198-51-100-23.ip.linodeusercontent.com:8443"


def test_a_saved_name_that_is_not_a_linode_name_is_ignored(make_settings) -> None:
    s = make_settings(https={"domain": "auto"})
    path = s.paths.state / door.NAME_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"name": "evil.example.com\n}\n:80 {"}))
    assert door.saved_name(s) is None and door.current(s).on is False


@pytest.mark.parametrize(
    ("email", "contact"),
    [("ops@corp.io", "ops@corp.io"), ("admin@example.com", None), ("me@box.test", None)],
)
def test_an_email_the_ca_would_refuse_is_left_out(make_settings, email, contact) -> None:
    s = make_settings(ui={"admin_email": email})
    assert caddy.contact(s) == contact
    text = rendered(s).caddyfile or ""
    assert (f"\temail {email}\n" in text) is (contact is not None)


def test_real_caddy_reads_every_caddyfile_we_render(make_settings, tmp_path: Path) -> None:
    """Debian's caddy (the test image's binary) adapts each shape; skipped where not installed."""
    binary = Path("/usr/bin/caddy")
    if not binary.exists():
        pytest.skip("caddy is not installed (tests/run.sh installs it)")
    root = tmp_path / "root.pem"
    root.write_text("not read by adapt\n")
    shapes = [
        make_settings(),
        make_settings(api={"bind": "127.0.0.1"}),
        make_settings(ui={"bind": "192.0.2.7"}, https={"acme_ca_root": str(root)}),
        make_settings(https={"http_port": 5002, "port": 5001, "email": "a@corp.io"}),
    ]
    for s in shapes:
        path = tmp_path / "Caddyfile"
        path.write_text(rendered(s).caddyfile or "")
        done = subprocess.run(
            [str(binary), "adapt", "--config", str(path), "--adapter", "caddyfile"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["admin"] == {"disabled": True}
