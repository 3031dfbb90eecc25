"""host.*: the operating system, disk and memory the stack needs (agent.host reads them)."""

from __future__ import annotations

from pathlib import Path

from agent import host
from agent.checks.base import Check, CheckSpec, DoctorContext
from agent.secrets import SecretStore
from agent.settings import loopback

DOCKER_ROOT = Path("/var/lib/docker")
# A 7B model in bf16 is ~15 GB and the vLLM image unpacks to ~20 GB.
DISK_FAIL_GIB, DISK_WARN_GIB = 25, 60
MEMORY_FAIL_GIB, MEMORY_WARN_GIB = 8, 16


def check_os(ctx: DoctorContext) -> Check:
    release = host.os_release(ctx.root)
    name = release.pretty_name or "an unknown system (no /etc/os-release)"
    if release.supported:
        return Check("host.os", "ok", f"{name} is supported")
    return Check(
        "host.os",
        "warn",
        f"{name} is not a supported system",
        detail="bootstrap installs drivers and Docker on Ubuntu 22.04, 24.04 and Debian 12 only",
        fix="deploy the StackScript on Ubuntu 24.04 (or 22.04, Debian 12)",
    )


def check_disk(ctx: DoctorContext) -> Check:
    places = {"models": ctx.settings.paths.models, "images": DOCKER_ROOT}
    spaces = {what: host.disk_space(place, ctx.root) for what, place in places.items()}
    detail = "; ".join(
        f"{what}: {d.free_gib:.1f} GiB free of {d.total_gib:.1f} GiB at {d.path}"
        for what, d in spaces.items()
    )
    what = min(spaces, key=lambda w: spaces[w].free)
    free, place = spaces[what].free_gib, places[what]
    if free < DISK_FAIL_GIB:
        return Check(
            "host.disk",
            "fail",
            f"only {free:.1f} GiB free for {what} ({place})",
            detail,
            fix=f"free space or resize the Linode disk: at least {DISK_FAIL_GIB} GiB are needed",
        )
    if free < DISK_WARN_GIB:
        return Check(
            "host.disk",
            "warn",
            f"{free:.1f} GiB free for {what}: enough for a small model only",
            detail,
            fix=f"models over ~15B parameters need more than {DISK_WARN_GIB} GiB free",
        )
    return Check("host.disk", "ok", f"{free:.1f} GiB free for {what}", detail)


def check_memory(ctx: DoctorContext) -> Check:
    mem = host.memory(ctx.root)
    if mem is None:
        return Check(
            "host.memory",
            "warn",
            "cannot tell how much memory this machine has",
            detail=f"{host.under(ctx.root, Path('/proc/meminfo'))} cannot be read",
            fix="check that /proc is mounted",
        )
    total, available = mem.total_gib, mem.available_gib
    detail = f"{total:.1f} GiB total, {available:.1f} GiB available"
    if total < MEMORY_FAIL_GIB:
        return Check(
            "host.memory",
            "fail",
            f"{total:.1f} GiB of memory is too little for vLLM",
            detail,
            fix=f"choose a plan with at least {MEMORY_WARN_GIB} GiB of memory",
        )
    if total < MEMORY_WARN_GIB:
        return Check(
            "host.memory",
            "warn",
            f"{total:.1f} GiB of memory: loading large models may fail",
            detail,
            fix=f"plans with {MEMORY_WARN_GIB} GiB or more load models reliably",
        )
    return Check("host.memory", "ok", f"{total:.1f} GiB of memory", detail)


def check_secrets(ctx: DoctorContext) -> Check:
    store = SecretStore(ctx.settings.paths.secrets)
    problems = store.problems()
    if not store.folder.exists():
        return Check("host.secrets", "ok", f"no secrets yet under {store.folder}")
    if not problems:
        return Check("host.secrets", "ok", f"the secrets under {store.folder} are private")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return Check(
        "host.secrets",
        "fail",
        problems[0] + more,
        detail="; ".join(problems),
        fix=f"`chmod 700 {store.folder}` and `chmod 600` its files (`sandbox-agent up` repairs "
        "file modes); replace a symbolic link by the file itself",
    )


def check_metrics_bind(ctx: DoctorContext) -> Check:
    """The watchdog's metrics name each service's state and every GPU's UUID: for this box
    only, unless a person chose otherwise."""
    w = ctx.settings.watch
    if not w.metrics_port:
        return Check("host.metrics", "ok", "no metrics server (watch.metrics_port is 0)")
    where = f"[{w.metrics_bind}]" if ":" in w.metrics_bind else w.metrics_bind
    if loopback(w.metrics_bind):
        return Check("host.metrics", "ok", f"the watchdog's metrics are on this box only ({where})")
    wildcard = w.metrics_bind in ("0.0.0.0", "::")
    anyone = "anyone who reaches this box" if wildcard else f"anyone who reaches {where}"
    return Check(
        "host.metrics",
        "warn",
        f"the watchdog's metrics on {where}:{w.metrics_port} are open to {anyone}",
        detail="they name each service's state and restarts and every GPU's UUID, with no "
        "login: facts about this box for whoever asks",
        fix="set watch.metrics_bind: 127.0.0.1 (WATCH_METRICS_BIND) and scrape through "
        f"`ssh -L {w.metrics_port}:127.0.0.1:{w.metrics_port}`, or firewall the port to your "
        "Prometheus",
    )


CHECKS = [
    CheckSpec("host.os", check_os, timeout=2),
    CheckSpec("host.disk", check_disk, timeout=5),
    CheckSpec("host.memory", check_memory, timeout=2),
    CheckSpec("host.secrets", check_secrets, timeout=2),
    CheckSpec("host.metrics", check_metrics_bind, timeout=1),
]
