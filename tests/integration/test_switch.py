"""`switch-model` and `update` on the real engine with the stand-ins and the local Hub server,
as a person runs them: refused before anything changes, rolled back when the new one does not
come up, repaired after kill -9, and chat history (paths.ui_data) untouched throughout.

One stack for the module; the tests run in order against it, like a person's session."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent import maintenance
from agent.settings import PROXY_IMAGE
from tests.conftest import AGENT, agent_env
from tests.fakes import nvml
from tests.fakes.hub_server import HubServer, running_hub
from tests.integration.stack_support import (
    TINY_CONFIG,
    agent,
    docker_client,
    fake_snapshot,
    http,
    project_name,
    remove_project,
    standin_images,
    tree_digest,
    write_config,
)

pytestmark = pytest.mark.docker
CONFIG = TINY_CONFIG
BIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 8192,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "num_hidden_layers": 120,
    "intermediate_size": 28672,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
}


def repo(knobs: dict[str, Any] | None = None, config: dict[str, Any] | None = None) -> dict:
    files = {
        "config.json": json.dumps(config or CONFIG).encode(),
        "model.safetensors": b"\x01" * 100_000,
        "tokenizer.json": b"{}",
    }
    if knobs:
        files["standin.json"] = json.dumps(knobs).encode()  # the stand-in's behaviour
    return files


class Box:
    def __init__(self, folder: Path, hub: HubServer) -> None:
        self.folder, self.hub, self.client = folder, hub, docker_client()
        self.project = project_name("sw")
        self.images = standin_images()
        self.config = write_config(
            folder, self.project, self.images, hub={"endpoint": hub.url}, timeouts={"ready": 20}
        )
        self.api = f"http://127.0.0.1:{yaml.safe_load(self.config.read_text())['api']['port']}"

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Any:
        return agent(*args, "--config", str(self.config), env=env, timeout=timeout)

    def ids(self) -> dict[str, str]:
        found = self.client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={self.project}"}
        )
        return {c.labels["com.docker.compose.service"]: c.id for c in found}

    def key(self) -> str:
        return (self.folder / "secrets" / "api_key").read_text().strip()

    def answers(self, model: str) -> bool:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        status, _ = http(f"{self.api}/v1/chat/completions", key=self.key(), body=body)
        return status == 200

    def state(self) -> tuple[str, dict[str, str]]:
        """What must not change when a change is refused or rolled back."""
        return self.config.read_text(), tree_digest(self.folder / "ui_data")


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    with running_hub() as hub:
        hub.add_repo("acme/other", repo())
        # both print the key they were given: the log lines a rollback shows are redacted
        hub.add_repo("acme/never-ready", repo({"health": "fail", "print_key": True}))
        hub.add_repo("acme/crasher", repo({"crash_after": 0, "print_key": True}))
        hub.add_repo("acme/slow", repo({"load_seconds": 60}))
        hub.add_repo("acme/huge", repo(config={**CONFIG, "hidden_size": 16384,
                                               "num_hidden_layers": 400}))  # fmt: skip
        # about 209 GB of weights by its config (no weight files: the fit estimates them):
        # fits 8 x 80 GB, not 2 x 80 GB
        hub.add_repo("acme/big", {"config.json": json.dumps(BIG).encode(), "tokenizer.json": b"{}"})
        folder = tmp_path_factory.mktemp("switch")
        b = Box(folder, hub)
        fake_snapshot(folder / "models", "acme/tiny-chat")
        ran = b.run("up")
        assert ran.returncode == 0, ran.stderr[-3000:]
        (folder / "ui_data" / "webui.db").write_bytes(b"chat history that must survive")
        try:
            yield b
        finally:
            remove_project(b.client, b.project)


def test_a_model_that_does_not_exist_or_is_not_an_id_is_refused_with_nothing_changed(
    box: Box,
) -> None:
    before, ids = box.state(), box.ids()
    ran = box.run("switch-model", "acme/nope", "--yes")
    assert (
        ran.returncode == 1 and "error: acme/nope was not found on http://127.0.0.1" in ran.stderr
    )
    ran = box.run("switch-model", "acme/../etc", "--yes")
    assert (
        ran.returncode == 2
        and "error: MODEL: 'acme/../etc' is not a Hugging Face repo id" in ran.stderr
    )
    ran = box.run("switch-model", "acme/other")  # no terminal, no --yes
    assert ran.returncode == 2 and "error: --yes: this changes the running stack" in ran.stderr
    # a setting the environment sets would undo the switch at the next command
    ran = box.run("switch-model", "acme/other", "--yes", env={"MODEL_ID": "acme/tiny-chat"})
    assert ran.returncode == 2, ran.stderr
    assert "error: MODEL_ID: is set in this environment and outranks the settings file" in (
        ran.stderr
    )
    assert "fix: unset MODEL_ID, then run `sandbox-agent switch-model` again" in ran.stderr
    ran = box.run("update", "--yes", env={"VLLM_IMAGE": box.images[0]})
    assert ran.returncode == 2 and "error: VLLM_IMAGE: is set in this environment" in ran.stderr
    assert box.state() == before and box.ids() == ids and box.answers("tiny")


def test_a_model_that_does_not_fit_is_refused_before_its_weights_are_fetched(
    box: Box, fake_nvml_dir: Path, tmp_path: Path
) -> None:
    scenario = nvml.SCENARIOS["one_20gb"].write(tmp_path / "scenario")
    env = nvml.fake_env(fake_nvml_dir, scenario, base=agent_env())
    before, ids = box.state(), box.ids()
    data = yaml.safe_load(box.config.read_text())
    cfg = tmp_path / "gpu.yaml"
    cfg.write_text(yaml.safe_dump({**data, "gpus": "auto"}))
    ran = subprocess.run([AGENT, "switch-model", "acme/huge", "--yes", "--config", str(cfg)],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert ran.returncode == 1 and "error: the model does not fit" in ran.stderr, ran.stderr
    fetched = [p.name for p in (box.folder / "models/hub/models--acme--huge").rglob("*")]
    assert "model.safetensors" not in fetched  # config.json only: it is what the fit reads
    assert box.state() == before and box.ids() == ids


def test_a_switch_fits_on_the_gpus_the_settings_give_not_on_every_gpu_of_the_box(
    box: Box, fake_nvml_dir: Path, tmp_path: Path
) -> None:
    """`gpus: 2` on an 8-GPU box: a model that fits 8 GPUs but not 2 is refused before a byte
    of it is downloaded (it used to pass its own check, download, and fail inside `up`)."""
    scenario = nvml.SCENARIOS["eight_80gb"].write(tmp_path / "scenario")
    env = nvml.fake_env(fake_nvml_dir, scenario, base=agent_env())
    before, ids = box.state(), box.ids()
    data = yaml.safe_load(box.config.read_text())
    cfg = tmp_path / "two.yaml"
    cfg.write_text(yaml.safe_dump({**data, "gpus": 2}))
    asked = len(box.hub.requests)
    ran = subprocess.run([AGENT, "switch-model", "acme/big", "--yes", "--config", str(cfg)],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert ran.returncode == 1, ran.stderr
    assert "error: the model does not fit: on 2 of 2 GPU(s)" in ran.stderr, ran.stderr
    downloads = [r.path for r in box.hub.requests[asked:] if "/resolve/" in r.path]
    assert all(path.endswith("/config.json") for path in downloads), downloads
    fetched = [p.name for p in (box.folder / "models/hub/models--acme--big").rglob("*")]
    assert "tokenizer.json" not in fetched  # config.json only: it is what the fit reads
    assert box.state() == before and box.ids() == ids
    # the same model on all eight passes the fit (so the refusal above is the `gpus` setting's)
    cfg.write_text(yaml.safe_dump({**data, "gpus": 8}))
    fit = subprocess.run([AGENT, "model", "fit", "acme/big", "--config", str(cfg)],
                         capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert fit.returncode == 0, fit.stdout + fit.stderr
    assert "acme/big on 8 x" in fit.stdout and "fits: tensor_parallel_size 8" in fit.stdout


def test_a_second_change_while_one_runs_is_refused_naming_it(box: Box) -> None:
    before = box.state()
    with maintenance.hold(box.folder / "state", "update"):
        ran = box.run("switch-model", "acme/other", "--yes")
    assert ran.returncode == 1
    assert "error: another change is running: update (pid" in ran.stderr
    assert box.state() == before


@pytest.mark.parametrize(
    "model, why",
    [
        pytest.param("acme/never-ready", "not ready after 20s", id="never-ready"),
        pytest.param("acme/crasher", "container", id="crashes-at-load"),
    ],
)
def test_a_new_model_that_does_not_come_up_is_rolled_back(box: Box, model: str, why: str) -> None:
    before, ids = box.state(), box.ids()
    ran = box.run("switch-model", model, "--yes")
    assert ran.returncode == 1, ran.stdout
    assert (
        why in ran.stderr and "rolled back: the previous configuration serves again" in ran.stderr
    )
    assert "last log lines of vllm" in ran.stderr and box.key() not in ran.stderr
    if model == "acme/crasher":  # its last lines hold the key it printed: shown redacted
        assert "api key [REDACTED] loaded" in ran.stderr, ran.stderr
    assert box.answers("tiny")  # the old model answers a completion again
    assert box.state() == before  # settings back, chat history byte-identical
    assert box.ids()["open-webui"] == ids["open-webui"]  # the UI was never replaced
    assert not (box.folder / "state" / "change.json").exists()


def test_a_good_switch_serves_the_new_model_with_the_same_key(box: Box) -> None:
    key, ids, history = box.key(), box.ids(), tree_digest(box.folder / "ui_data")
    ran = box.run("switch-model", "acme/other", "--yes", "--json")
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(ran.stdout)
    assert result["changed"] and result["after"] == {
        "model": "acme/other",
        "served_name": "acme/other",
    }
    assert result["actions"] == {"vllm": "recreated", "open-webui": "kept"}
    assert box.key() == key and box.answers("acme/other") and not box.answers("tiny")
    assert box.ids()["open-webui"] == ids["open-webui"]
    assert tree_digest(box.folder / "ui_data") == history
    checks = {c["id"]: c for c in json.loads(box.run("doctor", "--json").stdout)["checks"]}
    assert checks["stack.ui"]["status"] == "ok" and "'acme/other'" in checks["stack.ui"]["summary"]
    listed = {
        m["repo_id"]: m for m in json.loads(box.run("model", "list", "--json").stdout)["models"]
    }
    assert listed["acme/tiny-chat"]["complete"]  # the old model stays for a rollback
    ran = box.run("model", "rm", "acme/other")
    assert ran.returncode == 1 and "is the serving model" in ran.stderr


def test_a_switch_killed_while_starting_is_repaired_by_the_next_up(box: Box) -> None:
    before = box.state()
    journal = box.folder / "state" / "change.json"
    child = subprocess.Popen(
        [AGENT, "switch-model", "acme/slow", "--yes", "--config", str(box.config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=agent_env(),
    )  # fmt: skip
    try:
        for _ in range(600):
            text = journal.read_text() if journal.exists() else ""
            if '"phase": "starting"' in text:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the switch never reached its starting phase")
        time.sleep(1.0)  # inside deploy.up: the old vLLM is being replaced
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert journal.exists()
    ran = box.run("up")
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "an interrupted switch-model is repaired first" in ran.stdout
    assert box.state() == before and box.answers("acme/other")  # one model, settings agreeing
    assert not journal.exists()


def test_update_to_an_image_that_cannot_be_pulled_changes_nothing(box: Box) -> None:
    before, ids = box.state(), box.ids()
    # a registry the settings do not name: refused as bad input, before any pull (issue 14 i)
    ran = box.run("update", "--vllm-image", "registry.invalid/vllm:v1", "--yes")
    assert ran.returncode == 2 and ran.stderr.startswith(
        "error: images.vllm (from command line): 'registry.invalid/vllm:v1' comes from "
        "registry.invalid, a registry that images.registries does not name"
    ), ran.stderr
    assert box.state() == before and box.ids() == ids
    # named in the settings file (a change refuses settings variables), it is tried, and
    # cannot be pulled
    saved = box.config.read_text()
    data = yaml.safe_load(saved)
    box.config.write_text(
        yaml.safe_dump(
            {**data, "images": {**data.get("images", {}), "registries": ["registry.invalid"]}}
        )
    )
    try:
        named = box.state()
        ran = box.run("update", "--vllm-image", "registry.invalid/vllm:v1", "--yes")
        assert ran.returncode == 1, ran.stderr
        assert (
            "error: the image registry.invalid/vllm:v1 is not on this machine and cannot be pulled"
            in ran.stderr
        )
        assert box.state() == named and box.ids() == ids
    finally:
        box.config.write_text(saved)
    assert box.state() == before


@pytest.mark.parametrize("image", ["vllm/vllm-openai:v0.30.0", "vllm/vllm-openai:0.30.0"])
def test_update_refuses_a_cuda13_image_on_an_old_driver(
    box: Box, fake_nvml_dir: Path, tmp_path: Path, image: str
) -> None:
    scenario = nvml.SCENARIOS["old_driver"].write(tmp_path / "scenario")
    env = nvml.fake_env(fake_nvml_dir, scenario, base=agent_env())
    before = box.state()
    ran = subprocess.run(
        [AGENT, "update", "--vllm-image", image, "--yes", "--config", str(box.config)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 1
    # doctor's words (agent.gpu.cuda): the tag without its `v` is the same CUDA 13 release
    assert (f"error: driver 535.183.01 is too old for {image}: a CUDA 13 build needs 580 or "
            "newer (it runs CUDA 12.2 at most); nothing was changed") in ran.stderr  # fmt: skip
    assert (f"fix: use the CUDA 12.9 build of the same release (`sandbox-agent update "
            f"--vllm-image {image}-cu129`), or install the 580 driver branch and reboot"
            ) in ran.stderr  # fmt: skip
    assert box.state() == before


def test_update_whose_new_vllm_fails_its_gate_is_rolled_back(box: Box) -> None:
    broken = f"sandbox-test/vllm-broken:{box.project}"
    dockerfile = f"FROM {box.images[0]}\nENV STANDIN_HEALTH=fail\n"
    box.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=broken, rm=True)
    try:
        before, ids = box.state(), box.ids()
        ran = box.run("update", "--vllm-image", broken, "--webui-image", box.images[1], "--yes")
        assert ran.returncode == 1, ran.stdout
        assert "rolled back: the previous configuration serves again" in ran.stderr
        assert box.state() == before and box.answers("acme/other")
        assert box.ids()["open-webui"] == ids["open-webui"]
        [vllm] = [c for c in box.client.containers.list() if c.name == f"{box.project}-vllm-1"]
        assert vllm.attrs["Config"]["Image"] == box.images[0]  # the old image serves
    finally:
        remove_project(box.client, "none")  # nothing of ours is labelled so; keeps the image
        box.client.images.remove(broken, force=True)


@pytest.fixture(scope="module")
def tags(box: Box) -> Iterator[dict[str, str]]:
    """Second tags of the stand-in images: other references, the same image ids."""
    made = {
        "vllm2": (box.images[0], "sandbox-test/vllm-standin", f"second-{box.project}"),
        "vllm3": (box.images[0], "sandbox-test/vllm-standin", f"third-{box.project}"),
        "webui2": (box.images[1], "sandbox-test/webui-standin", f"second-{box.project}"),
    }
    for image, repository, tag in made.values():
        assert box.client.images.get(image).tag(repository, tag)
    try:
        yield {name: f"{repository}:{tag}" for name, (_, repository, tag) in made.items()}
    finally:
        for _, repository, tag in made.values():
            box.client.images.remove(f"{repository}:{tag}")  # the tag only: the image stays


def image_of(box: Box, service: str) -> str:
    return str(box.client.containers.get(box.ids()[service]).attrs["Config"]["Image"])


def test_update_of_the_webui_image_recreates_open_webui_only(box: Box, tags: dict) -> None:
    key, ids, before = box.key(), box.ids(), box.state()
    ran = box.run("update", "--webui-image", tags["webui2"], "--yes", "--json")
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(ran.stdout)
    assert result["changed"] and result["kind"] == "update"
    assert result["before"] == {"vllm": box.images[0], "webui": box.images[1]}
    assert result["after"] == {"vllm": box.images[0], "webui": tags["webui2"]}
    assert result["actions"] == {"vllm": "kept", "open-webui": "recreated"}
    now = box.ids()
    assert now["vllm"] == ids["vllm"] and now["open-webui"] != ids["open-webui"]
    assert image_of(box, "open-webui") == tags["webui2"]
    assert box.key() == key and box.answers("acme/other")
    assert tree_digest(box.folder / "ui_data") == before[1]  # chat history byte-identical
    saved = yaml.safe_load(box.config.read_text())
    # the proxy's image stays at its pin (no proxy runs here: nothing faces the network)
    assert saved["images"] == {
        "vllm": box.images[0],
        "webui": tags["webui2"],
        "proxy": PROXY_IMAGE,
        "registries": [],
    }
    assert (box.folder / "config.yaml.bak").read_text() == before[0]
    assert not (box.folder / "state" / "change.json").exists()
    # and back, as a person reads it
    ran = box.run("update", "--webui-image", box.images[1], "--yes")
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert f"webui: {tags['webui2']} -> {box.images[1]}" in ran.stdout
    assert "vllm:" not in ran.stdout.split("moving open-webui")[1]  # only what changed
    assert "(vllm kept, open-webui recreated)" in ran.stdout.splitlines()[-1]
    assert box.ids()["vllm"] == ids["vllm"] and box.state() == before


def test_update_of_both_images_moves_vllm_then_open_webui_each_gated(box: Box, tags: dict) -> None:
    key, ids, before = box.key(), box.ids(), box.state()
    ran = box.run("update", "--vllm-image", tags["vllm2"], "--webui-image", tags["webui2"],
                  "--yes")  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    out = ran.stdout
    first, second = (
        out.index(f"moving vllm to {tags['vllm2']}"),
        out.index(f"moving open-webui to {tags['webui2']}"),
    )
    assert first < second  # one service at a time, vLLM first
    assert "vllm recreated, open-webui kept" in out[first:second]  # the UI waits its turn
    assert "ok after" in out[first:second]  # vLLM gated before the UI moves
    assert "vllm kept, open-webui recreated" in out[second:] and "ok after" in out[second:]
    assert f"vllm: {box.images[0]} -> {tags['vllm2']}" in out
    assert f"webui: {box.images[1]} -> {tags['webui2']}" in out
    assert "(vllm recreated, open-webui recreated)" in out.splitlines()[-1]
    now = box.ids()
    assert now["vllm"] != ids["vllm"] and now["open-webui"] != ids["open-webui"]
    assert image_of(box, "vllm") == tags["vllm2"] and image_of(box, "open-webui") == tags["webui2"]
    assert box.key() == key and box.answers("acme/other")
    assert tree_digest(box.folder / "ui_data") == before[1]
    saved = yaml.safe_load(box.config.read_text())
    assert saved["images"] == {
        "vllm": tags["vllm2"],
        "webui": tags["webui2"],
        "proxy": PROXY_IMAGE,
        "registries": [],
    }
    assert (box.folder / "config.yaml.bak").read_text() == before[0]  # from before the update


def test_update_whose_webui_fails_after_vllm_moved_rolls_the_whole_update_back(
    box: Box, tags: dict
) -> None:
    broken = f"sandbox-test/webui-broken:{box.project}"
    dockerfile = f"FROM {box.images[1]}\nENV STANDIN_HEALTH=fail\n"
    box.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=broken, rm=True)
    try:
        before, key = box.state(), box.key()  # vllm2 and webui2, from the test above
        ran = box.run("update", "--vllm-image", tags["vllm3"], "--webui-image", broken, "--yes")
        assert ran.returncode == 1, ran.stdout
        assert ran.stdout.index(f"moving vllm to {tags['vllm3']}") < ran.stdout.index(
            f"moving open-webui to {broken}"
        )  # vLLM did move and pass its gate first
        assert "error: Open WebUI" in ran.stderr and "not ready after 20s" in ran.stderr
        assert "last log lines of open-webui" in ran.stderr
        assert (
            f"rolled back the whole update: vllm is back on {tags['vllm2']} too (it had come up "
            f"on {tags['vllm3']}); the previous configuration serves again"
        ) in ran.stderr
        assert box.state() == before and box.key() == key  # settings and chat history as before
        assert image_of(box, "vllm") == tags["vllm2"]  # not left on the new image
        assert image_of(box, "open-webui") == tags["webui2"]
        assert box.answers("acme/other")
        assert not (box.folder / "state" / "change.json").exists()
    finally:
        ran = box.run("update", "--vllm-image", box.images[0], "--webui-image", box.images[1],
                      "--yes")  # fmt: skip
        assert ran.returncode == 0, ran.stderr[-3000:]
        box.client.images.remove(broken, force=True)
