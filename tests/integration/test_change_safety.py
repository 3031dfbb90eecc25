"""Issue 14 c, d, e (and a at the real save path) on the real engine with the stand-ins and the
local Hub server: `switch-model` as a careless operator and a hostile box run it.

- c: settings variables left exported are refused (never applied, never saved); the same
  change without them saves only what it changes, through a planted `.bak` link untouched.
- e: the maintenance lock is free while the new model downloads (the watchdog keeps watching
  the old one), and held from the save to the end of the gate.
- d: Ctrl-C or SIGTERM in the gate rolls back; a switch killed with a relative `--config` is
  repaired from another folder without a stray settings file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent import maintenance, settings
from tests.conftest import AGENT, agent_env
from tests.fakes.hub_server import running_hub
from tests.integration.stack_support import fake_snapshot, remove_project
from tests.integration.test_switch import Box, repo

pytestmark = pytest.mark.docker
VICTIM = "a file the agent must never write\n"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    with running_hub() as hub:
        hub.add_repo("acme/other", repo())
        hub.add_repo("acme/observed", repo({"load_seconds": 3}))  # a gate that lasts a while
        hub.add_repo("acme/slow", repo({"load_seconds": 60}))  # never ready within 20 s
        hub.add_repo("acme/raced", repo())
        folder = tmp_path_factory.mktemp("change")
        b = Box(folder, hub)
        fake_snapshot(folder / "models", "acme/tiny-chat")
        ran = b.run("up")
        assert ran.returncode == 0, ran.stderr[-3000:]
        (folder / "ui_data" / "webui.db").write_bytes(b"chat history that must survive")
        try:
            yield b
        finally:
            remove_project(b.client, b.project)


def on_disk(box: Box) -> dict:
    """The settings the file holds, with nothing from this process's environment."""
    return settings.load(box.config).as_dict()


def changed_keys(before: dict, after: dict, prefix: str = "") -> set[str]:
    found: set[str] = set()
    for key in before.keys() | after.keys():
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found |= changed_keys(old, new, f"{prefix}{key}.")
        elif old != new:
            found.add(prefix + key)
    return found


def test_stray_settings_variables_are_refused_and_the_change_alone_is_saved(
    box: Box, tmp_path: Path
) -> None:
    before, ids, settings_before = box.state(), box.ids(), on_disk(box)
    stray = {"API_PORT": "9999", "HF_ENDPOINT": "http://127.0.0.1:1", "UI_DATA_DIR": "/srv/x"}
    ran = box.run("switch-model", "acme/other", "--yes", env=stray)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert (
        "error: API_PORT, HF_ENDPOINT, UI_DATA_DIR: are set in this environment and outrank the "
        "settings file; a change applies and saves only what it changes, so `switch-model` "
        "refuses while a settings variable is set; nothing was changed"
    ) in ran.stderr
    assert (
        "fix: unset API_PORT HF_ENDPOINT UI_DATA_DIR, then run `sandbox-agent switch-model` "
        "again (to change another setting: edit the settings file, then run `sandbox-agent up`)"
    ) in ran.stderr
    ran = box.run("update", "--yes", env={"HF_ENDPOINT": "http://127.0.0.1:1"})
    assert ran.returncode == 2
    assert "error: HF_ENDPOINT: is set in this environment and outranks the settings" in ran.stderr
    assert box.state() == before and box.ids() == ids and box.answers("tiny")
    assert not (box.folder / "state" / "change.json").exists()

    # the same change without them; a planted .bak link is replaced, never written through
    victim = tmp_path / "victim"
    victim.write_text(VICTIM)
    os.chmod(victim, 0o600)
    bak = box.config.with_name("config.yaml.bak")
    bak.unlink(missing_ok=True)
    bak.symlink_to(victim)
    ran = box.run("switch-model", "acme/other", "--yes")
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "model: acme/tiny-chat -> acme/other" in ran.stdout
    assert box.answers("acme/other")
    assert changed_keys(settings_before, on_disk(box)) == {"model.id", "model.served_name"}
    assert victim.read_text() == VICTIM and (victim.stat().st_mode & 0o777) == 0o600
    assert not bak.is_symlink() and bak.read_text() == before[0]
    assert (bak.stat().st_mode & 0o777) == 0o644


def test_the_lock_is_free_while_the_model_downloads_and_held_through_the_gate(box: Box) -> None:
    state = box.folder / "state"
    seen: list[tuple[str, maintenance.Maintenance | None]] = []

    def downloading(repo_id: str, path: str) -> None:
        if repo_id == "acme/observed":
            seen.append((path, maintenance.current(state)))
            time.sleep(0.5)  # the download held: the agent waits for its bytes now

    box.hub.on_download = downloading
    gate: list[maintenance.Maintenance | None] = []
    child = subprocess.Popen(
        [AGENT, "switch-model", "acme/observed", "--yes", "--config", str(box.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=agent_env(),
    )
    stop = threading.Event()

    def watch_the_gate() -> None:
        journal = maintenance.journal(state)
        while not stop.is_set():
            record = journal.read()
            if record is not None and record.get("phase") == "starting":
                gate.append(maintenance.current(state))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_the_gate, daemon=True)
    watcher.start()
    try:
        out, err = child.communicate(timeout=180)
    finally:
        stop.set()
        watcher.join()
        box.hub.on_download = None
    assert child.returncode == 0, err[-3000:]
    assert "model.safetensors" in [path for path, _ in seen], seen
    assert all(held is None for _, held in seen), seen  # the watchdog was free to watch
    assert len(gate) >= 10, gate  # the stand-in takes 3 s to load: the gate was seen
    assert all(h is not None and h.what == "switch-model acme/observed" for h in gate), gate
    assert box.answers("acme/observed") and maintenance.current(state) is None
    ran = box.run("switch-model", "acme/other", "--yes")  # back, for the tests below
    assert ran.returncode == 0, ran.stderr[-3000:]


def test_a_change_landing_while_the_model_downloads_is_not_overwritten(box: Box) -> None:
    """The lock is free during the download, so another change can land meanwhile: the
    switch sees it under the lock, before its save, and refuses."""
    mine = box.config.read_text()
    data = yaml.safe_load(mine)
    data["model"]["served_name"] = "raced"
    other = yaml.safe_dump(data)

    def downloading(repo_id: str, path: str) -> None:
        if repo_id == "acme/raced" and path == "model.safetensors":
            box.config.write_text(other)  # what another switch-model saved meanwhile

    box.hub.on_download = downloading
    try:
        ran = box.run("switch-model", "acme/raced", "--yes")
    finally:
        box.hub.on_download = None
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert (
        "error: the settings changed while this change was prepared (another change ran "
        "meanwhile); nothing was changed"
    ) in ran.stderr
    assert "fix: see `sandbox-agent status`, then run the command again" in ran.stderr
    assert box.config.read_text() == other and box.answers("acme/other")
    assert not (box.folder / "state" / "change.json").exists()
    ran = box.run("up")  # the stack brought to the file as it is now
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert box.answers("raced")
    box.config.write_text(mine)  # and back, for the tests below
    assert box.run("up").returncode == 0 and box.answers("acme/other")


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_phase(box: Box, phase: str, child: subprocess.Popen) -> None:
    journal = box.folder / "state" / "change.json"
    for _ in range(1200):
        text = journal.read_text() if journal.exists() else ""
        if f'"phase": "{phase}"' in text:
            return
        assert child.poll() is None, child.communicate()
        time.sleep(0.1)
    pytest.fail(f"the switch never reached its {phase} phase")


@pytest.mark.parametrize(
    "sig, code, said",
    [
        pytest.param(signal.SIGTERM, 128 + signal.SIGTERM, "", id="sigterm"),
        pytest.param(signal.SIGINT, 130, "interrupted\n", id="ctrl-c"),
    ],
)
def test_a_signal_in_the_gate_rolls_the_switch_back(
    box: Box, sig: signal.Signals, code: int, said: str
) -> None:
    before, ids = box.state(), box.ids()
    child = subprocess.Popen(
        [AGENT, "switch-model", "acme/slow", "--yes", "--config", str(box.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=agent_env(),
        # as a terminal starts it: a runner in the background (tests/run.sh's slices) hands
        # its children SIGINT ignored, which the agent rightly keeps ignored (nohup)
        preexec_fn=_default_signals,
    )
    try:
        wait_for_phase(box, "starting", child)
        time.sleep(1.0)  # inside deploy.up: the old vLLM is being replaced, or waited for
        child.send_signal(sig)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == code, out + err
    assert "interrupted: putting the previous one back" in out, out
    assert out.rstrip().endswith("rolled back: the previous configuration serves again"), out
    assert err.endswith(said) if said else "Traceback" not in err, err
    assert box.state() == before and box.answers("acme/other")
    assert box.ids()["open-webui"] == ids["open-webui"]
    assert not (box.folder / "state" / "change.json").exists()
    assert maintenance.current(box.folder / "state") is None


def test_a_switch_killed_with_a_relative_config_is_repaired_from_another_folder(
    box: Box, tmp_path: Path
) -> None:
    before = box.state()
    journal = box.folder / "state" / "change.json"
    child = subprocess.Popen(
        [AGENT, "switch-model", "acme/slow", "--yes", "--config", "config.yaml"],
        cwd=box.folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=agent_env(),
    )
    try:
        wait_for_phase(box, "starting", child)
        time.sleep(1.0)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert json.loads(journal.read_text())["config"] == str(box.config)  # recorded absolute
    assert yaml.safe_load(box.config.read_text())["model"]["id"] == "acme/slow"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shown = subprocess.run(
        [AGENT, "status", "--config", str(box.config)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=agent_env(),
        timeout=60,
    )
    assert "CHANGE HALF DONE: an interrupted switch-model left the settings half changed" in (
        shown.stdout
    )
    ran = subprocess.run(
        [AGENT, "up", "--config", os.path.relpath(box.config, elsewhere)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=agent_env(),
        timeout=180,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "an interrupted switch-model is repaired first" in ran.stdout
    assert list(elsewhere.iterdir()) == []  # no stray settings file where the repair ran
    assert box.state() == before and box.answers("acme/other")  # the old model, not again the new
    assert not journal.exists()
