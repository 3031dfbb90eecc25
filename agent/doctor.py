"""doctor: every check, run concurrently, each under its own timeout -> one report."""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import gpu
from agent.checks.base import GPU_INVENTORY, Check, CheckSpec, DoctorContext
from agent.errors import ExitStatus
from agent.results import Result
from agent.settings import Settings

AREAS = ("host", "gpu", "docker", "model", "stack", "https", "backup")


@dataclass(frozen=True)
class DoctorReport(Result):
    checks: tuple[Check, ...]
    gpus: tuple[dict[str, Any], ...]

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    @property
    def exit_code(self) -> int:
        return ExitStatus.OK if self.ok else ExitStatus.FAILED

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [c.as_dict() for c in self.checks],
            "gpus": list(self.gpus),
        }


def all_checks() -> list[CheckSpec]:
    specs: list[CheckSpec] = []
    for area in AREAS:
        specs.extend(importlib.import_module(f"agent.checks.{area}").CHECKS)
    return specs


def run(
    settings: Settings, *, root: Path = Path("/"), specs: list[CheckSpec] | None = None
) -> DoctorReport:
    ctx = DoctorContext(settings=settings, root=root, docker_url=settings.docker.host)
    specs = all_checks() if specs is None else specs
    results: dict[str, Check] = {}

    def work(spec: CheckSpec) -> None:
        try:
            results[spec.id] = spec.run(ctx)
        except Exception as exc:  # noqa: BLE001 - a check never takes doctor down
            results[spec.id] = Check(
                spec.id,
                "fail",
                f"the check itself failed: {type(exc).__name__}: {exc}",
                fix="run `sandbox-agent -v doctor` and report what it logs",
            )

    # Daemon threads: a hung check (a wedged engine socket, a stuck NVML call) must not
    # keep doctor from answering or from exiting.
    threads = {spec.id: threading.Thread(target=work, args=(spec,), daemon=True) for spec in specs}
    start = time.monotonic()
    for thread in threads.values():
        thread.start()
    for spec in specs:
        threads[spec.id].join(max(0.0, start + spec.timeout - time.monotonic()))
    checks = tuple(
        results.get(spec.id)
        or Check(
            spec.id,
            "fail",
            f"no answer within {spec.timeout:g}s",
            fix="the component it checks is hanging; see `sandbox-agent -v doctor`",
        )
        for spec in specs
    )
    inventory = ctx.known(GPU_INVENTORY)
    found = inventory.gpus if isinstance(inventory, gpu.GpuInventory) else ()
    gpus = tuple(g.as_dict() for g in found)
    return DoctorReport(checks, gpus)
