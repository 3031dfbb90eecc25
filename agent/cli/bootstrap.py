"""`sandbox-agent bootstrap`: a bare GPU box to a healthy, watched stack; `--plan`, `--status`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.cli.environment import current
from agent.cli.options import (
    bootstrap_given,
    config_file,
    config_option,
    hf_token,
    host_root,
    json_option,
    load_settings,
    metadata_url,
)
from agent.cli.render import guarded, render
from agent.log import safe_text

if TYPE_CHECKING:
    from agent.bootstrap import BootstrapResult, PlanResult

MARKS = {
    "done": "[x]",
    "skipped": "[-]",
    "running": "[>]",
    "pending": "[ ]",
    "failed": "[!]",
    "blocked": "[ ]",
    "reboot": "[R]",
}
PLAN_MARKS = {"done": "done", "skip": "skip", "run": " run", "fail": "FAIL"}


@click.command()
@config_option
@json_option
@click.option("--plan", "show_plan", is_flag=True, help="Say what would run here and why.")
@click.option("--status", "show_status", is_flag=True, help="The last run's checklist.")
@click.option(
    "--bundle",
    default=None,
    help="An offline bundle folder (images/ and a wheelhouse); default $SANDBOX_AGENT_BUNDLE.",
)
@click.option("--no-reboot", is_flag=True, help="Stop instead of rebooting when one is needed.")
@guarded
def bootstrap(
    config_path: Path | None,
    as_json: bool,
    show_plan: bool,
    show_status: bool,
    bundle: str | None,
    no_reboot: bool,
) -> None:
    """Install and start everything this box needs; resumes where a previous run stopped."""
    from agent import bootstrap as runner
    from agent.steps import inputs

    settings, root = load_settings(config_path), host_root()
    got = inputs.gather(
        settings, bootstrap_given(bundle), config_path=config_file(config_path), root=root
    )
    if root == Path("/"):  # units the box's own systemd starts (not a laid-out tree)
        inputs.check_units(got)
    tty = current().stdout_isatty and not as_json
    ctx = inputs.context(got, root=root, tty=tty, metadata=metadata_url())
    if show_status:
        render(runner.checklist(ctx.state), as_json, checklist_text)
    elif show_plan:
        render(runner.plan(ctx), as_json, plan_text)
    else:
        inputs.check_ports(settings, ctx.state)
        inputs.save(got)
        # after a reboot the form's token is gone from the environment: the saved one serves
        ctx.token = got.token or hf_token(settings)
        board = _Board() if tty else None
        result = runner.run(ctx, listener=board.draw if board else None, reboot=not no_reboot)
        if board:
            board.draw(result, final=True)
        render(result, as_json, lambda r: result_text(r, drawn=board is not None))


class _Board:
    """The live checklist on a terminal: redrawn in place on every change."""

    def __init__(self) -> None:
        self.lines = 0

    def draw(self, result: BootstrapResult, final: bool = False) -> None:
        out = [safe_text(line) for line in checklist_text(result, summary=False)]
        stdout = current().stdout
        if self.lines:
            stdout.write(f"\x1b[{self.lines}F\x1b[J")
        stdout.write("\n".join(out) + "\n")
        stdout.flush()
        self.lines = len(out)


def checklist_text(result: BootstrapResult, summary: bool = True) -> Iterator[str]:
    width = max((len(s.id) for s in result.steps), default=10)
    for s in result.steps:
        what = s.progress or s.detail
        took = f" ({s.seconds:.0f}s)" if s.seconds >= 1 and s.status in ("done", "failed") else ""
        yield f"{MARKS[s.status]} {s.id:<{width}}  {s.status:<8} {what}{took}"
        if s.status == "failed" and s.fix:
            yield f"    {'':<{width}}  fix: {s.fix}"
    if summary:
        yield f"bootstrap {result.status} on instance {result.instance_id} ({result.seconds:.0f}s)"


def result_text(result: BootstrapResult, drawn: bool) -> Iterator[str]:
    if not drawn:
        yield from checklist_text(result, summary=False)
    if result.status == "done":
        yield f"ready in {result.seconds:.0f}s: see the login message, or `sandbox-agent doctor`"
    elif result.status == "rebooting":
        yield "rebooting to load the NVIDIA driver; bootstrap resumes by itself after the boot"
    else:
        failed = result.failed
        name = failed.id if failed else "a step"
        yield f"bootstrap failed at {name}; fix it and run `sandbox-agent bootstrap` again"


def plan_text(result: PlanResult) -> Iterator[str]:
    yield f"bootstrap plan for instance {result.instance_id} (nothing was changed):"
    width = max(len(s.id) for s in result.steps)
    for s in result.steps:
        after = f" [after {', '.join(s.after)}]" if s.after else ""
        yield f"  {PLAN_MARKS[s.action]}  {s.id:<{width}}  {s.why}{after}"
        if s.fix:
            yield f"        {'':<{width}}  fix: {s.fix}"
