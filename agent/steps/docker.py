"""docker: an engine that answers; Docker Engine from Docker's repository when none does."""

from __future__ import annotations

import time

from agent import engine, proc
from agent.steps import apt
from agent.steps.base import Done, Outcome, StepContext, StepFailed, StepMeta, Todo

META = StepMeta("docker", needs=("preflight",), title="Docker Engine")
PACKAGES = (
    "docker-ce",
    "docker-ce-cli",
    "containerd.io",
    "docker-buildx-plugin",
    "docker-compose-plugin",
)


def repo(ctx: StepContext) -> apt.AptRepo:
    distro = ctx.os_release().id or "debian"
    base = f"https://download.docker.com/linux/{distro}"
    return apt.AptRepo(
        "docker", f"{base}/gpg", f"deb [signed-by={{keyring}}] {base} {apt.codename(ctx)} stable"
    )


def want(ctx: StepContext) -> apt.AptWant:
    return apt.AptWant(PACKAGES, (repo(ctx),), group="engine")


def _engine(ctx: StepContext) -> engine.EngineInfo:
    return ctx.once("engine.info", lambda: engine.info(ctx.client()))


def check(ctx: StepContext) -> Outcome:
    ctx.forget("engine.info")
    try:
        found = _engine(ctx)
    except engine.EngineUnavailable as exc:
        return Todo(f"no Docker engine answers ({exc.message}): install Docker Engine")
    return Done(f"Docker {found.version} answers")


def apply(ctx: StepContext) -> str | None:
    if not apt.installed(["docker-ce"]) and not apt.installed(["docker.io"]):
        ctx.apt.install(ctx, META.id, want(ctx))
    proc.run(["systemctl", "enable", "--now", "docker.service"], timeout=180)
    wait_for_engine(ctx)
    return None


def wait_for_engine(ctx: StepContext, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        ctx.forget("engine.info")
        try:
            _engine(ctx)
            return
        except engine.EngineUnavailable as exc:
            if time.monotonic() >= deadline:
                raise StepFailed(
                    f"Docker was started but does not answer: {exc.message}",
                    fix="see `journalctl -u docker`; then run `sandbox-agent bootstrap` again",
                ) from None
        time.sleep(1)
