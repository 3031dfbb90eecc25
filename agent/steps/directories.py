"""directories: the model cache, the UI's data, the stack, the state and the secrets.

Settings paths are the box's own (tests give paths under a temporary folder); `ctx.root`
only relocates the host's system files (/etc, /sys, /proc)."""

from __future__ import annotations

import os
from pathlib import Path

from agent.secrets import SecretStore
from agent.steps.base import Done, Outcome, StepContext, StepMeta, Todo

META = StepMeta("directories", needs=("preflight",), title="folders for models, data, secrets")
PRIVATE = 0o700


def _wanted(ctx: StepContext) -> dict[str, int]:
    p = ctx.settings.paths
    return {
        str(p.models): 0o755,
        str(p.ui_data): 0o755,
        str(p.stack): 0o755,
        str(p.state): PRIVATE,
        str(p.secrets): PRIVATE,
    }


def check(ctx: StepContext) -> Outcome:
    missing = [path for path in _wanted(ctx) if not Path(path).is_dir()]
    loose = [
        path
        for path, mode in _wanted(ctx).items()
        if mode == PRIVATE and Path(path).is_dir() and Path(path).stat().st_mode & 0o077
    ]
    if missing:
        return Todo(f"create {', '.join(missing)}")
    if loose:
        return Todo(f"make {', '.join(loose)} private (0700)")
    return Done(f"{len(_wanted(ctx))} folders in place")


def apply(ctx: StepContext) -> str | None:
    # the secrets folder by the one that writes secrets: created 0700, never loosened or
    # chmod-ed behind the owner's back
    SecretStore(ctx.settings.paths.secrets).prepare_folder()
    for path, mode in _wanted(ctx).items():
        if path == str(ctx.settings.paths.secrets):
            continue
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True, mode=mode)
        if mode == PRIVATE:
            os.chmod(folder, mode)
    return None
