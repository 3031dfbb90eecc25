"""docker.*: the engine, and the NVIDIA runtime that hands it the GPUs."""

from __future__ import annotations

from pathlib import Path

from agent import engine
from agent.checks.base import Check, CheckSpec, DoctorContext

TOOLKIT_BINARIES = ("usr/bin/nvidia-ctk", "usr/bin/nvidia-container-runtime")
CDI_DIRS = ("etc/cdi", "var/run/cdi")
CONFIGURE_FIX = (
    "run `nvidia-ctk runtime configure --runtime=docker` then `systemctl restart docker`"
)


def engine_info(ctx: DoctorContext) -> engine.EngineInfo:
    return ctx.once("docker.info", lambda: engine.info(engine.connect(ctx.docker_url, timeout=5)))


def check_engine(ctx: DoctorContext) -> Check:
    try:
        info = engine_info(ctx)
    except engine.EngineUnavailable as exc:
        return Check(
            "docker.engine",
            "fail",
            "the Docker engine is not reachable",
            exc.message,
            exc.fix or "",
        )
    return Check(
        "docker.engine",
        "ok",
        f"Docker Engine {info.version} (API {info.api_version})",
        detail=f"runtimes: {', '.join(info.runtimes)}; data root {info.docker_root}",
    )


def _cdi_specs(root: Path) -> list[Path]:
    found = []
    for folder in CDI_DIRS:
        for spec in sorted((root / folder).glob("*.*")):
            try:
                if "nvidia.com/gpu" in spec.read_text(errors="replace"):
                    found.append(spec)
            except OSError:
                continue
    return found


def check_gpu_runtime(ctx: DoctorContext) -> Check:
    inventory = ctx.gpu_inventory()
    if not inventory.pci and not inventory.gpus:
        return Check(
            "docker.gpu_runtime", "skip", "no NVIDIA GPU on this machine: no runtime needed"
        )
    try:
        info = engine_info(ctx)
    except engine.EngineUnavailable:
        return Check(
            "docker.gpu_runtime", "skip", "the Docker engine is not reachable (see docker.engine)"
        )
    if info.has_nvidia_runtime:
        return Check("docker.gpu_runtime", "ok", "the NVIDIA runtime is configured in Docker")
    specs = _cdi_specs(ctx.root)
    if specs:
        return Check(
            "docker.gpu_runtime",
            "ok",
            "NVIDIA GPUs are described for CDI",
            detail=", ".join(str(s) for s in specs),
        )
    installed = [b for b in TOOLKIT_BINARIES if (ctx.root / b).exists()]
    if installed:
        return Check(
            "docker.gpu_runtime",
            "fail",
            "the NVIDIA Container Toolkit is installed but Docker is not configured to use it",
            detail=f"found {', '.join('/' + b for b in installed)}; "
            f"engine runtimes: {', '.join(info.runtimes)}",
            fix=CONFIGURE_FIX,
        )
    return Check(
        "docker.gpu_runtime",
        "fail",
        "the NVIDIA Container Toolkit is not installed: containers cannot use the GPUs",
        detail=f"engine runtimes: {', '.join(info.runtimes)}",
        fix="run `sandbox-agent bootstrap` "
        "(installs nvidia-container-toolkit and configures Docker)",
    )


CHECKS = [
    CheckSpec("docker.engine", check_engine, timeout=8),
    CheckSpec("docker.gpu_runtime", check_gpu_runtime, timeout=10),
]
