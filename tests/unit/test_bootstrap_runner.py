"""The bootstrap runner with steps of our own: overlap, records, markers, failures, reboot."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent import bootstrap, settings, unitfile
from agent.errors import AgentError
from agent.markers import BootState
from agent.steps import ALL as ALL_STEPS
from agent.steps import Done, RebootNeeded, StepContext, StepMeta, Todo


class Box:
    """What the fake steps change: a set of facts, and the order things happened in."""

    def __init__(self) -> None:
        self.facts: set[str] = set()
        self.events: list[str] = []
        self.lock = threading.Lock()

    def note(self, what: str) -> None:
        with self.lock:
            self.events.append(what)


def step(
    box: Box,
    sid: str,
    needs: tuple[str, ...] = (),
    *,
    wait: float = 0.0,
    fail: str | None = None,
    reboot: bool = False,
    skip: str | None = None,
) -> Any:
    def check(ctx: StepContext) -> Any:
        if skip:
            return Done(f"skipped: {skip}", skipped=True)
        return Done(f"{sid} ok") if sid in box.facts else Todo(f"{sid} missing")

    def apply(ctx: StepContext) -> None:
        box.note(f"start {sid}")
        time.sleep(wait)
        if fail:
            raise AgentError(fail, fix=f"fix {sid}")
        if reboot:
            raise RebootNeeded(f"{sid} needs a reboot", fix="it reboots by itself")
        box.facts.add(sid)
        box.note(f"end {sid}")

    return SimpleNamespace(META=StepMeta(sid, needs, title=sid), check=check, apply=apply)


@pytest.fixture
def ctx(tmp_path: Path, write_config) -> StepContext:
    config = write_config()
    s = settings.load(config)
    root = tmp_path / "root"
    root.mkdir()
    state = BootState(s.paths.state, "12345")
    return StepContext(s, state, root=root, is_root=True, config_path=config)


def statuses(result: bootstrap.BootstrapResult) -> dict[str, str]:
    return {s.id: s.status for s in result.steps}


def test_a_step_starts_as_soon_as_its_needs_are_done_not_after_slower_siblings(ctx) -> None:
    box = Box()
    steps = [
        step(box, "preflight"),
        step(box, "driver", ("preflight",), wait=0.4),
        step(box, "model", ("preflight",), wait=0.2),
        step(box, "stack", ("driver", "model")),
    ]
    result = bootstrap.run(ctx, steps)
    assert result.status == "done" and set(statuses(result).values()) == {"done"}
    # the model started before the driver ended: they overlapped
    assert box.events.index("start model") < box.events.index("end driver")
    assert box.events.index("start stack") > box.events.index("end driver")
    # no wall-clock bound: the order of events proves the overlap; a busy machine is slow


def test_markers_are_written_only_after_success_and_a_failed_step_runs_again(ctx) -> None:
    box = Box()
    steps = [
        step(box, "preflight"),
        step(box, "docker", ("preflight",), fail="no engine"),
        step(box, "images", ("docker",)),
        step(box, "model", ("preflight",)),
    ]
    result = bootstrap.run(ctx, steps)
    assert result.status == "failed" and result.exit_code == 1
    assert statuses(result) == {
        "preflight": "done",
        "docker": "failed",
        "images": "blocked",
        "model": "done",
    }
    failed = result.failed
    assert failed is not None and (failed.detail, failed.fix) == ("no engine", "fix docker")
    assert ctx.state.marker("docker") is None and ctx.state.marker("images") is None
    assert ctx.state.marker("model")["detail"] == "model ok"
    # the failure is on the login screen, with its fix
    motd = (ctx.root / "etc/motd.d/sandbox-agent").read_text()
    assert "SETUP FAILED at step docker:" in motd and "fix: fix docker" in motd
    # next run: the fixed step runs, the done ones are only checked
    box.events.clear()
    steps[1] = step(box, "docker", ("preflight",))
    again = bootstrap.run(ctx, steps)
    assert again.status == "done"
    assert box.events == ["start docker", "end docker", "start images", "end images"]


def test_a_step_whose_apply_leaves_it_undone_fails_saying_so(ctx) -> None:
    lazy = SimpleNamespace(
        META=StepMeta("lazy"), check=lambda c: Todo("still missing"), apply=lambda c: None
    )
    result = bootstrap.run(ctx, [lazy])
    assert result.failed is not None
    assert result.failed.detail == "lazy did its work but the box still says: still missing"


def test_a_crashing_step_is_a_failure_the_others_still_run(ctx) -> None:
    box = Box()

    def boom(c: StepContext) -> None:
        raise KeyError("oops")

    crash = SimpleNamespace(META=StepMeta("crash"), check=lambda c: Todo("x"), apply=boom)
    result = bootstrap.run(ctx, [crash, step(box, "model")])
    assert statuses(result) == {"crash": "failed", "model": "done"}
    assert result.failed.detail == "internal error: KeyError: 'oops'"


def test_skipped_steps_say_why_and_count_as_done_for_what_needs_them(ctx) -> None:
    box = Box()
    result = bootstrap.run(
        ctx,
        [step(box, "driver", skip="no NVIDIA GPU on the PCI bus"), step(box, "stack", ("driver",))],
    )
    assert statuses(result) == {"driver": "skipped", "stack": "done"}
    assert result.steps[0].detail == "skipped: no NVIDIA GPU on the PCI bus"


def test_reboot_waits_for_running_steps_enables_the_resume_unit_and_resumes(
    ctx, fake_commands
) -> None:
    fake_commands.on(r"^systemctl (daemon-reload|enable sandbox-agent-bootstrap.service|reboot)$")
    box = Box()
    steps = [
        step(box, "preflight"),
        step(box, "driver", ("preflight",), reboot=True),
        step(box, "model", ("preflight",), wait=0.3),
        step(box, "stack", ("driver", "model")),
    ]
    first = bootstrap.run(ctx, steps)
    assert first.status == "rebooting" and first.exit_code == 0
    assert statuses(first) == {
        "preflight": "done",
        "driver": "reboot",
        "model": "done",
        "stack": "pending",
    }
    assert "end model" in box.events  # the fetch finished before the reboot
    assert [" ".join(c) for c in fake_commands.calls] == [
        "systemctl daemon-reload",
        "systemctl enable sandbox-agent-bootstrap.service",
        "systemctl reboot",
    ]
    unit = ctx.root / "etc/systemd/system/sandbox-agent-bootstrap.service"
    # the unit runs this sandbox-agent, on the settings file this run read (not the default)
    lines = unit.read_text().splitlines()
    assert f"ExecStart={unitfile.agent_command()} bootstrap --config {ctx.config_path}" in lines
    assert f"ConditionPathExists={ctx.config_path}" in lines
    recorded = json.loads((ctx.state.folder / "last-run.json").read_text())
    assert recorded["status"] == "rebooting"
    # the boot: the driver loads now; the run resumes after it and removes the resume unit
    fake_commands.calls.clear()
    fake_commands.on(r"^systemctl disable sandbox-agent-bootstrap.service$")
    box.events.clear()
    steps[1] = step(box, "driver", ("preflight",))
    second = bootstrap.run(ctx, steps)
    assert second.status == "done"
    assert box.events == ["start driver", "end driver", "start stack", "end stack"]
    assert not unit.exists()
    assert [" ".join(c) for c in fake_commands.calls] == [
        "systemctl disable sandbox-agent-bootstrap.service",
        "systemctl daemon-reload",
    ]


def test_plan_runs_checks_only_and_says_what_would_run_and_after_what(ctx) -> None:
    box = Box()
    box.facts.add("preflight")
    steps = [
        step(box, "preflight"),
        step(box, "driver", ("preflight",), skip="no GPU"),
        step(box, "model", ("preflight",)),
        step(box, "stack", ("model",)),
        step(box, "bad", fail="x"),
    ]
    steps[-1].check = lambda c: (_ for _ in ()).throw(AgentError("cannot tell", fix="look"))
    plan = bootstrap.plan(ctx, steps)
    assert [(s.id, s.action, s.why, s.after) for s in plan.steps] == [
        ("preflight", "done", "preflight ok", ()),
        ("driver", "skip", "no GPU", ()),
        ("model", "run", "model missing", ()),
        ("stack", "run", "stack missing", ("model",)),
        ("bad", "fail", "cannot tell", ()),
    ]
    assert plan.exit_code == 1
    assert box.events == [] and not ctx.state.folder.exists()


def test_status_reads_what_a_run_recorded(ctx) -> None:
    box = Box()
    bootstrap.run(ctx, [step(box, "preflight"), step(box, "model", ("preflight",))])
    last = bootstrap.last_run(ctx.state)
    assert last is not None and last.status == "done"
    assert [(s.id, s.status, s.detail) for s in last.steps] == [
        ("preflight", "done", "preflight ok"),
        ("model", "done", "model ok"),
    ]


def test_markers_are_per_instance(ctx, tmp_path: Path) -> None:
    ctx.state.mark_done("model", "fetched")
    other = BootState(ctx.settings.paths.state, "99999")
    assert ctx.state.marker("model")["detail"] == "fetched" and other.marker("model") is None


def test_on_a_terminal_the_checklist_is_redrawn_in_place(ctx, capsys) -> None:
    from agent.cli.bootstrap import _Board

    box = Box()
    board = _Board()
    bootstrap.run(
        ctx, [step(box, "preflight"), step(box, "model", ("preflight",))], listener=board.draw
    )
    out = capsys.readouterr().out
    frames = out.split("\x1b[2F\x1b[J")  # up two lines, clear: the same two lines again
    assert len(frames) > 3
    assert frames[-1].splitlines() == [
        "[x] preflight  done     preflight ok",
        "[x] model      done     model ok",
    ]


def test_a_step_that_needs_no_step_is_refused_before_anything_runs(ctx) -> None:
    from agent.steps import check_steps

    box = Box()
    typo = [step(box, "preflight"), step(box, "stack", ("preflihgt",))]
    with pytest.raises(ValueError, match=r"step stack needs \['preflihgt'\], which are not steps"):
        bootstrap.run(ctx, typo)
    assert box.events == []
    loop = [step(box, "a", ("b",)), step(box, "b", ("a",))]
    with pytest.raises(ValueError, match="cycle"):
        check_steps(loop)
    check_steps(ALL_STEPS)  # the real steps pass (and are checked at import)
