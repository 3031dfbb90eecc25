"""How a release is built: the wheel, the hash-locked requirements and the stamped StackScript,
an offline wheelhouse, and the pinned images as `docker save` tarballs.

    python packaging/build.py constraints            # rewrite packaging/constraints.txt
    python packaging/build.py dist OUT               # OUT/linode_ai_sandbox_agent-*.whl, .tar.gz
    python packaging/build.py release OUT --base-url URL [--find-links DIR]
    python packaging/build.py wheelhouse OUT         # the wheel + every dependency, hash-locked
    python packaging/build.py images OUT [REF ...]   # OUT/images/*.tar + manifest.json
    python packaging/build.py bundle OUT             # wheelhouse + images: an offline install

`release` writes OUT/ to publish at URL: the agent's wheel, requirements.txt (every pin of
constraints.txt the agent needs, with the sha256 of each of its wheels for CPython 3.10-3.13 on
manylinux x86_64 and aarch64: packaging/hashlock.py), and stackscript.sh, the template at the
top of the checkout stamped with URL and the sha256 of the wheel and of requirements.txt: the
StackScript to deploy. The dependencies' wheels come from the index pip is configured with, or
with --find-links from a folder only (the hashes are then those of the wheels found there).

A bundle folder is what the StackScript takes as SANDBOX_AGENT_SOURCE: pip installs from it
with no index and --require-hashes (its own requirements.txt), and the images step loads
OUT/images instead of pulling.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "packaging" / "constraints.txt"
TEMPLATE = ROOT / "stackscript.sh"
PROJECT = "linode-ai-sandbox-agent"  # the distribution; the import package is `agent`
WHEEL_PREFIX = PROJECT.replace("-", "_") + "-"
if str(ROOT / "packaging") not in sys.path:
    sys.path.insert(0, str(ROOT / "packaging"))
import hashlock  # noqa: E402  (packaging/hashlock.py, beside this script)


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def read_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            pins[_name(name)] = version
    return pins


def runtime_pins(old: dict[str, str] | None = None) -> dict[str, str]:
    """name -> version of every runtime dependency on every target (hashlock.TARGETS): the
    version installed here, else the pin kept from `old` (a dependency only another Python
    needs, such as tomli on 3.10, is not installed here; its own ones must be pinned too)."""
    from packaging.requirements import Requirement

    old = old or {}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for target in hashlock.TARGETS:
        env = target.environment()
        todo = [(text, PROJECT) for text in project["dependencies"]]
        seen: set[str] = set()
        while todo:
            text, by = todo.pop()
            req = Requirement(text)
            name = _name(req.name)
            if (req.marker is not None and not req.marker.evaluate(env)) or name in seen:
                continue
            seen.add(name)
            try:
                dist = metadata.distribution(req.name)
            except metadata.PackageNotFoundError:
                if name not in old:
                    raise hashlock.LockError(
                        f"{name} (needed by {by} on {target}) is not installed here: add "
                        f"`{name}==VERSION` to {CONSTRAINTS.name} by hand"
                    ) from None
                pins[name] = old[name]
                continue
            pins[name] = dist.version
            todo += [(t, name) for t in dist.requires or []]
    return dict(sorted(pins.items()))


def write_constraints(path: Path = CONSTRAINTS) -> Path:
    old = read_pins(path) if path.exists() else {}
    lines = [f"{name}=={version}" for name, version in runtime_pins(old).items()]
    header = (
        f"# Runtime dependencies of {PROJECT} on CPython {hashlock.PYTHONS[0]}-"
        f"{hashlock.PYTHONS[-1]}, pinned (packaging/build.py constraints).\n"
    )
    path.write_text(header + "\n".join(lines) + "\n")
    return path


def build_dist(out: Path) -> list[Path]:
    """The wheel and the sdist, built here without network (no build isolation)."""
    out.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([*pip, "-w", str(out), str(ROOT)], check=True, cwd=tmp)
    code = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    subprocess.run(
        [sys.executable, "-c", code, str(out)], check=True, cwd=ROOT, capture_output=True
    )
    shutil.rmtree(ROOT / f"{WHEEL_PREFIX[:-1]}.egg-info", ignore_errors=True)
    return sorted(out.glob(f"{WHEEL_PREFIX}*"))


def download_deps(out: Path) -> Path:
    """Every pin's wheel for this interpreter (what a bundle for a box like this one needs)."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([*hashlock.PIP_DOWNLOAD, "-d", str(out), "-r", str(CONSTRAINTS)], check=True)
    return out


def write_lock(
    out: Path, wheel: Path, folder: Path, pins: dict[str, str] | None = None
) -> tuple[Path, hashlock.Lock]:
    """OUT/requirements.txt for `wheel` and the dependencies' wheels in `folder`."""
    locked = hashlock.lock(wheel, folder, read_pins() if pins is None else pins)
    version = hashlock.wheel(wheel).version
    header = (
        f"{PROJECT} {version}: every wheel pip may install, by sha256 (packaging/build.py).\n"
        "pip install --require-hashes --only-binary=:all: -r requirements.txt, from this folder."
    )
    path = out / "requirements.txt"
    path.write_text(hashlock.requirements_txt(locked, header))
    return path, locked


def build_wheelhouse(out: Path, deps_cache: Path | None = None) -> Path:
    """The agent's wheel, every pinned dependency's wheel and OUT/requirements.txt locking them.

    `deps_cache`: a folder of dependency wheels from an earlier run (tests cache it by the
    constraints' content); only the agent's own wheel is rebuilt then."""
    out.mkdir(parents=True, exist_ok=True)
    wheel = next(p for p in build_dist(out) if p.suffix == ".whl")
    if deps_cache is not None and any(deps_cache.glob("*.whl")):
        for dep in deps_cache.glob("*.whl"):
            shutil.copy2(dep, out / dep.name)
    else:
        download_deps(out)
    write_lock(out, wheel, out)
    return out


def build_release(out: Path, base_url: str, find_links: Path | None = None) -> hashlock.Lock:
    """OUT/: the agent's wheel, requirements.txt and the stamped stackscript.sh."""
    url = hashlock.base_url(base_url)
    if find_links is not None and not find_links.is_dir():
        raise ValueError(f"--find-links {find_links}: not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        [built] = [p for p in build_dist(Path(tmp) / "dist") if p.suffix == ".whl"]
        wheel = Path(shutil.copy2(built, out / built.name))
        folder = find_links or Path(tmp) / "wheels"
        if find_links is None:
            folder.mkdir()
            hashlock.download(read_pins(), folder)
        requirements, locked = write_lock(out, wheel, folder)
    values = {
        "RELEASE_URL": url,
        "AGENT_WHEEL": wheel.name,
        "AGENT_SHA256": locked.agent_sha256,
        "REQUIREMENTS_SHA256": hashlock.sha256(requirements),
    }
    script = out / "stackscript.sh"
    script.write_text(hashlock.stamp(TEMPLATE.read_text(), values))
    script.chmod(0o755)
    return locked


def save_images(out: Path, refs: list[str]) -> Path:
    """`docker save` of each image (docker-py), and the manifest the images step reads."""
    sys.path.insert(0, str(ROOT))
    from agent import engine

    client = engine.connect()
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, str] = {}
    for ref in refs:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", ref) + ".tar"
        with (folder / name).open("wb") as fh:
            for chunk in client.images.get(ref).save(named=True):
                fh.write(chunk)
        manifest[ref] = name
    (folder / "manifest.json").write_text(json.dumps({"images": manifest}, indent=1) + "\n")
    return folder


def pinned_images() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from agent.settings import PROXY_IMAGE, VLLM_IMAGE, WEBUI_IMAGE

    return [VLLM_IMAGE, WEBUI_IMAGE, PROXY_IMAGE]


def report(locked: hashlock.Lock) -> str:
    """Which targets the release installs on, and what each of the others lacks."""
    lines = [f"complete for: {', '.join(map(str, locked.complete())) or 'no target'}"]
    lines += [
        f"no wheel for {target}: {', '.join(sorted(gaps))}"
        for target, gaps in sorted(locked.gaps.items())
        if gaps
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("constraints")
    for name in ("dist", "wheelhouse", "bundle"):
        sub.add_parser(name).add_argument("out", type=Path)
    release = sub.add_parser("release")
    release.add_argument("out", type=Path)
    release.add_argument("--base-url", required=True, help="where OUT/ is published")
    release.add_argument(
        "--find-links", type=Path, help="take the dependencies' wheels from this folder only"
    )
    images = sub.add_parser("images")
    images.add_argument("out", type=Path)
    images.add_argument("refs", nargs="*")
    args = parser.parse_args(argv)
    try:
        if args.what == "constraints":
            print(write_constraints())
        elif args.what == "dist":
            for path in build_dist(args.out):
                print(path)
        elif args.what == "release":
            locked = build_release(args.out, args.base_url, args.find_links)
            print(report(locked), file=sys.stderr)
            if not locked.complete():
                print("error: no target has every wheel it needs", file=sys.stderr)
                return 1
            print(args.out / "stackscript.sh")
        elif args.what == "wheelhouse":
            print(build_wheelhouse(args.out))
        elif args.what == "images":
            print(save_images(args.out, args.refs or pinned_images()))
        else:
            build_wheelhouse(args.out)
            save_images(args.out, pinned_images())
            print(args.out)
    except ValueError as exc:  # a bad argument
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except hashlock.LockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
