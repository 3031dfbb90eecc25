"""fit: the model's weights and KV cache against the GPUs' memory, or a clear refusal before
anything large is started."""

from __future__ import annotations

from agent import models
from agent.steps.base import Done, Outcome, StepContext, StepMeta, Todo

META = StepMeta("fit", needs=("model-fetch", "nvidia-driver"), title="model fits the GPUs")


def check(ctx: StepContext) -> Outcome:
    if why := ctx.wants_gpu():
        return Done(f"skipped: {why}", skipped=True)
    memory = ctx.inventory().healthy_memory
    if not memory:
        return Todo("read the GPUs' memory once the driver answers")
    gpus = ctx.settings.gpus
    count = gpus if isinstance(gpus, int) else None
    try:
        plan = models.fit_cached(ctx.settings, memory, count)
    except models.ModelError:
        return Todo("fit the model once it is fetched")
    if not plan.fits:
        return Todo(f"does not fit: {plan.reason}")
    return Done(f"tensor parallel {plan.tensor_parallel_size}, context {plan.max_model_len} tokens")


def apply(ctx: StepContext) -> str | None:
    outcome = check(ctx)
    if isinstance(outcome, Todo) and outcome.reason.startswith("does not fit"):
        raise models.NoFit(outcome.reason.removeprefix("does not fit: "), fix=models.NO_FIT_FIX)
    return None
