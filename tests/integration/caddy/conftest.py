"""The proxy the ACME tests share: the Caddy stand-in in the host's network namespace, its
Caddyfile from caddy_support, the CA pebble on loopback. Each module here gets a proxy of its
own (module scope), started on an empty store, so no module sees what another's container left
in the store."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from agent import engine
from agent.errors import AgentError
from tests.fakes import acme, images
from tests.fakes.upstream import RecordingUpstream, serving
from tests.integration.caddy_support import (
    ADMIN_PORT,
    API_KEY,
    API_PORT,
    HEALTH_PORT,
    LABEL,
    LABEL_VALUE,
    NAME,
    NOWHERE,
    PENDING,
    Proxy,
    caddyfile,
)


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = engine.connect()
    except AgentError as exc:
        pytest.fail(f"{exc}; tests/run.sh installs and starts one")
    leftovers = client.containers.list(all=True, filters={"label": f"{LABEL}={LABEL_VALUE}"})
    for container in leftovers:  # an earlier run that was killed: ours by label
        container.remove(force=True, v=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def caddy_image(docker_client: docker.DockerClient) -> str:
    return images.ensure_image("caddy-standin")


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[RecordingUpstream, RecordingUpstream]]:
    with serving("ui") as ui, serving("api") as api:
        yield ui, api


@pytest.fixture(scope="module")
def root(pebble: acme.Pebble, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The root pebble's issued chains end in, as a file for ssl's cafile."""
    path = tmp_path_factory.mktemp("pebble-root") / "root.pem"
    path.write_text(pebble.root_pem())
    return path


@pytest.fixture(scope="module")
def proxy(
    docker_client: docker.DockerClient,
    caddy_image: str,
    pebble: acme.Pebble,
    upstreams: tuple[RecordingUpstream, RecordingUpstream],
    root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Proxy]:
    for port in (API_PORT, HEALTH_PORT, ADMIN_PORT):
        with socket.socket() as probe:
            # as Caddy binds (Go sets SO_REUSEADDR): a connection the last module's proxy
            # closed stays in TIME_WAIT on its port for a minute, and holds no listener
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                pytest.fail(
                    f"port {port} is taken; the proxy under test needs it free (`ss -ltnp`; "
                    "on a machine with systemd, Debian's caddy package starts caddy.service: "
                    "`systemctl disable --now caddy`)"
                )
    ui, api = upstreams
    workdir = tmp_path_factory.mktemp("caddy")
    (workdir / "Caddyfile").write_text(caddyfile(ui.port, api.port))
    shutil.copy(pebble.listener_cert, workdir / "root.pem")
    (workdir / "proxy.env").write_text(f"SANDBOX_API_KEY={API_KEY}\n")
    pebble.answer(PENDING, NOWHERE)
    proxy = Proxy(docker_client, caddy_image, workdir)
    try:
        proxy.start()
        proxy.wait_serving(NAME, root)
        yield proxy
    finally:
        proxy.remove()
        pebble.forget(PENDING)
