"""watchdog-unit: `sandbox-agent.service` (the watchdog) installed, enabled and running, and
the daily backup's timer installed with it."""

from __future__ import annotations

from agent import proc
from agent.steps import units
from agent.steps.base import Done, Outcome, StepContext, StepMeta, Todo

META = StepMeta("watchdog-unit", needs=("stack",), title="watchdog service")
UNIT = "sandbox-agent.service"
BACKUP_TIMER = "sandbox-agent-backup.timer"  # installed with it: the daily backup


def check(ctx: StepContext) -> Outcome:
    try:
        enabled = proc.run(["systemctl", "is-enabled", UNIT], check=False, timeout=30)
        active = proc.run(["systemctl", "is-active", UNIT], check=False, timeout=30)
        timer = proc.run(["systemctl", "is-enabled", BACKUP_TIMER], check=False, timeout=30)
    except proc.CommandNotFound:
        return Todo("systemd is not here")
    if enabled.returncode == 0 and active.returncode == 0 and timer.returncode == 0:
        return Done(f"{UNIT} is enabled and active, {BACKUP_TIMER} enabled")
    return Todo(f"install and start {UNIT} and {BACKUP_TIMER}")


def apply(ctx: StepContext) -> str | None:
    from agent.watchdog.install import install_unit  # the watch's own installer

    done = install_unit(unit_dir=ctx.path("/" + units.UNIT_DIR), config=ctx.config_path)
    return f"{UNIT} installed ({done.exec_start}), enabled and started"
