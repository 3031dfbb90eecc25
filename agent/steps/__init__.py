"""The bootstrap's steps, one module each: `META`, `check(ctx)`, `apply(ctx)`."""

from agent.steps import (
    container_toolkit,
    directories,
    docker,
    fit,
    gpu_verify,
    images,
    model_fetch,
    motd,
    nvidia_driver,
    preflight,
    stack,
    watchdog_unit,
)
from agent.steps.base import (
    Done,
    Outcome,
    RebootNeeded,
    Step,
    StepContext,
    StepFailed,
    StepMeta,
    Todo,
    check_steps,
)

ALL: tuple[Step, ...] = (
    preflight,
    directories,
    docker,  # before the driver: when both are ready, Docker's chain (the pulls) is longer
    nvidia_driver,
    container_toolkit,
    model_fetch,
    images,
    gpu_verify,
    fit,
    stack,
    watchdog_unit,
    motd,
)
check_steps(ALL)  # at import: a need that names no step fails here, not on a box

__all__ = [
    "ALL",
    "Done",
    "Outcome",
    "RebootNeeded",
    "Step",
    "StepContext",
    "StepFailed",
    "StepMeta",
    "Todo",
    "check_steps",
]
