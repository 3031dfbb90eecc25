"""Health rules for the GPUs the driver sees: lost, ECC errors, heat, missing answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent.gpu.inventory import Gpu, GpuInventory

MAX_TEMP_C = 85
ProblemKind = Literal["lost", "ecc", "hot", "memory", "error"]


@dataclass(frozen=True)
class GpuProblem:
    index: int
    uuid: str | None
    kind: ProblemKind
    severity: Literal["fail", "warn"]
    message: str


def problems(inv: GpuInventory, *, max_temp_c: int = MAX_TEMP_C) -> list[GpuProblem]:
    """What is wrong with the GPUs the driver sees, failures first."""
    found: list[GpuProblem] = []
    for g in inv.gpus:

        def add(
            kind: ProblemKind, severity: Literal["fail", "warn"], what: str, g: Gpu = g
        ) -> None:
            found.append(GpuProblem(g.index, g.uuid, kind, severity, f"{g.label} {what}"))

        if g.lost:
            where = f"at {g.pci_bus_id} " if g.pci_bus_id else ""
            add("lost", "fail", f"{where}is lost: it no longer answers the driver")
            continue
        if g.ecc_uncorrected:
            add(
                "ecc",
                "fail",
                f"has {g.ecc_uncorrected} uncorrected ECC memory error(s) since the driver loaded",
            )
        if g.temperature_c is not None and g.temperature_c >= max_temp_c:
            add("hot", "warn", f"is at {g.temperature_c} °C (limit {max_temp_c} °C)")
        if g.memory_total is None:
            add("memory", "warn", "did not report its memory")
        if g.error:
            add("error", "warn", f"answered with errors: {g.error}")
    found.sort(key=lambda p: (p.severity != "fail", p.index))
    return found
