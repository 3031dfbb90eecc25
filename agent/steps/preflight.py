"""preflight: root, a supported OS, disk for the model, memory. Reads only."""

from __future__ import annotations

from agent import host
from agent.steps.base import Done, Outcome, StepContext, StepFailed, StepMeta

META = StepMeta("preflight", title="root, OS, disk, memory")
MIN_DISK_GIB = 20.0  # a 7B model in bf16 (15 GB) and the images
MIN_MEMORY_GIB = 4.0
SUPPORTED = "Ubuntu 22.04, Ubuntu 24.04 or Debian 12"


def check(ctx: StepContext) -> Outcome:
    if not ctx.is_root:
        raise StepFailed("bootstrap must run as root", fix="run it with sudo")
    release = ctx.os_release()
    name = release.pretty_name or f"{release.id or 'unknown'} {release.version_id}".strip()
    if not release.supported:
        raise StepFailed(f"{name} is not supported", fix=f"deploy the StackScript on {SUPPORTED}")
    disk = host.disk_space(ctx.settings.paths.models, ctx.root)
    if disk.free_gib < MIN_DISK_GIB:
        raise StepFailed(
            f"only {disk.free_gib:.1f} GiB free on {disk.path}; the model and the images need "
            f"at least {MIN_DISK_GIB:.0f} GiB",
            fix="pick a plan with a larger disk, or set MODELS_DIR to a bigger volume",
        )
    memory = host.memory(ctx.root)
    if memory is not None and memory.total_gib < MIN_MEMORY_GIB:
        raise StepFailed(
            f"{memory.total_gib:.1f} GiB of memory is too little (at least {MIN_MEMORY_GIB:.0f})",
            fix="pick a larger plan",
        )
    mem = f", {memory.total_gib:.0f} GiB memory" if memory else ""
    return Done(f"{name}, {disk.free_gib:.0f} GiB free on {disk.path}{mem}")


def apply(ctx: StepContext) -> str | None:
    return None  # check is the whole step: it passes or it fails
