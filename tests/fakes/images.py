"""Local stand-in images for the tests: built from Debian packages, cached by content hash.

No registry can be reached here, so nothing is pulled. The base is a Debian bookworm root
filesystem made by debootstrap and imported with ``docker import``; every stand-in under
``tests/fakes/images/<name>/`` is a Dockerfile ``FROM ${BASE}`` built on top of it.

Tags carry a hash of their inputs, so a second call (or a second test run) finds the image
and returns at once:

- ``sandbox-test/base:<hash>``  hash of the package list, the debootstrap command, the clean-up
- ``sandbox-test/<name>:<hash>`` hash of the base tag, the folder's files, its HOST_FILES' files
- ``sandbox-test/<name>:current`` the same image, for humans

Usable as a module (``ensure_base()``, ``ensure_image(name)``) and as a script::

    python tests/fakes/images.py build [NAMES...]
    python tests/fakes/images.py list

Builds take an exclusive ``fcntl`` lock, so two pytest processes never build at once.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.fakes` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fakes import host_files  # noqa: E402

IMAGES_DIR = Path(__file__).resolve().parent / "images"
REPO = "sandbox-test"
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
# The real vllm/vllm-openai and open-webui images carry curl and python3, so healthchecks
# written for them (curl -fsS ... or python3 -c ...) work against the stand-ins unchanged.
BASE_PACKAGES = ("python3", "ca-certificates", "curl")
# Bases by name: an image folder holding a file BASE with one of these names is built on it.
# "systemd" is a box with systemd as PID 1 (TESTING.md: systemd in a container).
BASES: dict[str, tuple[str, ...]] = {
    "base": BASE_PACKAGES,
    "systemd": (*BASE_PACKAGES, "systemd", "systemd-sysv", "dbus", "python3-venv"),
}
# Paths removed from the root filesystem before import: docs and package lists only make the
# image bigger.
BASE_PRUNE = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/cache/debconf/templates.dat-old",
    "var/log",
)
# Bump when the recipe changes in a way the inputs above do not show.
BASE_RECIPE = "1"
LABEL = "org.sandbox-agent.test-image"

LOCK_PATH = Path(os.environ.get("SANDBOX_TEST_IMAGE_LOCK", "/var/tmp/sandbox-test-images.lock"))
WORK_ROOT = Path(os.environ.get("SANDBOX_TEST_IMAGE_WORKDIR", "/var/tmp"))
DOCKER = os.environ.get("SANDBOX_TEST_DOCKER", "/usr/bin/docker")
DEBOOTSTRAP = os.environ.get("SANDBOX_TEST_DEBOOTSTRAP", "debootstrap")


class ImageBuildError(RuntimeError):
    """A stand-in image could not be built; the message says what to do next."""


def debootstrap_command(target: str | os.PathLike[str], variant: str = "base") -> list[str]:
    return [
        DEBOOTSTRAP,
        "--variant=minbase",
        "--include=" + ",".join(BASES[variant]),
        SUITE,
        str(target),
        MIRROR,
    ]


def base_tag(variant: str = "base") -> str:
    """The tag the base image has for the current recipe (built or not)."""
    recipe = {
        "recipe": BASE_RECIPE,
        "command": debootstrap_command("{target}", variant),
        "packages": list(BASES[variant]),
        "prune": list(BASE_PRUNE),
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    name = "base" if variant == "base" else f"{variant}-base"
    return f"{REPO}/{name}:{digest[:16]}"


def base_of(name: str) -> str:
    """The base an image folder asks for (its BASE file), "base" by default."""
    marker = IMAGES_DIR / name / "BASE"
    return marker.read_text().strip() if marker.is_file() else "base"


def available_images() -> list[str]:
    """Names of the stand-ins that have a folder under tests/fakes/images/."""
    return sorted(p.name for p in IMAGES_DIR.iterdir() if (p / "Dockerfile").is_file())


def image_tag(name: str, base: str | None = None) -> str:
    """The tag ``ensure_image(name)`` builds, from the base tag and the folder's files."""
    folder = _image_dir(name)
    digest = hashlib.sha256()
    digest.update((base or base_tag(base_of(name))).encode() + b"\0")
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not _ignored(p)):
        rel = path.relative_to(folder).as_posix()
        digest.update(rel.encode() + b"\0")
        digest.update(oct(path.stat().st_mode & 0o777).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    try:
        host_files.digest_into(folder, digest)
    except host_files.HostFileMissing as exc:
        raise ImageBuildError(f"stand-in {name}: {exc}") from exc
    return f"{REPO}/{name}:{digest.hexdigest()[:16]}"


def ensure_base(variant: str = "base") -> str:
    """Return the base image's tag, building it first when the engine lacks it (~1 min)."""
    tag = base_tag(variant)
    if _image_exists(tag):
        return tag
    with file_lock(LOCK_PATH, _log):
        if _image_exists(tag):  # another process built it while we waited
            return tag
        _build_base(tag, variant)
    return tag


def ensure_image(name: str) -> str:
    """Return the tag of stand-in ``name`` (a folder under tests/fakes/images/), built if needed."""
    base = ensure_base(base_of(name))
    tag = image_tag(name, base)
    if not _image_exists(tag):
        with file_lock(LOCK_PATH, _log):
            if not _image_exists(tag):
                _build_image(name, tag, base)
    _docker("tag", tag, f"{REPO}/{name}:current")
    return tag


def prune() -> list[str]:
    """Remove test-image tags that the current recipe and files no longer produce."""
    names = available_images()
    # Only the repositories this module builds: other recipes (webui-real) share REPO and LABEL.
    managed = {base_tag(v).rpartition(":")[0] for v in BASES} | {f"{REPO}/{n}" for n in names}
    keep = {base_tag(v) for v in BASES} | {image_tag(name) for name in names}
    keep |= {f"{REPO}/{name}:current" for name in names}
    listed = _docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"label={LABEL}")
    removed = []
    for tag in listed.stdout.split():
        repo, _, version = tag.rpartition(":")
        if repo in managed and version != "<none>" and tag not in keep:
            _docker("rmi", tag)
            removed.append(tag)
    return removed


# --- building -------------------------------------------------------------------------------


def _build_base(tag: str, variant: str = "base") -> None:
    if shutil.which(DEBOOTSTRAP) is None:
        raise ImageBuildError(
            "debootstrap is not installed; run `apt-get install -y debootstrap` and try again"
        )
    WORK_ROOT.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="sandbox-test-rootfs-", dir=WORK_ROOT))
    try:
        rootfs = workdir / "rootfs"
        cmd = debootstrap_command(rootfs, variant)
        _log(f"building {tag}: {' '.join(cmd)}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
            log = rootfs / "debootstrap" / "debootstrap.log"
            if log.is_file():
                tail += "\n--- debootstrap.log (tail) ---\n" + "\n".join(
                    log.read_text(errors="replace").splitlines()[-25:]
                )
            raise ImageBuildError(
                f"debootstrap failed (exit {proc.returncode}); is {MIRROR} reachable?\n{tail}"
            )
        for rel in BASE_PRUNE:
            target = rootfs / rel
            if target.is_dir() and not target.is_symlink():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            elif target.exists():
                target.unlink()
        # Docker provides these per container; debootstrap copied the host's.
        for rel in ("etc/hostname", "etc/resolv.conf"):
            with contextlib.suppress(FileNotFoundError):
                (rootfs / rel).unlink()
        _import_rootfs(rootfs, tag)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _import_rootfs(rootfs: Path, tag: str) -> None:
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert tar.stdout is not None
    try:
        imp = subprocess.run(
            [
                DOCKER,
                "import",
                "--change",
                f"LABEL {LABEL}=base",
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                " LANG=C.UTF-8",
                "--change",
                'CMD ["/bin/bash"]',
                "-",
                tag,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
        )
    finally:
        tar.stdout.close()
        tar_err = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
        tar_rc = tar.wait()
    if tar_rc != 0:
        raise ImageBuildError(f"tar of {rootfs} failed (exit {tar_rc}): {tar_err.strip()}")
    if imp.returncode != 0:
        raise ImageBuildError(f"docker import {tag} failed: {(imp.stderr or imp.stdout).strip()}")


def _build_image(name: str, tag: str, base: str) -> None:
    try:
        with host_files.build_context(_image_dir(name), WORK_ROOT) as context:
            _docker_build(name, tag, base, context)
    except host_files.HostFileMissing as exc:
        raise ImageBuildError(f"stand-in {name}: {exc}") from exc


def _docker_build(name: str, tag: str, base: str, context: Path) -> None:
    cmd = [
        DOCKER,
        "build",
        "--build-arg",
        f"BASE={base}",
        "--label",
        f"{LABEL}={name}",
        "-t",
        tag,
        str(context),
    ]
    _log(f"building {tag}")
    # The classic builder uses the local base as is; BuildKit may try to resolve it remotely.
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise ImageBuildError(f"docker build of {name} ({tag}) failed:\n{tail}")


def image_exists(tag: str) -> bool:
    """True when the engine has ``tag``; ImageBuildError when the engine cannot be asked."""
    return _image_exists(tag)


# --- helpers --------------------------------------------------------------------------------


def _image_dir(name: str) -> Path:
    folder = IMAGES_DIR / name
    if not (folder / "Dockerfile").is_file():
        known = ", ".join(available_images()) or "none"
        raise ImageBuildError(f"no stand-in image named {name!r} (known: {known})")
    return folder


def _ignored(path: Path) -> bool:
    return "__pycache__" in path.parts or path.suffix in {".pyc", ".pyo"}


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run([DOCKER, *args], capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise ImageBuildError(
            f"{DOCKER} not found; install docker.io (or set SANDBOX_TEST_DOCKER)"
        ) from exc
    if proc.returncode != 0:
        raise ImageBuildError(
            f"docker {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc


def _image_exists(tag: str) -> bool:
    try:
        proc = subprocess.run(
            [DOCKER, "image", "inspect", "--format", "{{.Id}}", tag],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError as exc:
        raise ImageBuildError(
            f"{DOCKER} not found; install docker.io (or set SANDBOX_TEST_DOCKER)"
        ) from exc
    if proc.returncode == 0:
        return True
    if "No such image" in proc.stderr or "No such object" in proc.stderr:
        return False
    raise ImageBuildError(
        f"cannot ask the Docker engine about {tag}: {proc.stderr.strip()}\n"
        "is dockerd running? (`nohup dockerd >/var/log/dockerd.log 2>&1 &`)"
    )


@contextlib.contextmanager
def file_lock(path: Path, log: Callable[[str], None]) -> Iterator[None]:
    """One build at a time across pytest processes (and a second CI run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another build to finish (lock {path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


# --- script ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="images.py", description="Build the local stand-in images used by the tests."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the base and all (or the named) stand-ins")
    build.add_argument("names", nargs="*", help=f"default: all ({', '.join(available_images())})")
    sub.add_parser("list", help="print each image's expected tag and whether it is built")
    sub.add_parser("prune", help="remove stale tags of the base and the stand-ins (old hashes)")
    args = parser.parse_args(argv)

    try:
        if args.command == "list":
            for variant in BASES:
                base = base_tag(variant)
                print(f"{base}\t{'built' if _image_exists(base) else 'missing'}")
            for name in available_images():
                tag = image_tag(name)
                print(f"{tag}\t{'built' if _image_exists(tag) else 'missing'}")
            return 0
        if args.command == "prune":
            for tag in prune():
                print(f"removed {tag}")
            return 0
        names = args.names or available_images()
        started = time.monotonic()
        print(ensure_base())
        for name in names:
            print(ensure_image(name))
        _log(f"done in {time.monotonic() - started:.1f}s")
    except ImageBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
