"""fit: the model's weights and KV cache against the GPUs vLLM gets (agent.gpu.plan), or a
clear refusal before anything large is started."""

from __future__ import annotations

from agent import gpu, models
from agent.steps.base import Done, Outcome, StepContext, StepMeta, Todo

META = StepMeta("fit", needs=("model-fetch", "nvidia-driver"), title="model fits the GPUs")


def _plan(ctx: StepContext) -> models.FitPlan | str:
    """The fit, or why it cannot be made yet."""
    memory = ctx.inventory().healthy_memory
    if not memory:
        return "read the GPUs' memory once the driver answers"
    # the fit is on the GPUs vLLM will get; the runtime is the container-toolkit step's
    try:
        return models.fit_cached(ctx.settings, list(gpu.chosen(ctx.settings.gpus, memory)))
    except models.ModelError:
        return "fit the model once it is fetched"


def check(ctx: StepContext) -> Outcome:
    if why := ctx.wants_gpu():
        return Done(f"skipped: {why}", skipped=True)
    plan = _plan(ctx)
    if isinstance(plan, str):
        return Todo(plan)
    if not plan.fits:
        return Todo(f"does not fit: {plan.reason}")
    return Done(f"tensor parallel {plan.tensor_parallel_size}, context {plan.max_model_len} tokens")


def apply(ctx: StepContext) -> str | None:
    if ctx.wants_gpu():
        return None
    plan = _plan(ctx)
    if not isinstance(plan, str) and not plan.fits:
        raise models.NoFit(plan.reason, fix=models.NO_FIT_FIX)
    return None
