"""The REAL Open WebUI as a local image, built from PyPI on this host (no registry is reachable).

Containers here cannot reach PyPI through TLS, so the package is installed on the host with
``pip install --target`` into a cache folder outside the repository, and an image on the
debootstrap base (``tests/fakes/images.py``) copies that folder in. The recipe lies in
``tests/fakes/images/webui-real/`` (``webui.Dockerfile`` and the ``open-webui`` entry script).

- ``OPEN_WEBUI_VERSION`` is THE pin: the production compose file's
  ``ghcr.io/open-webui/open-webui:v<version>`` must name the same version.
- The pip target is kept in ``CACHE_ROOT/webui-<version>-<key>/site-packages`` between runs
  (cold: about 3 minutes on 2 cores, 2.9 GB; warm: nothing to do).
- The image is tagged ``sandbox-test/webui-real:<hash>``, the hash of the pins, the pip command,
  the recipe files and the base tag; when the engine has the tag, ``ensure_webui_real_image``
  returns at once. Also tagged ``sandbox-test/webui-real:current`` for humans.
- Builds take an exclusive ``fcntl`` lock, so two pytest processes never build at once.

As a script: ``python tests/fakes/webui_real.py`` builds (if needed) and prints the tag.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.fakes` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fakes import images  # noqa: E402

# THE pin. The lead pins the production image ghcr.io/open-webui/open-webui:v<this> to it.
OPEN_WEBUI_VERSION = "0.12.4"
# The CPU wheel that lies on this machine (/opt/wheels); named so pip never fetches a CUDA build.
TORCH_VERSION = "2.13.0"
# Debian's Python 3.11.2 in the image needs async-timeout (3.11.7 on the host does not).
PIP_REQUIREMENTS = (f"torch=={TORCH_VERSION}", f"open-webui=={OPEN_WEBUI_VERSION}", "async-timeout")
# Bump when the recipe changes in a way the inputs below do not show.
RECIPE_VERSION = "1"

RECIPE_DIR = images.IMAGES_DIR / "webui-real"
DOCKERFILE = "webui.Dockerfile"
RECIPE_FILES = (DOCKERFILE, "open-webui")
REPO = f"{images.REPO}/webui-real"
CACHE_ROOT = Path(os.environ.get("SANDBOX_TEST_CACHE", "/var/cache/sandbox-agent-test"))
LOCK_PATH = CACHE_ROOT / "webui-real.lock"
PYTHON = os.environ.get("SANDBOX_TEST_PIP_PYTHON", sys.executable)
# Anything named like this in the pip target means pip pulled a CUDA build: refuse it.
CUDA_MARKERS = ("nvidia_", "nvidia-", "triton")


class WebuiBuildError(images.ImageBuildError):
    """The real Open WebUI image could not be built; the message says what to do next."""


def pip_command(target: str | os.PathLike[str]) -> list[str]:
    return [
        PYTHON,
        "-m",
        "pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
        "--target",
        str(target),
        *PIP_REQUIREMENTS,
    ]


def pip_key() -> str:
    """What the pip target depends on: the requirements and the Python minor version."""
    recipe = {
        "requirements": list(PIP_REQUIREMENTS),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "recipe": RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def context_dir() -> Path:
    """The build context under CACHE_ROOT: ``site-packages/`` plus the recipe files."""
    return CACHE_ROOT / f"webui-{OPEN_WEBUI_VERSION}-{pip_key()}"


def image_tag(base: str) -> str:
    digest = hashlib.sha256()
    digest.update(
        json.dumps({"pip": pip_key(), "base": base, "version": OPEN_WEBUI_VERSION}).encode()
    )
    for name in RECIPE_FILES:
        path = RECIPE_DIR / name
        digest.update(name.encode() + b"\0" + oct(path.stat().st_mode & 0o777).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"{REPO}:{digest.hexdigest()[:16]}"


def ensure_webui_real_image() -> str:
    """Return the tag of the real Open WebUI image, building it when the engine lacks it.

    Cold (no pip target, no image): about 3 min of pip plus 1.5 min of docker build on 2 cores.
    """
    base = images.ensure_base()
    tag = image_tag(base)
    if not images._image_exists(tag):
        with images.file_lock(LOCK_PATH, _log):
            if not images._image_exists(tag):  # another process may have built it meanwhile
                started = time.monotonic()
                site_packages = _ensure_site_packages()
                _build(tag, base, site_packages.parent)
                _log(f"built {tag} in {time.monotonic() - started:.0f}s")
    images._docker("tag", tag, f"{REPO}:current")
    return tag


# --- building -------------------------------------------------------------------------------


def _ensure_site_packages() -> Path:
    ctx = context_dir()
    target = ctx / "site-packages"
    marker = ctx / "pip-complete.json"
    if marker.is_file() and target.is_dir():
        _log(f"pip target cached: {target}")
        return target
    ctx.mkdir(parents=True, exist_ok=True)
    partial = ctx / "site-packages.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    cmd = pip_command(partial)
    _log(f"pip install of open-webui {OPEN_WEBUI_VERSION} (about 3 min cold): {' '.join(cmd)}")
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise WebuiBuildError(
            f"pip install failed (exit {proc.returncode}); is PyPI reachable?\n{tail}"
        )
    cuda = sorted(p.name for p in partial.iterdir() if p.name.lower().startswith(CUDA_MARKERS))
    if cuda:
        raise WebuiBuildError(
            f"pip pulled CUDA packages into {partial}: {', '.join(cuda)}; torch=={TORCH_VERSION} "
            "must resolve to the CPU wheel (is /opt/wheels on pip's find-links?)"
        )
    partial.rename(target)
    marker.write_text(json.dumps({"command": cmd, "seconds": round(time.monotonic() - started)}))
    _log(f"pip install done in {time.monotonic() - started:.0f}s")
    return target


def _build(tag: str, base: str, ctx: Path) -> None:
    for name in RECIPE_FILES:
        shutil.copy2(RECIPE_DIR / name, ctx / name)
    # Only the recipe and site-packages go to the engine (the marker and leftovers do not).
    (ctx / ".dockerignore").write_text(
        "*\n!site-packages\n" + "".join(f"!{n}\n" for n in RECIPE_FILES)
    )
    cmd = [
        images.DOCKER,
        "build",
        "--build-arg",
        f"BASE={base}",
        "--label",
        f"{images.LABEL}=webui-real",
        "--label",
        f"org.sandbox-agent.open-webui-version={OPEN_WEBUI_VERSION}",
        "-f",
        str(ctx / DOCKERFILE),
        "-t",
        tag,
        str(ctx),
    ]
    _log(f"docker build {tag} (about 1.5 min; sends 2.9 GB of context)")
    started = time.monotonic()
    # The classic builder uses the local base as is; BuildKit may try to resolve it remotely.
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise WebuiBuildError(f"docker build of {tag} failed:\n{tail}")
    _log(f"docker build done in {time.monotonic() - started:.0f}s")


def _log(message: str) -> None:
    print(f"[webui-real] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    try:
        print(ensure_webui_real_image())
    except images.ImageBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
