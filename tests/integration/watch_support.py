"""What the watchdog tests share: a stand-in stack brought up by `sandbox-agent up`, and
`sandbox-agent watch` as a subprocess whose JSON-line events a test waits for."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import AGENT, agent_env
from tests.integration.stack_support import (
    agent,
    docker_client,
    fake_snapshot,
    free_port,
    http,
    project_name,
    remove_project,
    standin_images,
    write_config,
)

REPO = Path(__file__).resolve().parents[2]
# Docker's own healthcheck of vLLM made fast and blind to our probes: it fails while
# /tmp/unhealthy holds this run's id (`mark_unhealthy`), so only Docker's `unhealthy` event can
# trigger, and a restarted container (a new id) is healthy again.
FAST_HEALTHCHECK = """    healthcheck:
      test: ["CMD-SHELL", "! cmp -s /tmp/unhealthy /tmp/standin-boot"]
      interval: 1s
      timeout: 1s
      retries: 1
"""


def fast_healthcheck_template(folder: Path) -> Path:
    text = (REPO / "compose" / "docker-compose.yml").read_text()
    start = text.index("    healthcheck:", text.index("  vllm:"))
    end = text.index("    restart:", start)
    path = folder / "template.yml"
    path.write_text(text[:start] + FAST_HEALTHCHECK + text[end:])
    return path


class Stack:
    """A stand-in stack of its own (project, ports, folders), up and healthy; on the main
    engine, or on the one `docker_host` names (the agent gets it as DOCKER_HOST)."""

    def __init__(
        self,
        folder: Path,
        *,
        template: Path | None = None,
        docker_host: str | None = None,
        **over: Any,
    ) -> None:
        self.env = {"DOCKER_HOST": docker_host} if docker_host else {}
        self.folder, self.project = folder, project_name("wd")
        self.client = docker_client(docker_host) if docker_host else docker_client()
        self.snapshot = fake_snapshot(folder / "models", "acme/tiny-chat")
        watch = {"metrics_port": free_port(), "motd": str(folder / "motd"), **over.pop("watch", {})}
        self.config = write_config(folder, self.project, standin_images(), watch=watch, **over)
        data = yaml.safe_load(self.config.read_text())
        self.api = f"http://127.0.0.1:{data['api']['port']}"
        self.ui = f"http://127.0.0.1:{data['ui']['port']}"
        self.metrics = f"http://127.0.0.1:{watch['metrics_port']}/metrics"
        self.template = template
        self.up()

    def up(self) -> subprocess.CompletedProcess[str]:
        extra = ["--template", str(self.template)] if self.template else []
        done = agent("up", "--config", str(self.config), *extra, env=self.env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def run(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return agent(*args, "--config", str(self.config), env=self.env, **kw)

    def container(self, service: str = "vllm") -> Any:
        return self.client.containers.get(f"{self.project}-{service}-1")

    def key(self) -> str:
        return (self.folder / "secrets" / "api_key").read_text().strip()

    def mode(self, **body: Any) -> Any:
        return http(f"{self.api}/_standin/mode", body=body)

    def chat(self, words: int = 4, timeout: float = 120) -> tuple[int, float]:
        """One chat completion (the stand-in echoes the prompt: `words` tokens or so)."""
        import urllib.request

        body = {"model": "tiny", "messages": [{"role": "user", "content": "w " * words}]}
        req = urllib.request.Request(
            f"{self.api}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.key()}", "Content-Type": "application/json"},
        )
        start = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, time.monotonic() - start
        except OSError:
            return 0, time.monotonic() - start

    def mark_unhealthy(self) -> None:
        code, out = self.container().exec_run(["cp", "/tmp/standin-boot", "/tmp/unhealthy"])
        assert code == 0, out

    def remove(self) -> None:
        remove_project(self.client, self.project)


def stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


class Watcher:
    """`sandbox-agent watch` running against a stack; its events parsed as they come."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [AGENT, "watch", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**agent_env(), **(env or {})},
        )
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self.lines.append(line)
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(line))

    def named(self, name: str, **match: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [
                e
                for e in self.events
                if e.get("event") == name and all(e.get(k) == v for k, v in match.items())
            ]

    def wait_for(
        self,
        name: str,
        timeout: float = 30,
        where: Callable[[dict[str, Any]], bool] | None = None,
        **match: Any,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.named(name, **match) if where is None or where(e)]
            if found:
                return found[0]
            assert self.proc.poll() is None, "watch exited:\n" + "".join(self.lines[-30:])
            time.sleep(0.05)
        raise AssertionError(f"no {name} {match} within {timeout}s; events:\n" + self.dump())

    def dump(self) -> str:
        with self._lock:
            return "".join(self.lines[-40:])

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.stdout.read() if self.proc.stdout else ""


class EngineLink:
    """A unix-socket proxy in front of the engine. `cut()` is what a client sees of a
    daemon restart (every connection, the event stream included, ends; new ones are refused)
    without restarting the engine this machine shares; `restore()` ends the outage."""

    def __init__(self, path: Path, upstream: str = "/var/run/docker.sock") -> None:
        import socket

        self.path, self.upstream = path, upstream
        self.down = False
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.close()

    def cut(self) -> None:
        import socket

        self.down = True
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def restore(self) -> None:
        self.down = False

    def close(self) -> None:
        self.cut()
        self._server.close()
