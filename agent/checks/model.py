"""model.*: the configured model is complete on disk, and it fits the GPUs of this box.

No network, no huggingface_hub: the cache and our verification markers are read from disk.
"""

from __future__ import annotations

from agent import gpu
from agent.checks.base import Check, CheckSpec, DoctorContext
from agent.errors import AgentError
from agent.models import (
    ModelError,
    cache_root,
    cached_commit,
    fit_cached,
    is_complete,
    repo_dir,
)
from agent.refs import ModelRef


def _ref(ctx: DoctorContext) -> ModelRef:
    return ctx.settings.model.ref


def _pull_fix(ref: ModelRef) -> str:
    return f"run `sandbox-agent model pull {ref}`"


def check_cache(ctx: DoctorContext) -> Check:
    ref = _ref(ctx)
    commit = cached_commit(ctx.settings, ref)
    if commit and is_complete(ctx.settings, ref.repo_id, commit):
        snap = repo_dir(ctx.settings, ref.repo_id) / "snapshots" / commit
        size = sum(p.stat().st_size for p in snap.iterdir() if p.is_file())
        return Check(
            "model.cache",
            "ok",
            f"{ref} complete ({size / 1e9:.2f} GB)",
            detail=f"{snap} (commit {commit})",
        )
    partial = list((repo_dir(ctx.settings, ref.repo_id) / "snapshots").glob("*"))
    if partial:
        return Check(
            "model.cache",
            "fail",
            f"{ref} is only partly downloaded",
            detail=f"no verified snapshot for revision {ref.revision} under "
            f"{cache_root(ctx.settings)}",
            fix=_pull_fix(ref) + " to finish it",
        )
    return Check(
        "model.cache",
        "fail",
        f"{ref} is not downloaded",
        detail=f"nothing under {repo_dir(ctx.settings, ref.repo_id)}",
        fix=_pull_fix(ref),
    )


def _gpu_memory(ctx: DoctorContext) -> tuple[list[int], str]:
    """Memory totals of the healthy GPUs (as deploy fits them), or why there are none."""
    inv = ctx.gpu_inventory()
    memory = inv.healthy_memory
    if not memory:
        return [], f"no usable GPU ({inv.detail or 'none found'})"
    # the GPUs vLLM gets (agent.gpu.plan); the runtime is doctor's docker.nvidia check
    return list(gpu.chosen(ctx.settings.gpus, memory)), ""


def check_fit(ctx: DoctorContext) -> Check:

    ref = _ref(ctx)
    if ctx.settings.gpus == "none":
        return Check("model.fit", "skip", "gpus is 'none': vLLM runs without a GPU")
    commit = cached_commit(ctx.settings, ref)
    if not commit or not is_complete(ctx.settings, ref.repo_id, commit):
        return Check("model.fit", "skip", f"{ref} is not downloaded yet", fix=_pull_fix(ref))
    memory, why = _gpu_memory(ctx)
    if not memory:
        return Check("model.fit", "skip", "no GPU memory to fit the model on", detail=why)
    try:
        plan = fit_cached(ctx.settings, memory)
    except ModelError as exc:
        return Check(
            "model.fit", "fail", "cannot read the model's config.json", exc.message, exc.fix or ""
        )
    except AgentError as exc:
        return Check("model.fit", "warn", "cannot size the model", exc.message, exc.fix or "")
    if plan.fits:
        return Check(
            "model.fit",
            "ok",
            f"tp {plan.tensor_parallel_size}, context {plan.max_model_len} on {len(memory)} GPU(s)",
            detail=plan.reason,
        )
    return Check(
        "model.fit",
        "fail",
        f"{ref} does not fit the GPUs of this box",
        detail=plan.reason,
        fix="a smaller or quantized model (`sandbox-agent model fit MODEL` plans one), "
        "more GPUs, or a lower model.max_model_len",
    )


CHECKS: list[CheckSpec] = [
    CheckSpec("model.cache", check_cache, timeout=10.0),
    CheckSpec("model.fit", check_fit, timeout=10.0),
]
