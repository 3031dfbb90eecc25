"""The local model cache: its layout, what is complete, the lock, list and remove.

The cache is an HF_HOME: `paths.models` is HF_HOME and `paths.models/hub` the hub cache
(`models--org--name/{blobs,snapshots/<commit>,refs/<revision>}`, relative symlinks), so the
folder mounts into the vLLM container unchanged. `snapshot_path()` is the folder the stack
passes to vLLM as `--model`. Our completion markers live beside it, in
`paths.models/.sandbox-agent/<repo folder>/<commit>.json`, written only after every file's size
(and LFS sha256) was verified; `refs/<revision>` is written after the marker, so an offline
reader resolving a revision only ever finds a complete snapshot.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent import log
from agent.errors import AgentError, BadInput
from agent.models.errors import ModelInUse, ModelNotCached
from agent.refs import ModelRef
from agent.results import Result
from agent.settings import Settings

HUB = "hub"
MARKERS = ".sandbox-agent"
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def cache_root(settings: Settings) -> Path:
    """The hub cache: HF_HOME is `paths.models`, so this is `paths.models/hub`."""
    return settings.paths.models / HUB


def repo_dir(settings: Settings, repo_id: str) -> Path:
    return cache_root(settings) / ("models--" + repo_id.replace("/", "--"))


def marker_path(settings: Settings, repo_id: str, commit: str) -> Path:
    return settings.paths.models / MARKERS / repo_dir(settings, repo_id).name / f"{commit}.json"


def cached_commit(settings: Settings, ref: ModelRef) -> str | None:
    """The commit `ref` resolved to when it was pulled; None when unknown (or not a sha: a
    path is built from it)."""
    if COMMIT.fullmatch(ref.revision):
        return ref.revision
    try:
        text = (repo_dir(settings, ref.repo_id) / "refs" / ref.revision).read_text().strip()
    except OSError:
        return None
    return text if COMMIT.fullmatch(text) else None


def snapshot_path(
    settings: Settings, ref: ModelRef | None = None, *, mount: Path | None = None
) -> Path:
    """The local snapshot folder of `ref` (default: the configured model) to pass to vLLM as
    `--model`. With `mount`, the same folder as seen where `paths.models` is mounted at `mount`."""
    ref = ref or settings.model.ref
    commit = cached_commit(settings, ref)
    if commit is None or not is_complete(settings, ref.repo_id, commit):
        raise ModelNotCached(
            f"{ref} is not fully downloaded under {cache_root(settings)}",
            fix=f"run `sandbox-agent model pull {ref}`",
        )
    folder = repo_dir(settings, ref.repo_id) / "snapshots" / commit
    return Path(mount) / folder.relative_to(settings.paths.models) if mount else folder


def is_complete(settings: Settings, repo_id: str, commit: str) -> bool:
    """The marker exists and every file it lists is on disk with its size (no hashing)."""
    try:
        marker = json.loads(marker_path(settings, repo_id, commit).read_text())
    except (OSError, ValueError):
        return False
    folder = repo_dir(settings, repo_id) / "snapshots" / commit
    try:
        return all((folder / f["path"]).stat().st_size == f["size"] for f in marker["files"])
    except (OSError, KeyError, TypeError):
        return False


@contextlib.contextmanager
def pull_lock(settings: Settings) -> Iterator[None]:
    """One fetch or removal at a time under paths.models (the sweep must not hit a live pull)."""
    path = settings.paths.models / MARKERS / "pull.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    # never through a link: O_CREAT through a planted one would create its target as root
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise AgentError(
            f"the pull lock {path} cannot be opened: {exc.strerror} (a link is never followed)",
            fix=f"remove {path}; the next pull makes a new one",
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.get().info("model.pull.waiting", reason="another pull or rm holds the lock")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _downloading(folder: Path, leftover: Path) -> bool:
    """huggingface_hub holds `.locks/<repo folder>/<etag>.lock` while it writes
    `blobs/<etag>.<random>.incomplete` (`model fit`, a pull reading config.json unlocked)."""
    lock = folder.parent / ".locks" / folder.name / (leftover.name.split(".")[0] + ".lock")
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody downloads that blob
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases our probe's lock
    return False


def sweep_orphans(folder: Path) -> int:
    """Remove `*.incomplete` and `tmp_*` a killed process left in blobs/ (the library never
    does, and never resumes them), never those of a download still running. Call with the
    pull lock held. Returns bytes freed."""
    freed = 0
    for leftover in [*folder.glob("blobs/*.incomplete"), *folder.glob("blobs/tmp_*")]:
        if leftover.name.endswith(".incomplete") and _downloading(folder, leftover):
            log.get().info("model.sweep.skipped", file=leftover.name, reason="being downloaded")
            continue
        with contextlib.suppress(OSError):
            freed += leftover.stat().st_size
            leftover.unlink()
            log.get().info("model.sweep", file=leftover.name, freed_bytes=freed)
    return freed


@dataclass(frozen=True)
class CachedModel:
    repo_id: str
    commit: str
    refs: tuple[str, ...]
    path: Path
    bytes: int
    complete: bool
    serving: bool


@dataclass(frozen=True)
class ModelList(Result):
    root: Path
    models: tuple[CachedModel, ...]


def list_models(settings: Settings) -> ModelList:
    """Every snapshot in the cache, complete (verified marker) or not."""
    found = []
    for folder in sorted(cache_root(settings).glob("models--*")):
        repo_id = folder.name[len("models--") :].replace("--", "/", 1)
        refs: dict[str, list[str]] = {}
        for ref in (folder / "refs").rglob("*"):
            if ref.is_file():
                refs.setdefault(ref.read_text().strip(), []).append(
                    str(ref.relative_to(folder / "refs"))
                )
        for snap in sorted((folder / "snapshots").glob("*")):
            size = sum(p.stat().st_size for p in snap.rglob("*") if p.is_file())
            found.append(
                CachedModel(
                    repo_id,
                    snap.name,
                    tuple(sorted(refs.get(snap.name, []))),
                    snap,
                    size,
                    is_complete(settings, repo_id, snap.name),
                    repo_id == settings.model.id,
                )
            )
    return ModelList(cache_root(settings), tuple(found))


@dataclass(frozen=True)
class RemoveResult(Result):
    repo_id: str
    path: Path
    freed_bytes: int


def remove(settings: Settings, repo_id: str) -> RemoveResult:
    """Delete a cached model, every revision; never the one the stack serves (model.id)."""
    if "@" in repo_id:
        raise BadInput(
            "MODEL",
            f"{repo_id!r}: `model rm` removes every revision of a model",
            fix=f"leave out @revision: `sandbox-agent model rm {repo_id.split('@')[0]}`",
        )
    ref = ModelRef.parse(repo_id)
    if ref.repo_id == settings.model.id:
        raise ModelInUse(
            f"{ref.repo_id} is the serving model (model.id); it is not removed",
            fix="switch to another model first (`sandbox-agent switch-model OTHER`)",
        )
    folder = repo_dir(settings, ref.repo_id)
    with pull_lock(settings):  # a pull of it finishes first; so does another rm
        if not folder.exists():
            raise ModelNotCached(
                f"{ref.repo_id} is not in {cache_root(settings)}",
                fix="`sandbox-agent model list` shows the cached models",
            )
        freed = sum(
            p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
        )
        shutil.rmtree(folder)
        shutil.rmtree(settings.paths.models / MARKERS / folder.name, ignore_errors=True)
        shutil.rmtree(cache_root(settings) / ".locks" / folder.name, ignore_errors=True)
    log.get().info("model.removed", repo=ref.repo_id, freed_bytes=freed)
    return RemoveResult(ref.repo_id, folder, freed)
