"""container-toolkit: the NVIDIA Container Toolkit, the engine's nvidia runtime configured and
seen by the engine. Skipped with the reason when the stack uses no GPU."""

from __future__ import annotations

from agent import engine, proc
from agent.steps import apt
from agent.steps.base import Done, Outcome, StepContext, StepFailed, StepMeta, Todo
from agent.steps.docker import wait_for_engine

META = StepMeta(
    "container-toolkit", needs=("docker", "nvidia-driver"), title="NVIDIA Container Toolkit"
)
PACKAGE = "nvidia-container-toolkit"
REPO = apt.AptRepo(
    "nvidia-container-toolkit",
    "https://nvidia.github.io/libnvidia-container/gpgkey",
    "deb [signed-by={keyring}] https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /",
)


def want(ctx: StepContext) -> apt.AptWant:
    return apt.AptWant((PACKAGE,), (REPO,))


def check(ctx: StepContext) -> Outcome:
    if why := ctx.wants_gpu():
        return Done(f"skipped: {why}", skipped=True)
    try:
        info = engine.info(ctx.client())
    except engine.EngineUnavailable:
        return Todo("install it once Docker answers")
    if info.has_nvidia_runtime:
        return Done(f"the engine lists the nvidia runtime ({', '.join(info.runtimes)})")
    return Todo(f"the engine has no nvidia runtime (only {', '.join(info.runtimes)}): install it")


def apply(ctx: StepContext) -> str | None:
    if not apt.installed([PACKAGE]):
        ctx.apt.install(ctx, META.id, want(ctx))
    proc.run(["nvidia-ctk", "runtime", "configure", "--runtime=docker"], timeout=60)
    proc.run(["systemctl", "restart", "docker.service"], timeout=180)
    wait_for_engine(ctx)
    if not engine.info(ctx.client()).has_nvidia_runtime:
        raise StepFailed(
            "the toolkit is installed but the engine lists no nvidia runtime",
            fix="see /etc/docker/daemon.json and `journalctl -u docker`",
        )
    return None
