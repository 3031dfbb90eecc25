"""The images step on the real engine: an offline bundle (image tarballs made with docker-py's
save, as packaging/build.py makes them) is loaded instead of pulling; without one, a missing
image that cannot be pulled fails with the registry's words and the fix."""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path

import pytest

from agent import settings
from agent.markers import BootState
from agent.steps import StepContext, StepFailed, Todo, images
from tests.fakes.wheelhouse import build_module
from tests.integration.stack_support import docker_client, standin_images

pytestmark = pytest.mark.docker


def ctx_for(tmp_path: Path, write_config, vllm: str, webui: str, bundle: Path | None):
    # registry.invalid named: the test is of a registry that cannot be reached, not refused
    images = {"vllm": vllm, "webui": webui, "registries": ["registry.invalid"]}
    s = settings.load(write_config({"images": images}))
    return StepContext(s, BootState(s.paths.state, "1"), root=tmp_path, bundle=bundle)


def test_a_bundle_is_loaded_instead_of_pulling(tmp_path: Path, write_config) -> None:
    client = docker_client()
    vllm, webui = standin_images()
    ref = f"sandbox-test/bundle-probe:{uuid.uuid4().hex[:8]}"
    client.images.get(vllm).tag(ref)
    bundle = tmp_path / "bundle"
    try:
        build_module().save_images(bundle, [ref])
        manifest = json.loads((bundle / "images/manifest.json").read_text())
        assert list(manifest["images"]) == [ref]
        client.images.remove(ref)  # the tag only: the box has never seen this image
        ctx = ctx_for(tmp_path, write_config, ref, webui, bundle)
        todo = images.check(ctx)
        assert isinstance(todo, Todo)
        tar = bundle / "images" / manifest["images"][ref]
        assert todo.reason == f"load {ref} from {tar}"
        images.apply(ctx)
        assert client.images.get(ref).id == client.images.get(vllm).id
        assert images.check(ctx).detail == f"{ref}, {webui} on the engine"  # type: ignore[union-attr]
    finally:
        with contextlib.suppress(Exception):  # already gone
            client.images.remove(ref)


def test_a_missing_image_with_no_registry_fails_with_the_fix(tmp_path: Path, write_config) -> None:
    _, webui = standin_images()
    ref = f"registry.invalid/nobody/none:{uuid.uuid4().hex[:6]}"
    ctx = ctx_for(tmp_path, write_config, ref, webui, None)
    assert images.check(ctx).reason == f"pull {ref}"  # type: ignore[union-attr]
    with pytest.raises(StepFailed) as err:
        images.apply(ctx)
    assert err.value.message.startswith(f"{ref} cannot be pulled: ")
    assert err.value.fix == (
        "check that this box reaches the registry, or deploy with an offline bundle"
    )


def test_a_bundle_naming_a_file_outside_it_is_refused(tmp_path: Path, write_config) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "images").mkdir(parents=True)
    (bundle / "images/manifest.json").write_text(json.dumps({"images": {"a/b:1": "../x.tar"}}))
    with pytest.raises(StepFailed, match=r"the bundle names '\.\./x\.tar' for a/b:1"):
        images.bundled(bundle)
