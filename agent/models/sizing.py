"""Does the model fit this box? The bridge between the cache and the pure arithmetic
(agent.models.fit): what the settings ask for, and what the snapshot or the Hub says."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent.errors import ExitStatus
from agent.models import fit
from agent.models.cache import snapshot_path
from agent.models.errors import ModelError
from agent.models.hub import WEIGHT_FORMATS, read_config, resolve
from agent.refs import ModelRef
from agent.results import Result
from agent.settings import Settings


@dataclass(frozen=True)
class FitReport(Result):
    """`model fit`: the plan of one model on a list of GPUs."""

    model: ModelRef
    plan: fit.FitPlan

    @property
    def exit_code(self) -> int:
        return ExitStatus.OK if self.plan.fits else ExitStatus.FAILED

    def as_dict(self) -> dict[str, Any]:
        return {"model": str(self.model), **self.plan.as_dict()}


def fit_options(settings: Settings, ref: ModelRef, weight_bytes: int) -> dict[str, Any]:
    """`fit.plan` arguments: the configured context and TP size bind the configured model only."""
    m, own = settings.model, ref.repo_id == settings.model.id
    return {
        "utilization": m.gpu_memory_utilization,
        "weight_bytes": weight_bytes or None,
        "max_model_len": m.max_model_len if own else "auto",
        "tensor_parallel_size": m.tensor_parallel_size if own else "auto",
    }


def fit_model(
    settings: Settings, ref: ModelRef, gpu_memory: list[int], token: str | None
) -> FitReport:
    """The fit plan of `ref` on GPUs of these memory totals (bytes); fetches config.json only."""
    resolved = resolve(settings, ref, token)
    shape = fit.ModelShape.from_config(read_config(settings, resolved, token))
    options = fit_options(settings, ref, resolved.weight_bytes)
    return FitReport(ref, fit.plan(shape, gpu_memory, **options))


def fit_cached(settings: Settings, gpu_memory: list[int]) -> fit.FitPlan:
    """The fit plan of the configured model from its complete snapshot on the GPUs it gets
    (agent.gpu.plan): no network needed. ModelNotCached when the snapshot is not complete;
    ModelError when its config.json cannot be read.
    """
    ref = settings.model.ref
    snap = snapshot_path(settings, ref)
    config = snap / "config.json"
    try:
        shape = fit.ModelShape.from_config(json.loads(config.read_text()))
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot read {config}: {exc}", fix=f"run `sandbox-agent model pull {ref}`"
        ) from None
    weights = sum(p.stat().st_size for p in snap.iterdir() if p.name.endswith(WEIGHT_FORMATS))
    return fit.plan(shape, gpu_memory, **fit_options(settings, ref, weights))
