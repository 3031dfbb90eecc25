"""How a release is built: the wheel and sdist, pinned constraints, an offline wheelhouse, and
the pinned images as `docker save` tarballs.

    python packaging/build.py constraints            # rewrite packaging/constraints.txt
    python packaging/build.py dist OUT               # OUT/sandbox_agent-*.whl and .tar.gz
    python packaging/build.py wheelhouse OUT         # the wheel + every dependency, pinned
    python packaging/build.py images OUT [REF ...]   # OUT/images/*.tar + manifest.json
    python packaging/build.py bundle OUT             # wheelhouse + images: an offline install

A bundle folder is what the StackScript takes as SANDBOX_AGENT_SOURCE: pip installs from it
with no index (`--no-index --find-links`), and the images step loads OUT/images instead of
pulling. The release publishes constraints.txt beside the wheel; the StackScript installs the
pinned version under it, so every box gets the same dependencies.
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

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "packaging" / "constraints.txt"
PROJECT = "sandbox-agent"


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def runtime_pins(project: str = PROJECT) -> dict[str, str]:
    """name -> installed version for the project's runtime dependencies, recursively."""
    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    todo = [project]
    while todo:
        dist = metadata.distribution(todo.pop())
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            name = _name(req.name)
            if name not in pins:
                pins[name] = metadata.version(req.name)
                todo.append(req.name)
    return dict(sorted(pins.items()))


def write_constraints(path: Path = CONSTRAINTS) -> Path:
    lines = [f"{name}=={version}" for name, version in runtime_pins().items()]
    header = "# Runtime dependencies of sandbox-agent, pinned (packaging/build.py constraints).\n"
    path.write_text(header + "\n".join(lines) + "\n")
    return path


def build_dist(out: Path) -> list[Path]:
    """The wheel and the sdist, built here without network (no build isolation)."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
             "-w", str(out), str(ROOT)],
            check=True,
            cwd=tmp,
        )
    code = (
        "import sys; from setuptools import build_meta as b; "
        "print(b.build_sdist(sys.argv[1]))"
    )
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd=ROOT,
                   capture_output=True)
    shutil.rmtree(ROOT / "sandbox_agent.egg-info", ignore_errors=True)
    return sorted(out.glob("sandbox_agent-*"))


def build_wheelhouse(out: Path, deps_cache: Path | None = None) -> Path:
    """The agent's wheel and every dependency's wheel under the pinned constraints.

    `deps_cache`: a folder of dependency wheels from an earlier run (tests cache it by the
    constraints' content); only the agent's own wheel is rebuilt then."""
    out.mkdir(parents=True, exist_ok=True)
    wheel = next(p for p in build_dist(out) if p.suffix == ".whl")
    shutil.copy2(CONSTRAINTS, out / "constraints.txt")
    if deps_cache is not None and any(deps_cache.glob("*.whl")):
        for dep in deps_cache.glob("*.whl"):
            shutil.copy2(dep, out / dep.name)
        return out
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
         "-c", str(CONSTRAINTS), "-w", str(out), str(wheel)],
        check=True,
    )
    return out


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("constraints")
    for name in ("dist", "wheelhouse", "bundle"):
        sub.add_parser(name).add_argument("out", type=Path)
    images = sub.add_parser("images")
    images.add_argument("out", type=Path)
    images.add_argument("refs", nargs="*")
    args = parser.parse_args(argv)
    if args.what == "constraints":
        print(write_constraints())
    elif args.what == "dist":
        for path in build_dist(args.out):
            print(path)
    elif args.what == "wheelhouse":
        print(build_wheelhouse(args.out))
    elif args.what == "images":
        print(save_images(args.out, args.refs or pinned_images()))
    else:
        build_wheelhouse(args.out)
        save_images(args.out, pinned_images())
        print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
