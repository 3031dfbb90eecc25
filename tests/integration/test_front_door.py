"""The front door for real: `sandbox-agent up` with a domain starts the proxy (Debian's Caddy
2.6.2 in the official image's layout) in the host's network namespace, which gets a real
certificate from a real ACME server (pebble, on the host's loopback, validating http-01 on
5002 and tls-alpn-01 on 5001); then everything the issue asks of the door, through it.

The vLLM stand-in answers /invocations, /tokenize, /pause and /collective_rpc without the
key, as the real vLLM does (vllm#58144): the proxy is what closes them.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path

import pytest

from tests.fakes import acme, images
from tests.integration.caddy_support import NAME, https, tcp_listeners
from tests.integration.stack_support import (
    agent,
    docker_client,
    fake_snapshot,
    free_port,
    http,
    project_name,
    remove_project,
    standin_images,
    tree_digest,
    write_config,
)

pytestmark = pytest.mark.docker

OPEN_IN_VLLM = ("/invocations", "/tokenize", "/pause", "/collective_rpc")


@dataclass(frozen=True)
class Door:
    folder: Path
    config: Path
    project: str
    key: str
    root: Path  # the root pebble's issued chain ends in
    api_port: int  # the proxy's API door
    vllm_port: int  # vLLM's own port, on loopback
    health_port: int


@pytest.fixture(scope="module")
def door(pebble: acme.Pebble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    client = docker_client()
    vllm_image, ui_image = standin_images()
    folder = tmp_path_factory.mktemp("door")
    project = project_name("door")
    fake_snapshot(folder / "models", "acme/tiny-chat")
    api_port, health_port = free_port(), free_port()
    config = write_config(
        folder,
        project,
        (vllm_image, ui_image),
        api={"bind": "0.0.0.0"},
        ui={"bind": "0.0.0.0"},
        images={"proxy": images.ensure_image("caddy-standin")},
        https={
            "domain": NAME,
            "http_port": acme.HTTP_PORT,
            "port": acme.TLS_PORT,
            "api_port": api_port,
            "health_port": health_port,
            "acme_ca": pebble.directory_url,
            "acme_ca_root": str(pebble.listener_cert),
        },
    )
    before = pebble.issued()
    try:
        up = agent("up", "--config", str(config), timeout=240)
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        assert f"chat: https://{NAME}:{acme.TLS_PORT}" in up.stdout
        assert f"API:  https://{NAME}:{api_port}/v1" in up.stdout
        pebble.wait_issued(before + 1, timeout=60)
        root = folder / "pebble-root.pem"
        root.write_text(pebble.root_pem())
        vllm_port = int(_config(config)["api"]["port"])
        key = (folder / "secrets" / "api_key").read_text().strip()
        door = Door(folder, config, project, key, root, api_port, vllm_port, health_port)
        _wait_for_tls(door)
        yield door
    finally:
        remove_project(client, project)


def _config(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def _wait_for_tls(door: Door, timeout: float = 30.0) -> None:
    """Caddy serves the new certificate a moment after pebble issued it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            https("/health", cafile=door.root)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _auth(door: Door) -> dict[str, str]:
    return {"Authorization": f"Bearer {door.key}"}


def test_the_ui_answers_over_verified_tls_with_hsts(door: Door) -> None:
    reply = https("/health", cafile=door.root)  # the chain verifies against pebble's root
    assert reply.status == 200
    assert reply.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_the_api_door_takes_the_key_and_only_the_key(door: Door) -> None:
    models = https("/v1/models", cafile=door.root, port=door.api_port, headers=_auth(door))
    assert models.status == 200 and models.json()["data"][0]["id"] == "tiny"
    assert https("/v1/models", cafile=door.root, port=door.api_port).status == 401
    wrong = {"Authorization": f"Bearer {door.key[:-1]}x"}
    assert https("/v1/models", cafile=door.root, port=door.api_port, headers=wrong).status == 401
    assert https("/", cafile=door.root, port=door.api_port, headers=_auth(door)).status == 404


def test_what_vllm_leaves_open_is_closed_on_both_doors(door: Door) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    raw = f"http://127.0.0.1:{door.vllm_port}/invocations"
    assert http(raw, body=json.loads(body))[0] == 200  # vLLM itself: no key needed
    seen = {}
    for path in OPEN_IN_VLLM:
        for port in (acme.TLS_PORT, door.api_port):
            for headers in ({}, _auth(door)):
                for method in ("GET", "POST"):
                    reply = https(
                        path,
                        cafile=door.root,
                        port=port,
                        method=method,
                        headers={**headers, "Content-Type": "application/json"},
                        body=body if method == "POST" else None,
                    )
                    seen[(path, port, bool(headers), method)] = reply.status
    assert all(status != 200 for status in seen.values()), seen
    assert {s for (p, port, *_), s in seen.items() if port == door.api_port} == {404}


def test_a_streamed_completion_arrives_chunk_by_chunk(door: Door) -> None:
    mode = f"http://127.0.0.1:{door.vllm_port}/_standin/mode"
    assert http(mode, body={"token_seconds": 0.4})[0] == 200
    try:
        arrivals = _stream_arrivals(door, "one two three four five")
    finally:
        http(mode, body={"token_seconds": 0})
    words = [t for t in arrivals if t is not None]
    assert len(words) >= 5
    # each token leaves vLLM 0.4 s after the last; buffering would deliver them together
    assert words[-1] - words[0] > 1.2, arrivals


def _stream_arrivals(door: Door, prompt: str) -> list[float]:
    from tests.integration.caddy_support import _SniConnection

    connection = _SniConnection(NAME, door.api_port, door.root, 20.0)
    body = {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    try:
        started = time.monotonic()
        connection.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(body),
            headers={"Host": f"{NAME}:{door.api_port}", **_auth(door)},
        )
        response = connection.getresponse()
        assert response.status == 200, response.read()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        arrivals = []
        while line := response.readline():
            if line.startswith(b"data:") and b'"content": "' in line:
                arrivals.append(time.monotonic() - started)
        return arrivals
    finally:
        connection.close()


def test_plain_http_redirects_to_https(door: Door) -> None:
    connection = HTTPConnection(acme.HOST, acme.HTTP_PORT, timeout=5)
    try:
        connection.request("GET", "/c/1?tab=2", headers={"Host": NAME})
        response = connection.getresponse()
        assert response.status == 308
        assert response.headers["Location"].startswith(f"https://{NAME}")
        assert response.headers["Location"].endswith("/c/1?tab=2")
    finally:
        connection.close()


def test_vllm_and_the_ui_publish_on_loopback_only(door: Door) -> None:
    client = docker_client()
    config = _config(door.config)
    for service, port in (("vllm", door.vllm_port), ("open-webui", config["ui"]["port"])):
        (container,) = client.containers.list(
            filters={"label": f"com.docker.compose.service={service}", "name": door.project}
        )
        bindings = container.attrs["HostConfig"]["PortBindings"]
        assert {b["HostIp"] for spec in bindings.values() for b in spec} == {"127.0.0.1"}
        assert tcp_listeners(port) == {"127.0.0.1"}, service
    assert tcp_listeners(door.health_port) == {"127.0.0.1"}


def test_the_key_is_in_no_file_but_the_secrets(door: Door) -> None:
    for folder in (door.folder / "stack", door.folder / "state", door.folder / "models"):
        for path in folder.rglob("*"):
            if path.is_file():
                assert door.key.encode() not in path.read_bytes(), path
    caddyfile = (door.folder / "stack" / "Caddyfile").read_text()
    assert "{env.SANDBOX_AGENT_API_KEY}" in caddyfile
    stored = (door.folder / "state" / "proxy" / "data" / "caddy" / "certificates").rglob("*.crt")
    assert [p.name for p in stored] == [f"{NAME}.crt"]


def test_a_new_up_down_up_and_a_recreated_proxy_ask_for_no_new_certificate(
    door: Door, pebble: acme.Pebble
) -> None:
    before = pebble.issued()
    store = door.folder / "state" / "proxy" / "data"
    kept = tree_digest(store)
    assert agent("up", "--config", str(door.config), timeout=120).returncode == 0
    down = agent("down", "--config", str(door.config))
    assert down.returncode == 0, down.stderr
    assert tree_digest(store) == kept  # down removes no certificate
    assert agent("up", "--config", str(door.config), timeout=240).returncode == 0
    client = docker_client()
    (proxy,) = client.containers.list(
        filters={"label": "com.docker.compose.service=proxy", "name": door.project}
    )
    proxy.remove(force=True)  # a re-created container, the same store
    assert agent("up", "--config", str(door.config), timeout=240).returncode == 0
    _wait_for_tls(door)
    assert https("/health", cafile=door.root).status == 200
    time.sleep(2)  # an issuance would have been logged by now (pebble issues in about 1 s)
    assert pebble.issued() == before


@pytest.mark.parametrize(
    ("env", "words"),
    [
        pytest.param(
            {"HTTPS_DOMAIN": "off", "API_BIND": "0.0.0.0"},
            "error: api.bind (from environment API_BIND): 0.0.0.0 would put vLLM's own port",
            id="off-and-public-api",
        ),
        pytest.param(
            {"HTTPS_DOMAIN": "box.example.test\n}\n:9000 {"},
            "error: https.domain (from environment HTTPS_DOMAIN): ",
            id="domain-breakout",
        ),
        pytest.param(
            {"ACME_EMAIL": "me@corp.io }"},
            "error: https.email (from environment ACME_EMAIL): ",
            id="email-breakout",
        ),
    ],
)
def test_a_door_that_would_leak_is_refused_before_anything_changes(
    tmp_path: Path, env: dict[str, str], words: str
) -> None:
    folder = tmp_path / "box"
    folder.mkdir()
    config = write_config(folder, project_name("refused"), ("img/a:1", "img/b:1"))
    before = tree_digest(tmp_path)
    result = agent("up", "--config", str(config), env=env)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr
    assert tree_digest(tmp_path) == before
    assert not list(tmp_path.rglob("*.lock"))


def test_auto_off_linode_with_a_public_api_is_refused_naming_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "box"
    folder.mkdir()
    config = write_config(folder, project_name("auto"), ("img/a:1", "img/b:1"))
    before = tree_digest(tmp_path)
    # the metadata service: a closed local port, as off Linode
    result = agent("up", "--config", str(config), env={"API_BIND": "0.0.0.0"})
    assert result.returncode == 2, result.stderr
    assert "this box has no Linode name" in result.stderr
    assert "HTTPS_DOMAIN" in result.stderr and "ssh -L" in result.stderr
    assert tree_digest(tmp_path) == before


def test_the_proxy_image_is_a_caddy_with_the_official_layout() -> None:
    tag = images.ensure_image("caddy-standin")
    out = subprocess.run(
        ["docker", "image", "inspect", tag, "--format", "{{json .Config}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    config = json.loads(out)
    assert "XDG_DATA_HOME=/data" in config["Env"] and "XDG_CONFIG_HOME=/config" in config["Env"]
    assert config["Cmd"][:2] == ["caddy", "run"]
