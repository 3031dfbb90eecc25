"""Fetching a model: resolve, check access, fit and disk, download, verify, mark complete.

Order matters: nothing large is downloaded before access, fit (when GPU totals are given) and
disk space are checked, and the marker and `refs/<revision>` are written only after every
file's size and LFS sha256 were verified, so a partly fetched model is never reported complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent import log
from agent.files import atomic_write
from agent.models import fit
from agent.models.cache import (
    cache_root,
    cached_commit,
    is_complete,
    marker_path,
    pull_lock,
    repo_dir,
    sweep_orphans,
)
from agent.models.errors import ConnectionLost, HubUnreachable, ModelError, NotEnoughDisk
from agent.models.hub import (
    WEIGHT_FORMATS,
    RepoFile,
    Resolved,
    hub_errors,
    load_config,
    read_config,
    resolve,
)
from agent.models.sizing import fit_options
from agent.refs import ModelRef
from agent.results import Result
from agent.settings import Settings

DISK_MARGIN = 1 << 30  # kept free beyond the missing bytes: logs, Docker, the OS
Progress = Literal["auto", "bar", "log", "none"]


@dataclass(frozen=True)
class PullResult(Result):
    repo_id: str
    revision: str
    commit: str
    path: Path
    files: tuple[str, ...]
    bytes_total: int
    bytes_fetched: int
    seconds: float
    already_complete: bool
    offline: bool = False  # the Hub was unreachable: a complete cached snapshot was kept


def _blobs_bytes(folder: Path) -> int:
    total = 0
    for entry in folder.glob("blobs/*"):  # a file may be renamed between glob and stat
        with contextlib.suppress(OSError):
            total += entry.stat().st_size
    return total


class _Progress(threading.Thread):
    """A bar on a terminal, else `model.pull.progress` events: bytes on disk under blobs/."""

    def __init__(self, ref: ModelRef, folder: Path, total: int, mode: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.ref, self.folder, self.total, self.mode = ref, folder, total, mode
        self.interval, self.base, self.start_time = interval, _blobs_bytes(folder), time.monotonic()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.report()

    def report(self, final: bool = False) -> int:
        got = max(0, _blobs_bytes(self.folder) - self.base)
        seconds = max(time.monotonic() - self.start_time, 1e-6)
        rate, pct = got / seconds / 1e6, 100.0 * got / self.total if self.total else 100.0
        if self.mode == "bar":
            filled = int(min(pct, 100) / 100 * 30)
            sys.stderr.write(
                f"\r{self.ref.repo_id} [{'#' * filled:<30}] {pct:5.1f}% "
                f"{got / 1e9:.2f}/{self.total / 1e9:.2f} GB {rate:.1f} MB/s"
                + ("\n" if final else "")
            )
            sys.stderr.flush()
        elif self.mode == "log":
            log.get().info(
                "model.pull.progress",
                repo=self.ref.repo_id,
                bytes=got,
                total=self.total,
                percent=round(pct, 1),
                rate_mb_s=round(rate, 1),
            )
        return got


def pull(
    settings: Settings,
    ref: ModelRef | None = None,
    *,
    token: str | None = None,
    progress: Progress = "auto",
    interval: float = 5.0,
    max_workers: int = 8,
    margin: int = DISK_MARGIN,
    gpu_memory: list[int] | None = None,
    attempts: int = 3,
) -> PullResult:
    """Resolve, check access, fit (when `gpu_memory` is given) and disk, then fetch, verify and
    mark complete. Nothing large is downloaded before every check has passed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

    ref = ref or settings.model.ref
    started = time.monotonic()
    try:
        resolved = resolve(settings, ref, token)
    except HubUnreachable as exc:
        kept = _complete_offline(settings, ref, exc, gpu_memory)
        if kept is None:
            raise
        return kept
    config = read_config(settings, resolved, token)
    if gpu_memory is not None:
        _require_fit(settings, ref, config, resolved.weight_bytes, gpu_memory)
    folder = repo_dir(settings, ref.repo_id)
    snapshot = folder / "snapshots" / resolved.commit
    names = tuple(f.path for f in resolved.selected)

    def result(fetched: int, seconds: float, already: bool) -> PullResult:
        return PullResult(
            repo_id=ref.repo_id,
            revision=ref.revision,
            commit=resolved.commit,
            path=snapshot,
            files=names,
            bytes_total=resolved.bytes,
            bytes_fetched=fetched,
            seconds=seconds,
            already_complete=already,
        )

    with pull_lock(settings):
        if is_complete(settings, ref.repo_id, resolved.commit):
            _write_ref(folder, ref.revision, resolved.commit)
            return result(0, time.monotonic() - started, True)
        sweep_orphans(folder)
        missing = sum(f.size for f in resolved.selected if not _have_blob(folder, f))
        _check_disk(settings, ref, missing, margin)
        mode = progress if progress != "auto" else ("bar" if sys.stderr.isatty() else "log")
        meter = _Progress(ref, folder, missing, mode, interval)

        class Quiet(hf_tqdm):  # our own bar/events replace the library's bars
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

        log.get().info(
            "model.pull.start",
            repo=ref.repo_id,
            revision=ref.revision,
            commit=resolved.commit,
            files=len(names),
            missing_bytes=missing,
        )
        if mode != "none":
            meter.start()
        try:
            for attempt in range(1, attempts + 1):
                try:
                    with hub_errors(settings, ref, token):
                        snapshot_download(
                            ref.repo_id,
                            revision=resolved.commit,
                            cache_dir=cache_root(settings),
                            endpoint=settings.hub.endpoint,
                            token=token or False,
                            allow_patterns=[_escape(n) for n in names],
                            max_workers=max_workers,
                            tqdm_class=Quiet,
                        )
                    break
                except ConnectionLost as exc:
                    if attempt == attempts:
                        raise
                    log.get().warning(
                        "model.pull.retry", repo=ref.repo_id, attempt=attempt, error=exc.message
                    )
                    time.sleep(attempt)
        finally:
            meter.done.set()
            fetched = meter.report(final=True)
            sweep_orphans(folder)
        _verify(resolved, snapshot, max_workers)
        # The library's tree listing names every file of the commit; offline readers would call
        # the snapshot incomplete because of the weights we skipped on purpose. It is a cache.
        (folder / "trees" / f"{resolved.commit}.json").unlink(missing_ok=True)
        atomic_write(
            marker_path(settings, ref.repo_id, resolved.commit),
            json.dumps(
                {
                    "repo_id": ref.repo_id,
                    "revision": ref.revision,
                    "commit": resolved.commit,
                    "verified_at": time.time(),
                    "files": [f.as_dict() for f in resolved.selected],
                },
                indent=1,
            ),
        )
        _write_ref(folder, ref.revision, resolved.commit)
    seconds = time.monotonic() - started
    log.get().info(
        "model.pull.done",
        repo=ref.repo_id,
        commit=resolved.commit,
        bytes=resolved.bytes,
        fetched=fetched,
        seconds=round(seconds, 2),
    )
    return result(fetched, seconds, False)


def _require_fit(
    settings: Settings, ref: ModelRef, config: dict[str, Any], weights: int, gpu_memory: list[int]
) -> None:
    shape = fit.ModelShape.from_config(config)
    fit.require_fit(shape, gpu_memory, **fit_options(settings, ref, weights))


def _complete_offline(
    settings: Settings, ref: ModelRef, exc: HubUnreachable, gpu_memory: list[int] | None
) -> PullResult | None:
    """`ref` complete on disk while the Hub cannot be reached: keep it (a branch is not
    re-checked for newer commits; the next pull with the Hub up does that)."""
    commit = cached_commit(settings, ref)
    if commit is None or not is_complete(settings, ref.repo_id, commit):
        return None
    snapshot = repo_dir(settings, ref.repo_id) / "snapshots" / commit
    files = json.loads(marker_path(settings, ref.repo_id, commit).read_text())["files"]
    if gpu_memory is not None:
        weights = sum(f["size"] for f in files if f["path"].endswith(WEIGHT_FORMATS))
        config = load_config(snapshot / "config.json", ref)
        _require_fit(settings, ref, config, weights, gpu_memory)
    log.get().warning(
        "model.pull.offline",
        repo=ref.repo_id,
        revision=ref.revision,
        commit=commit,
        reason=exc.message,
    )
    return PullResult(
        repo_id=ref.repo_id,
        revision=ref.revision,
        commit=commit,
        path=snapshot,
        files=tuple(f["path"] for f in files),
        bytes_total=sum(f["size"] for f in files),
        bytes_fetched=0,
        seconds=0.0,
        already_complete=True,
        offline=True,
    )


def _escape(name: str) -> str:
    return re.sub(r"([*?\[\]])", r"[\1]", name)  # allow_patterns are fnmatch patterns


def _have_blob(folder: Path, f: RepoFile) -> bool:
    try:
        return f.etag is not None and (folder / "blobs" / f.etag).stat().st_size == f.size
    except OSError:
        return False


def _write_ref(folder: Path, revision: str, commit: str) -> None:
    if revision != commit:
        atomic_write(folder / "refs" / revision, commit)


def _check_disk(settings: Settings, ref: ModelRef, missing: int, margin: int) -> None:
    where = settings.paths.models
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    log.get().info(
        "model.disk", path=str(where), missing_bytes=missing, free_bytes=free, margin=margin
    )
    if missing + margin > free:
        raise NotEnoughDisk(
            f"{ref} needs {missing / 1e9:.2f} GB more under {settings.paths.models} (+ "
            f"{margin / 1e9:.2f} GB kept free) but only {free / 1e9:.2f} GB is free",
            fix=f"free {(missing + margin - free) / 1e9:.2f} GB there (`sandbox-agent model list`, "
            "then `sandbox-agent model rm MODEL`), "
            "point paths.models (MODELS_DIR) at a larger disk, or pick a smaller model",
        )


def _verify(resolved: Resolved, snapshot: Path, workers: int) -> None:
    """Every selected file present with its size, LFS files with their sha256; bad blobs go."""

    def check(f: RepoFile) -> str | None:
        path = snapshot / f.path
        try:
            blob = path.resolve(strict=True)
            if blob.stat().st_size != f.size:
                problem = f"{f.path}: {blob.stat().st_size} bytes, expected {f.size}"
            elif f.sha256 and _sha256(blob) != f.sha256:
                problem = f"{f.path}: sha256 differs from the Hub's"
            else:
                return None
        except OSError:
            return f"{f.path}: missing"
        blob.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        return problem

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = [p for p in pool.map(check, resolved.selected) if p]
    if problems:
        raise ModelError(
            f"{resolved.ref} failed verification: {'; '.join(problems[:5])}",
            fix=f"run `sandbox-agent model pull {resolved.ref}` again to refetch them",
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()
