"""model-fetch: the model into the local cache, as early as the disk allows, overlapping the
package installs and the image pulls. The one pull path (agent.models.pull): access and disk
checked first, files verified, an interrupted fetch resumed."""

from __future__ import annotations

import threading

from agent import models
from agent.steps.base import Done, Outcome, StepContext, StepMeta, Todo

META = StepMeta("model-fetch", needs=("directories",), title="model download")
GB = 1e9


def size(n: float) -> str:
    return f"{n / GB:.2f} GB" if n >= GB / 10 else f"{n / 1e6:.1f} MB"


def check(ctx: StepContext) -> Outcome:
    s = ctx.settings
    commit = models.cached_commit(s, s.model.ref)
    if commit and models.is_complete(s, s.model.id, commit):
        return Done(f"{s.model.ref} ({commit[:12]}) is in {s.paths.models}")
    return Todo(f"{s.model.ref} is not in {s.paths.models} yet: fetch it from {s.hub.endpoint}")


def apply(ctx: StepContext) -> str | None:
    s = ctx.settings
    folder = models.repo_dir(s, s.model.id)
    stop = threading.Event()

    def meter() -> None:  # the checklist's progress: bytes on disk so far
        while not stop.wait(1.0):
            got = sum(p.stat().st_size for p in folder.glob("blobs/*") if p.is_file())
            ctx.progress(META.id, f"{size(got)} on disk")

    watcher = threading.Thread(target=meter, daemon=True)
    watcher.start()
    try:
        result = models.pull(s, token=ctx.token, progress="none" if ctx.tty else "log")
    finally:
        stop.set()
    return f"{s.model.ref} ({result.commit[:12]}): {size(result.bytes_total)}"
