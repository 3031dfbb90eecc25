"""images: the pinned images on the engine, loaded from an offline bundle when one is there,
else pulled.

A bundle (`python packaging/build.py bundle DIR`) is a folder with `images/manifest.json`
({"images": {reference: file}}) and the `docker save` tarballs it names. Only references the
settings ask for are loaded, and a file is read only from the bundle's own folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from agent import engine
from agent.errors import AgentError
from agent.steps.base import Done, Outcome, StepContext, StepFailed, StepMeta, Todo

META = StepMeta("images", needs=("docker",), title="vLLM and Open WebUI images")
MANIFEST = "images/manifest.json"


def wanted(ctx: StepContext) -> list[str]:
    s = ctx.settings
    return [s.images.vllm, s.images.webui] if s.ui.enabled else [s.images.vllm]


def bundled(bundle: Path | None) -> dict[str, Path]:
    """reference -> tarball in the bundle (empty without a bundle)."""
    if bundle is None or not (bundle / MANIFEST).is_file():
        return {}
    try:
        data = json.loads((bundle / MANIFEST).read_text())
        listed = dict(data["images"])
    except (OSError, ValueError, KeyError, TypeError):
        raise StepFailed(
            f"{bundle / MANIFEST} cannot be read",
            fix="rebuild the bundle with `python packaging/build.py bundle DIR`",
        ) from None
    found: dict[str, Path] = {}
    for ref, name in listed.items():
        path = bundle / "images" / str(name)
        if "/" in str(name) or not path.is_file():
            raise StepFailed(f"the bundle names {name!r} for {ref}, which is not in it")
        found[str(ref)] = path
    return found


def _missing(ctx: StepContext) -> list[str]:
    from docker.errors import ImageNotFound

    client = ctx.client()
    missing = []
    for ref in wanted(ctx):
        with engine.engine_errors(f"the engine could not look up {ref}"):
            try:
                client.images.get(ref)
            except ImageNotFound:
                missing.append(ref)
    return missing


def check(ctx: StepContext) -> Outcome:
    try:
        missing = _missing(ctx)
    except (engine.EngineUnavailable, AgentError):
        return Todo(f"get {', '.join(wanted(ctx))} once Docker answers")
    if not missing:
        return Done(f"{', '.join(wanted(ctx))} on the engine")
    have = bundled(ctx.bundle)
    how = [f"load {r} from {have[r]}" if r in have else f"pull {r}" for r in missing]
    return Todo("; ".join(how))


def apply(ctx: StepContext) -> str | None:
    client = ctx.client()
    have = bundled(ctx.bundle)
    for ref in _missing(ctx):
        if ref in have:
            ctx.progress(META.id, f"loading {ref} from the bundle")
            with engine.engine_errors(f"could not load {have[ref]}"), have[ref].open("rb") as fh:
                client.images.load(fh)
        else:
            _pull(ctx, ref)
    if still := _missing(ctx):
        raise StepFailed(
            f"{', '.join(still)} is still not on the engine",
            fix="check images.vllm / images.webui, or the bundle's manifest",
        )
    return None


def _pull(ctx: StepContext, ref: str) -> None:
    from docker.errors import DockerException
    from docker.utils import parse_repository_tag

    repo, tag = parse_repository_tag(ref)
    ctx.progress(META.id, f"pulling {ref}")
    try:
        for event in ctx.client().api.pull(repo, tag=tag or "latest", stream=True, decode=True):
            if "error" in event:
                raise StepFailed(
                    f"{ref} cannot be pulled: {event['error']}",
                    fix="check that this box reaches the registry, or deploy with an offline "
                    "bundle (packaging/build.py bundle)",
                )
            detail = event.get("progressDetail") or {}
            if detail.get("total"):
                ctx.progress(
                    META.id,
                    f"{ref}: {detail.get('current', 0) / 1e9:.2f}/{detail['total'] / 1e9:.2f} GB",
                )
    except DockerException as exc:
        raise StepFailed(
            f"{ref} cannot be pulled: {engine.explain(exc)}",
            fix="check that this box reaches the registry, or deploy with an offline bundle",
        ) from None
