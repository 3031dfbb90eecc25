"""The bootstrap runner: every step as soon as its needs are met, recorded, resumable.

A step starts the moment all it needs is done, so the model fetch (after preflight and the
folders) overlaps the driver, Docker, the toolkit and the image pulls. Each change of a step is
recorded in `paths.state/bootstrap/<instance id>/last-run.json` (what `--status` shows) and a
journal event (`step.start`, `step.done`, `step.skipped` with its reason, `step.failed`); a
marker is written only after a step succeeded and was checked again. A failed step blocks only
the steps that need it, and runs again next time. When the driver needs a reboot, the runner
lets running steps finish, enables `sandbox-agent-bootstrap.service`, and reboots; that unit
runs this again at boot, and it resumes where it stopped.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from agent import log, maintenance, motd, proc
from agent.errors import AgentError, ExitStatus
from agent.markers import BootState
from agent.results import INTERNAL, Result
from agent.steps import (
    ALL,
    Done,
    Outcome,
    RebootNeeded,
    Step,
    StepContext,
    Todo,
    check_steps,
    units,
)

Status = Literal["pending", "running", "done", "skipped", "failed", "blocked", "reboot"]
FINISHED = ("done", "skipped")


@dataclass(frozen=True)
class StepRecord(Result):
    id: str
    title: str
    status: Status = "pending"
    detail: str = ""
    fix: str | None = None
    seconds: float = 0.0
    progress: str = ""


@dataclass(frozen=True)
class BootstrapResult(Result):
    instance_id: str
    status: Literal["done", "failed", "rebooting", "running"]
    steps: tuple[StepRecord, ...]
    seconds: float = 0.0
    motd: str | None = field(default=None, metadata=INTERNAL)

    @property
    def exit_code(self) -> int:
        return ExitStatus.FAILED if self.status == "failed" else ExitStatus.OK

    @property
    def failed(self) -> StepRecord | None:
        return next((s for s in self.steps if s.status == "failed"), None)


Listener = Callable[[BootstrapResult], None]


def _ignore(_: BootstrapResult) -> None:
    pass


class _Run:
    """One run's bookkeeping: the records, the state file, the events."""

    def __init__(self, ctx: StepContext, steps: Sequence[Step], listener: Listener) -> None:
        self.ctx, self.listener = ctx, listener
        self.records = {s.META.id: StepRecord(s.META.id, s.META.title or s.META.id) for s in steps}
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.log = log.get("bootstrap")

    def snapshot(self, status: Any = "running") -> BootstrapResult:
        with self.lock:
            steps = tuple(self.records.values())
        return BootstrapResult(
            self.ctx.state.instance_id, status, steps, round(time.monotonic() - self.started, 1)
        )

    def update(self, step_id: str, status: Any = "running", **changes: Any) -> None:
        # what a record holds reaches the state file, --status, the console and the MOTD
        for name in ("detail", "fix", "progress"):
            if changes.get(name):
                changes[name] = log.safe_text(changes[name])
        with self.lock:
            old = self.records[step_id]
            self.records[step_id] = replace(old, status=status, **changes)
        if status != old.status:
            event = {"running": "step.start", "reboot": "step.reboot"}.get(status, f"step.{status}")
            fields = {"reason" if status == "skipped" else "detail": changes.get("detail", "")}
            if changes.get("fix"):
                fields["fix"] = changes["fix"]
            (self.log.warning if status == "failed" else self.log.info)(
                event, step=step_id, **fields
            )
        self.save(self.snapshot())

    def progress(self, step_id: str, line: str) -> None:
        with self.lock:
            self.records[step_id] = replace(self.records[step_id], progress=log.safe_text(line))
        self.listener(self.snapshot())

    def save(self, result: BootstrapResult) -> None:
        self.ctx.state.record_run(result.as_dict())
        self.listener(result)


def _check(ctx: StepContext, step: Step) -> Outcome:
    """The step's check; a `per-boot` step is also done when it succeeded on this boot."""
    outcome = step.check(ctx)
    if isinstance(outcome, Todo) and step.META.again == "per-boot":
        marker = ctx.state.marker(step.META.id)
        if marker and marker.get("boot_id") == ctx.boot_id and not marker.get("skipped"):
            return Done(str(marker.get("detail", "done on this boot")))
    return outcome


def _run_step(ctx: StepContext, step: Step, run: _Run) -> None:
    meta, start = step.META, time.monotonic()

    def took() -> float:
        return round(time.monotonic() - start, 1)

    try:
        outcome = _check(ctx, step)
        if isinstance(outcome, Todo):
            run.update(meta.id, "running", detail=outcome.reason)
            said = step.apply(ctx)
            if meta.again == "per-boot":  # what it verified holds until the next boot
                ctx.state.mark_done(meta.id, said or "done", boot_id=ctx.boot_id)
            outcome = _check(ctx, step)
            if isinstance(outcome, Todo):
                raise AgentError(
                    f"{meta.id} did its work but the box still says: {outcome.reason}",
                    fix="see `sandbox-agent bootstrap --status` and the journal; run again",
                )
            if said:
                outcome = Done(said)
        assert isinstance(outcome, Done)
        ctx.state.mark_done(meta.id, outcome.detail, skipped=outcome.skipped, boot_id=ctx.boot_id)
        status = "skipped" if outcome.skipped else "done"
        run.update(meta.id, status, detail=outcome.detail, seconds=took(), progress="")
    except RebootNeeded as exc:
        run.update(meta.id, "reboot", detail=exc.message, fix=exc.fix, seconds=took(), progress="")
    except AgentError as exc:
        run.update(meta.id, "failed", detail=exc.message, fix=exc.fix, seconds=took())
    except Exception as exc:  # noqa: BLE001 - one step's bug must not hide the others' results
        run.log.error("step.crashed", step=meta.id, traceback=traceback.format_exc())
        run.update(
            meta.id,
            "failed",
            detail=f"internal error: {type(exc).__name__}: {exc}",
            fix="run `sandbox-agent -v bootstrap` and report what it logs",
            seconds=took(),
            progress="",
        )


def _worker(ctx: StepContext, step: Step, run: _Run, finished: queue.Queue[str]) -> None:
    try:
        _run_step(ctx, step, run)
    finally:
        finished.put(step.META.id)


def run(
    ctx: StepContext,
    steps: Sequence[Step] = ALL,
    *,
    listener: Listener | None = None,
    reboot: bool = True,
) -> BootstrapResult:
    """Run every step that is not done, overlapped as their needs allow."""
    with maintenance.hold(ctx.settings.paths.state, "bootstrap"):
        return _run_all(ctx, steps, listener or _ignore, reboot)


def _run_all(
    ctx: StepContext, steps: Sequence[Step], listener: Listener, reboot: bool
) -> BootstrapResult:
    # a run over a few steps: needs among the real steps it leaves out count as met
    check_steps(steps, outside=frozenset(s.META.id for s in ALL) - {s.META.id for s in steps})
    state = _Run(ctx, steps, listener)
    ctx.progress = state.progress
    _collect_apt_wants(ctx, steps)
    by_id = {s.META.id: s for s in steps}
    waiting = list(by_id)
    threads: dict[str, threading.Thread] = {}
    finished: queue.Queue[str] = queue.Queue()
    stopping = False
    state.save(state.snapshot())
    while waiting or threads:
        records = state.snapshot().steps
        status = {r.id: r.status for r in records}
        for step_id in list(waiting):
            needs = by_id[step_id].META.needs
            bad = [n for n in needs if status.get(n) in ("failed", "blocked")]
            if bad:
                waiting.remove(step_id)
                status[step_id] = "blocked"  # steps listed after it that need it see it now
                state.update(step_id, "blocked", detail=f"waits for {', '.join(bad)}")
            elif not stopping and all(status.get(n, "done") in FINISHED for n in needs):
                waiting.remove(step_id)
                state.update(step_id, "running", detail="checking")
                thread = threading.Thread(
                    target=_worker,
                    args=(ctx, by_id[step_id], state, finished),
                    name=f"step-{step_id}",
                    daemon=True,
                )
                threads[step_id] = thread
                thread.start()
        if not threads:
            break
        done_id = finished.get()
        threads.pop(done_id).join()
        with state.lock:
            rebooting = state.records[done_id].status == "reboot"
        if rebooting:
            stopping = True  # no new step starts; the running ones finish first
    for step_id in waiting:  # left when stopping for a reboot
        state.update(step_id, "pending", detail="after the reboot")
    return _finish(ctx, state, reboot)


def _finish(ctx: StepContext, state: _Run, reboot: bool) -> BootstrapResult:
    result = state.snapshot()
    rebooting = any(s.status == "reboot" for s in result.steps)
    failed = result.failed
    if rebooting and failed is None:
        units.enable_resume(ctx.root, ctx.config_path)
        result = replace(result, status="rebooting")
        state.save(result)
        state.log.warning("bootstrap.reboot", instance=result.instance_id)
        if reboot:
            proc.run(["systemctl", "reboot"], check=False, timeout=60)
        return result
    if failed is not None or rebooting:
        culprit = failed or next(s for s in result.steps if s.status == "reboot")
        path = motd.write(ctx.root, motd.Failed(culprit.id, culprit.detail, culprit.fix))
        result = replace(result, status="failed", motd=str(path))
    else:
        units.disable_resume(ctx.root)
        result = replace(result, status="done")
    state.save(result)
    state.log.info("bootstrap.end", status=result.status, seconds=result.seconds)
    return result


def _collect_apt_wants(ctx: StepContext, steps: Sequence[Step]) -> None:
    """What each package-installing step would install, so one apt transaction takes all."""
    for step in steps:
        want = getattr(step, "want", None)
        if want is None:
            continue
        try:
            if isinstance(step.check(ctx), Todo):
                ctx.apt.want(step.META.id, want(ctx))
        except AgentError:
            continue  # the step reports it when it runs


# --- plan and status ---------------------------------------------------------------------


@dataclass(frozen=True)
class PlanItem(Result):
    id: str
    title: str
    action: Literal["done", "skip", "run", "fail"]
    why: str
    fix: str | None = None
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlanResult(Result):
    instance_id: str
    steps: tuple[PlanItem, ...]

    @property
    def exit_code(self) -> int:
        return ExitStatus.FAILED if any(s.action == "fail" for s in self.steps) else ExitStatus.OK


def plan(ctx: StepContext, steps: Sequence[Step] = ALL) -> PlanResult:
    """Every step's check, changing nothing: what would run here, and why."""
    items: list[PlanItem] = []
    todo: set[str] = set()
    for step in steps:
        meta = step.META
        title = meta.title or meta.id
        after = tuple(n for n in meta.needs if n in todo)
        try:
            outcome = _check(ctx, step)
        except AgentError as exc:
            items.append(PlanItem(meta.id, title, "fail", exc.message, exc.fix, after))
            todo.add(meta.id)
            continue
        except Exception as exc:  # noqa: BLE001 - one check's bug must not hide the plan
            why = f"internal error: {type(exc).__name__}: {exc}"
            items.append(
                PlanItem(
                    meta.id,
                    title,
                    "fail",
                    why,
                    "run `sandbox-agent -v bootstrap --plan` and report what it logs",
                )
            )
            todo.add(meta.id)
            continue
        if isinstance(outcome, Done):
            action: Literal["done", "skip", "run"] = "skip" if outcome.skipped else "done"
            why = outcome.detail.removeprefix("skipped: ")
            items.append(PlanItem(meta.id, title, action, why, None, after))
        else:
            items.append(PlanItem(meta.id, title, "run", outcome.reason, None, after))
            todo.add(meta.id)
    return PlanResult(ctx.state.instance_id, tuple(items))


def checklist(state: BootState) -> BootstrapResult:
    """`--status`: the last run's checklist, or AgentError when none ran on this instance."""
    last = last_run(state)
    if last is None:
        raise AgentError(
            f"no bootstrap has run on this instance ({state.instance_id})",
            fix="run `sandbox-agent bootstrap`",
        )
    return last


def last_run(state: BootState) -> BootstrapResult | None:
    """The last run's checklist as it was recorded (also when that run was killed)."""
    data = state.last_run()
    if data is None:
        return None
    steps = tuple(StepRecord(**s) for s in data.get("steps", []))
    return BootstrapResult(
        str(data.get("instance_id")), data.get("status", "running"), steps, data.get("seconds", 0)
    )
