"""stack: the one path that `up` takes (agent.deploy.up): render, reconcile, health-gate,
one real chat completion."""

from __future__ import annotations

from agent import deploy, engine, stack
from agent.errors import AgentError
from agent.steps.base import Done, Outcome, StepContext, StepMeta, Todo

META = StepMeta(
    "stack",
    needs=("images", "fit", "model-fetch", "container-toolkit", "gpu-verify", "directories"),
    title="vLLM + Open WebUI up and answering",
)


def check(ctx: StepContext) -> Outcome:
    try:
        status = stack.stack_status(ctx.client(), ctx.settings)
    except (engine.EngineUnavailable, AgentError):
        return Todo("start the stack once Docker answers")
    wanted = stack.wanted_services(ctx.settings)
    up = [s for s in status.services if s.service in wanted]
    # Docker's own healthcheck may still say "starting" right after the gate passed
    healthy = status.running and not any(s.health == "unhealthy" for s in up)
    if healthy and ctx.state.marker(META.id):  # gated by this instance: the model answered
        return Done(", ".join(f"{s.service} {s.health}" for s in up))
    return Todo(f"start {', '.join(wanted)} and wait until the model answers")


def apply(ctx: StepContext) -> str | None:
    result = deploy.up(
        ctx.settings,
        deploy.UpOptions(
            root=ctx.root,
            token=ctx.token,
            metadata=ctx.metadata,
            progress=lambda line: ctx.progress(META.id, line),
        ),
    )
    ctx.state.mark_done(META.id, f"ready in {result.seconds:.0f}s")
    return f"{result.model} answers at {result.api_url}"
