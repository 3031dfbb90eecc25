"""The GPUs on a slower period, through one NVML session kept open: lost GPUs, new
uncorrected ECC errors, heat, and critical XIDs where the driver supports event sets. What a
restart cannot heal (a lost GPU, an XID that needs a reset or a reboot) is reported with its
fix, and vLLM is marked failed instead of being restarted in a loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent import gpu
from agent.gpu import xid as xids
from agent.watchdog.report import Reporter

if TYPE_CHECKING:
    from agent.watchdog.metrics import Metrics


@dataclass(frozen=True)
class GpuNews:
    inventory: gpu.GpuInventory
    problems: tuple[gpu.GpuProblem, ...]
    xids: tuple[gpu.XidEvent, ...]
    events: str  # the XID watch's state: watching, not supported: ..., failed: ...


@dataclass
class GpuWatch:
    root: Path = Path("/")
    session: gpu.NvmlSession = field(init=False)
    xid: gpu.XidWatch = field(init=False)

    def __post_init__(self) -> None:
        self.session = gpu.NvmlSession(self.root)
        self.xid = gpu.XidWatch(self.session)

    def read(self) -> GpuNews:
        inventory = self.session.read()
        if self.session.is_open:
            self.xid.open()
        return GpuNews(
            inventory, tuple(gpu.problems(inventory)), tuple(self.xid.poll()), self.xid.state
        )

    def close(self) -> None:
        self.xid.close()
        self.session.close()


def hopeless(news: GpuNews) -> tuple[str, str] | None:
    """(reason, fix) when vLLM cannot be healed by a restart, else None."""
    for p in news.problems:
        if p.kind == "lost":
            return (
                p.message,
                "reboot the box (`sudo reboot`); if it stays lost, the GPU needs service",
            )
    for event in news.xids:
        if xids.needs_person(event.xid):
            return (
                f"GPU {event.index} reported XID {event.xid} ({xids.action(event.xid)})",
                xids.fix(event.xid, event.index),
            )
    return None


def report_gpus(news: GpuNews, report: Reporter, metrics: Metrics | None) -> list[str]:
    """XIDs and problems to the journal (a problem once, until it changes) and the metrics;
    returns the problems, one line each, for the state file."""
    if metrics is not None:
        metrics.gpus(news.inventory)
        for x in news.xids:
            metrics.xid_seen(x.index, x.uuid, x.xid)
    for x in news.xids:
        report.event(
            "gpu_xid",
            "crit" if xids.needs_person(x.xid) else "warning",
            f"GPU {x.index} reported XID {x.xid}",
            gpu=x.index,
            uuid=x.uuid,
            xid=x.xid,
            fix=xids.fix(x.xid, x.index) or None,
        )
    for p in news.problems:
        report.once(
            f"gpu{p.index}.{p.kind}",
            p.message,
            "gpu_problem",
            "crit" if p.severity == "fail" else "warning",
            p.message,
            gpu=p.index,
            uuid=p.uuid,
            kind=p.kind,
        )
    report.once("gpu.events", news.events, "gpu_events", "info", f"XID events: {news.events}")
    return [p.message for p in news.problems]
