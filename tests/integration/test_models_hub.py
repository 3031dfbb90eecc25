"""The real huggingface_hub against a local Hub-protocol server (tests/fakes/hub_server.py)."""

from __future__ import annotations

import fcntl
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent import log, models, settings
from agent.errors import BadInput
from tests.fakes.hub_server import HubServer

MiB = 1 << 20
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "vocab_size": 1000,
    "torch_dtype": "bfloat16",
}


def tiny_files(weights: bytes = b"\x01" * 300_000) -> dict[str, bytes]:
    return {
        "config.json": json.dumps(CONFIG).encode(),
        "generation_config.json": b'{"temperature": 0.6}',
        "tokenizer.json": b'{"model": {"type": "BPE"}}',
        "tokenizer_config.json": b'{"chat_template": "{{ messages }}"}',
        "model.safetensors": weights,
        "pytorch_model.bin": b"BIN" + weights,  # the same weights again: never fetched
        "original/consolidated.00.pth": b"\x02" * 1000,
        "README.md": b"# tiny",
        ".gitattributes": b"*.safetensors filter=lfs",
    }


def make_settings(tmp_path: Path, hub: HubServer, **flags: object) -> settings.Settings:
    return settings.load(
        tmp_path / "absent.yaml",
        env={},
        flags={
            "hub.endpoint": hub.url,
            "paths.models": str(flags.pop("models", tmp_path / "models")),
            "paths.secrets": str(tmp_path / "secrets"),
            "model.id": flags.pop("model_id", "acme/serving"),
            **flags,
        },
    )


def pull(s: settings.Settings, name: str, **kwargs: object) -> models.PullResult:
    kwargs.setdefault("progress", "none")
    return models.pull(s, models.ModelRef.parse(name), **kwargs)


def test_pull_fetches_safetensors_config_and_tokenizer_but_no_bin(tmp_path, hub):
    commit = hub.add_repo("acme/tiny", tiny_files())
    s = make_settings(tmp_path, hub)
    result = pull(s, "acme/tiny")
    snap = tmp_path / "models/hub/models--acme--tiny/snapshots" / commit
    assert result.path == snap == models.snapshot_path(s, models.ModelRef("acme/tiny"))
    assert sorted(p.name for p in snap.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert (snap / "model.safetensors").read_bytes() == b"\x01" * 300_000
    assert hub.count("GET", "pytorch_model.bin") == 0 and hub.count("GET", "original/") == 0
    blobs = list((snap.parents[1] / "blobs").iterdir())
    assert len(blobs) == 5 and not [b for b in blobs if b.read_bytes().startswith(b"BIN")]
    assert (snap.parents[1] / "refs/main").read_text() == commit
    [cached] = models.list_models(s).models
    assert (cached.repo_id, cached.commit, cached.complete, cached.refs) == (
        "acme/tiny",
        commit,
        True,
        ("main",),
    )
    assert result.bytes_fetched >= 300_000 and not result.already_complete
    again = pull(s, "acme/tiny")
    assert again.already_complete and again.bytes_fetched == 0


def test_offline_load_after_pull_makes_no_request(tmp_path, hub):
    hub.add_repo("acme/tiny", tiny_files())
    s = make_settings(tmp_path, hub)
    expected = pull(s, "acme/tiny").path
    before = len(hub.requests)
    code = (
        "from huggingface_hub import snapshot_download, hf_hub_download\n"
        "print(snapshot_download('acme/tiny'))\n"
        "print(hf_hub_download('acme/tiny', 'config.json'))\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(s.paths.models),
        "HF_ENDPOINT": hub.url,
    }
    env.pop("HF_TOKEN", None)
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert out == [str(expected), str(expected / "config.json")]
    assert len(hub.requests) == before  # the server saw nothing


def test_gated_repo_without_token_names_the_token_and_fetches_nothing(tmp_path, hub):
    hub.add_repo("acme/gated", tiny_files(), gated="manual")
    s = make_settings(tmp_path, hub)
    with pytest.raises(models.GatedModel) as caught:
        pull(s, "acme/gated")
    text = str(caught.value)
    assert "gated" in text and "token" in text
    assert str(tmp_path / "secrets/hf_token") in text and "HF_TOKEN" in text
    assert "https://huggingface.co/acme/gated" in text
    assert hub.count(contains="/resolve/") == 0
    assert not list((tmp_path / "models").rglob("*.safetensors"))


def test_gated_repo_with_unapproved_token_says_to_accept_the_licence(tmp_path, hub):
    hub.add_repo("acme/gated", tiny_files(), gated="manual")
    hub.tokens |= {"hf_unapproved_token_0000000001", "hf_approved_token_00000000001"}
    hub.repos["acme/gated"].approved.add("hf_approved_token_00000000001")
    s = make_settings(tmp_path, hub)
    with pytest.raises(models.GatedModel, match="no access") as caught:
        pull(s, "acme/gated", token="hf_unapproved_token_0000000001")
    assert "accept the licence at https://huggingface.co/acme/gated" in caught.value.fix
    assert not list((tmp_path / "models").rglob("*.safetensors"))
    assert pull(s, "acme/gated", token="hf_approved_token_00000000001").files


def test_bad_token_is_reported_as_refused(tmp_path, hub):
    hub.add_repo("acme/tiny", tiny_files())
    with pytest.raises(models.BadToken, match="refused") as caught:
        pull(make_settings(tmp_path, hub), "acme/tiny", token="hf_wrong_token_000000000000")
    assert "hf_token" in caught.value.fix


def test_unknown_model_and_missing_revision(tmp_path, hub):
    hub.add_repo("acme/tiny", tiny_files())
    s = make_settings(tmp_path, hub)
    with pytest.raises(models.ModelNotFound, match="acme/nope was not found"):
        pull(s, "acme/nope")
    with pytest.raises(models.ModelNotFound, match="no revision 'v9'"):
        pull(s, "acme/tiny@v9")


def test_unreachable_hub(tmp_path, hub):
    s = make_settings(tmp_path, hub, **{"hub.endpoint": "http://127.0.0.1:9"})
    with pytest.raises(models.HubUnreachable, match="cannot reach http://127.0.0.1:9"):
        pull(s, "acme/tiny")


def test_dropped_connection_resumes_with_range_in_the_same_pull(tmp_path, hub):
    weights = os.urandom(24 * MiB)
    hub.add_repo("acme/big", tiny_files(weights))
    hub.drop("acme/big", "model.safetensors", after=15 * MiB)
    result = pull(make_settings(tmp_path, hub), "acme/big")
    gets = [r for r in hub.requests if r.method == "GET" and r.path.endswith("model.safetensors")]
    assert [r.range for r in gets] == [None, f"bytes={10 * MiB}-"]  # 10 MiB chunks were kept
    assert (result.path / "model.safetensors").read_bytes() == weights


def test_repeated_drops_fail_and_leave_nothing_complete(tmp_path, hub):
    hub.add_repo("acme/big", tiny_files(os.urandom(12 * MiB)))
    hub.drop("acme/big", "model.safetensors", after=1 * MiB, times=1000)
    s = make_settings(tmp_path, hub)
    with pytest.raises(models.ConnectionLost) as caught:
        pull(s, "acme/big", attempts=2)
    assert "run the pull again" in caught.value.fix
    assert [m.complete for m in models.list_models(s).models] in ([], [False])
    assert not list((tmp_path / "models").rglob("*.incomplete"))
    with pytest.raises(models.ModelNotCached):
        models.snapshot_path(s, models.ModelRef("acme/big"))
    assert not (models.repo_dir(s, "acme/big") / "refs/main").exists()  # only after verification


def test_orphans_of_a_killed_pull_are_swept_first(tmp_path, hub):
    hub.add_repo("acme/tiny", tiny_files())
    s = make_settings(tmp_path, hub)
    blobs = models.repo_dir(s, "acme/tiny") / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "abc123.1a2b3c4d.incomplete").write_bytes(b"x" * 5000)
    (blobs / "tmp_5f0e").write_bytes(b"")
    pull(s, "acme/tiny")
    assert not list(blobs.glob("*.incomplete")) and not list(blobs.glob("tmp_*"))


def test_sweep_leaves_the_incomplete_file_of_a_download_still_running(tmp_path, hub):
    s = make_settings(tmp_path, hub)
    folder = models.repo_dir(s, "acme/tiny")
    (folder / "blobs").mkdir(parents=True)
    live = folder / "blobs" / f"{'e' * 64}.1a2b3c4d.incomplete"
    dead = folder / "blobs" / f"{'d' * 64}.5e6f7a8b.incomplete"
    live.write_bytes(b"x" * 4096)
    dead.write_bytes(b"y" * 1024)
    locks = s.paths.models / "hub/.locks" / folder.name
    locks.mkdir(parents=True)
    (locks / f"{'d' * 64}.lock").touch()  # left by a killed process: nobody holds it
    with open(locks / f"{'e' * 64}.lock", "w") as held:  # huggingface_hub's download lock
        fcntl.flock(held, fcntl.LOCK_EX)
        assert models.sweep_orphans(folder) == 1024
        assert live.exists() and not dead.exists()
    assert models.sweep_orphans(folder) == 4096 and not live.exists()


def test_pull_of_a_complete_model_with_the_hub_down_keeps_it(tmp_path, hub):
    hub.add_repo("acme/tiny", tiny_files())
    s = make_settings(tmp_path, hub)
    done = pull(s, "acme/tiny")
    offline = make_settings(tmp_path, hub, **{"hub.endpoint": "http://127.0.0.1:9"})
    stream = io.StringIO()
    log.configure(stream=stream)
    try:
        kept = pull(offline, "acme/tiny")
    finally:
        log.configure()
    assert (kept.already_complete, kept.offline, kept.path, kept.commit) == (
        True,
        True,
        done.path,
        done.commit,
    )
    assert kept.files == done.files and kept.bytes_total == done.bytes_total
    [event] = [json.loads(x) for x in stream.getvalue().splitlines() if "model.pull.offline" in x]
    assert event["reason"] == "cannot reach http://127.0.0.1:9: ConnectError"
    with pytest.raises(models.HubUnreachable, match="cannot reach"):  # not complete: no pretence
        pull(offline, "acme/other")


def test_repo_without_config_json_is_refused_before_any_download(tmp_path, hub):
    hub.add_repo("acme/gguf", {"model-q4_k_m.gguf": b"GGUF" * 100, "README.md": b"# gguf"})
    with pytest.raises(models.ModelNotFound) as caught:
        pull(make_settings(tmp_path, hub), "acme/gguf")
    assert str(caught.value).startswith("acme/gguf has no config.json: vLLM cannot load it")
    assert "https://huggingface.co/acme/gguf/tree/main" in caught.value.fix
    assert hub.count(contains="/resolve/") == 0


def test_a_branch_pull_writes_its_ref_and_a_commit_pull_writes_none(tmp_path, hub):
    commit = hub.add_repo("acme/tiny", tiny_files(), revision="v1")
    s = make_settings(tmp_path, hub)
    assert pull(s, f"acme/tiny@{commit}").commit == commit
    refs = models.repo_dir(s, "acme/tiny") / "refs"
    assert not refs.exists() or not list(refs.iterdir())
    assert pull(s, "acme/tiny@v1").already_complete  # the same commit: nothing fetched
    assert (refs / "v1").read_text() == commit
    assert models.snapshot_path(s, models.ModelRef("acme/tiny", "v1")).name == commit


def test_progress_events_carry_bytes_and_rate(tmp_path, hub):
    hub.add_repo("acme/big", tiny_files(os.urandom(24 * MiB)))
    stream = io.StringIO()
    log.configure(stream=stream)
    try:
        pull(make_settings(tmp_path, hub), "acme/big", progress="log", interval=0.01)
    finally:
        log.configure()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    progress = [e for e in events if e["event"] == "model.pull.progress"]
    assert progress and progress[-1]["bytes"] >= 24 * MiB and "rate_mb_s" in progress[-1]
    assert {"model.pull.start", "model.disk", "model.pull.done"} <= {e["event"] for e in events}


def test_repo_larger_than_free_space_is_refused_before_any_weight_byte(tmp_path, hub, small_fs):
    hub.add_repo("acme/big", tiny_files(os.urandom(25 * MiB)))
    s = make_settings(tmp_path, hub, models=small_fs / "models")
    with pytest.raises(models.NotEnoughDisk) as caught:
        pull(s, "acme/big", margin=0)
    assert "needs 0.03 GB more" in str(caught.value) and "GB is free" in str(caught.value)
    assert "sandbox-agent model rm" in caught.value.fix
    assert hub.count("GET", "model.safetensors") == 0


def test_disk_full_mid_download_is_an_error_and_not_complete(tmp_path, hub, small_fs):
    hub.add_repo("acme/mid", tiny_files(os.urandom(12 * MiB)))
    filler = small_fs / "filler"
    hub.on_download = lambda repo, path: (
        path == "model.safetensors" and filler.write_bytes(b"\0" * (12 * MiB))
    )  # another process fills the disk meanwhile
    s = make_settings(tmp_path, hub, models=small_fs / "models")
    with pytest.raises(models.NotEnoughDisk, match="filled up"):
        pull(s, "acme/mid", margin=0)
    assert not any(m.complete for m in models.list_models(s).models)
    assert not list((small_fs / "models").rglob("*.incomplete"))


def test_rm_refuses_the_serving_model_and_removes_another(tmp_path, hub):
    hub.add_repo("acme/tiny", tiny_files())
    hub.add_repo("acme/other", tiny_files(b"\x03" * 1000))
    s = make_settings(tmp_path, hub, model_id="acme/tiny")
    pull(s, "acme/tiny")
    pull(s, "acme/other")
    with pytest.raises(models.ModelInUse, match="serving model"):
        models.remove(s, "acme/tiny")
    removed = models.remove(s, "acme/other")
    assert removed.freed_bytes > 1000 and not removed.path.exists()
    assert [m.repo_id for m in models.list_models(s).models] == ["acme/tiny"]
    with pytest.raises(models.ModelNotCached, match="acme/other is not in") as caught:
        models.remove(s, "acme/other")
    assert caught.value.fix == "`sandbox-agent model list` shows the cached models"
    with pytest.raises(BadInput, match="removes every revision") as refused:
        models.remove(s, "acme/other@v1")
    assert refused.value.fix == "leave out @revision: `sandbox-agent model rm acme/other`"


def test_doctor_checks_see_a_complete_model_and_its_fit(tmp_path, hub):
    from agent import gpu
    from agent.checks import model as model_checks
    from agent.checks.base import DoctorContext

    hub.add_repo("acme/tiny", tiny_files())
    s = make_settings(tmp_path, hub, model_id="acme/tiny")
    ctx = DoctorContext(settings=s, root=tmp_path)
    assert model_checks.check_cache(ctx).status == "fail"
    assert model_checks.check_fit(ctx).status == "skip"
    pull(s, "acme/tiny")
    cache = model_checks.check_cache(ctx)
    assert cache.status == "ok" and "acme/tiny complete" in cache.summary
    inventory = gpu.GpuInventory(state="ok", detail="", gpus=(gpu.Gpu(0, memory_total=24 * 10**9),))
    ctx.once("gpu.inventory", lambda: inventory)
    fitted = model_checks.check_fit(ctx)
    assert fitted.status == "ok" and fitted.summary == "tp 1, context 2048 on 1 GPU(s)"


def test_doctor_cache_check_fails_for_a_partly_fetched_model(tmp_path, hub):
    from agent.checks import model as model_checks
    from agent.checks.base import DoctorContext

    hub.add_repo("acme/big", tiny_files(os.urandom(12 * MiB)))
    hub.drop("acme/big", "model.safetensors", after=1 * MiB, times=1000)
    s = make_settings(tmp_path, hub, model_id="acme/big")
    with pytest.raises(models.ConnectionLost):
        pull(s, "acme/big", attempts=1)
    check = model_checks.check_cache(DoctorContext(settings=s, root=tmp_path))
    assert check.status == "fail" and "partly downloaded" in check.summary
    assert check.fix == "run `sandbox-agent model pull acme/big` to finish it"
