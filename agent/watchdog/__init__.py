"""The watchdog: a pure state machine per service, its signals, the loop and its actions."""

from agent.watchdog.install import InstallResult, install_unit, unit_source
from agent.watchdog.ledger import clear_failed, summary
from agent.watchdog.loop import Watch
from agent.watchdog.machine import Decision, Machine, Policy, Verdict
from agent.watchdog.run import WatchResult, watch
from agent.watchdog.schedule import Periods

__all__ = [
    "Decision",
    "InstallResult",
    "Machine",
    "Periods",
    "Policy",
    "Verdict",
    "Watch",
    "WatchResult",
    "clear_failed",
    "install_unit",
    "summary",
    "unit_source",
    "watch",
]
