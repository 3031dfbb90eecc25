"""`sandbox-agent doctor`: every check with its status, reason and fix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.cli.options import config_option, host_root, json_option, load_settings
from agent.cli.render import guarded, render

if TYPE_CHECKING:
    from agent.doctor import DoctorReport

MARKS = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


@click.command()
@config_option
@json_option
@guarded
def doctor(config_path: Path | None, as_json: bool) -> None:
    """Check the box: every check with its status, reason and fix."""
    from agent import doctor as doctor_mod

    render(doctor_mod.run(load_settings(config_path), root=host_root()), as_json, report_text)


def report_text(report: DoctorReport) -> Iterator[str]:
    width = max(len(c.id) for c in report.checks)
    for check in report.checks:
        yield f"{MARKS[check.status]:>4}  {check.id:<{width}}  {check.summary}"
        if check.status in ("warn", "fail"):
            if check.detail:
                yield f"{'':>4}  {'':<{width}}  why: {check.detail}"
            if check.fix:
                yield f"{'':>4}  {'':<{width}}  fix: {check.fix}"
    for gpu in report.gpus:
        mem = gpu.get("memory_total") or 0
        state = "LOST" if gpu.get("lost") else f"{mem / 1024**3:.0f} GiB"
        yield f"gpu {gpu.get('index')}: {gpu.get('name') or '?'} {gpu.get('uuid') or ''} {state}"
    failed = sum(c.status == "fail" for c in report.checks)
    warned = sum(c.status == "warn" for c in report.checks)
    yield f"\n{'healthy' if not failed else f'{failed} failed'}, {warned} warning(s)"
