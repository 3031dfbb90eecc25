"""`sandbox-agent model`: pull, list, rm, fit.

Exit codes: 0 ok, 1 a failure (or a plan that does not fit), 2 bad input.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.cli.options import (
    WholeNumber,
    config_option,
    hf_token,
    host_root,
    json_option,
    load_settings,
)
from agent.cli.render import ToStderr, guarded, render

if TYPE_CHECKING:
    from agent.models import FitReport, ModelList, PullResult, RemoveResult


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def model() -> None:
    """Fetch, list, remove and size Hugging Face models (cache: paths.models, HF_HOME layout)."""


@model.command()
@click.argument("name", metavar="MODEL")
@click.option("--revision", default=None, help="Branch, tag or commit (default: main).")
@config_option
@json_option
@guarded
def pull(name: str, revision: str | None, config_path: Path | None, as_json: bool) -> None:
    """Fetch MODEL (org/name[@revision]) into the cache, verified, resumable."""
    from agent import models
    from agent.refs import ModelRef

    settings = load_settings(config_path)
    ref = ModelRef.parse(name, revision)
    render(models.pull(settings, ref, token=hf_token(settings)), as_json, pull_text)


def pull_text(result: PullResult) -> Iterator[str]:
    state = "already complete" if result.already_complete else "fetched and verified"
    if result.offline:
        state += f" (Hub unreachable: kept the cached copy, {result.revision} not re-checked)"
    yield (
        f"{result.repo_id}@{result.commit[:12]}: {state}, {len(result.files)} files, "
        f"{_gb(result.bytes_total)}"
    )
    yield f"  path: {result.path}"


@model.command(name="list")
@config_option
@json_option
@guarded
def list_(config_path: Path | None, as_json: bool) -> None:
    """Every cached model: complete or not, size, which one is served."""
    from agent import models

    render(models.list_models(load_settings(config_path)), as_json, list_text)


def list_text(result: ModelList) -> Iterator[str]:
    if not result.models:
        yield f"no models in {result.root}"
    for m in result.models:
        state = "complete" if m.complete else "INCOMPLETE"
        refs = ",".join(m.refs) or "-"
        serving = "  (serving)" if m.serving else ""
        yield f"{m.repo_id}  {m.commit[:12]}  {refs}  {_gb(m.bytes)}  {state}{serving}"


@model.command()
@click.argument("name", metavar="MODEL")
@config_option
@json_option
@guarded
def rm(name: str, config_path: Path | None, as_json: bool) -> None:
    """Remove MODEL from the cache (never the model being served)."""
    from agent import models

    render(models.remove(load_settings(config_path), name), as_json, rm_text)


def rm_text(result: RemoveResult) -> Iterator[str]:
    yield f"removed {result.repo_id}: {_gb(result.freed_bytes)} freed"


@model.command()
@click.argument("name", metavar="MODEL")
@click.option("--gpu-memory", default=None, help="Memory per GPU, e.g. 24GB, to plan elsewhere.")
@click.option("--gpus", type=WholeNumber(1, 64), default=None, help="GPU count (default 1).")
@config_option
@json_option
@guarded
def fit(
    name: str, gpu_memory: str | None, gpus: int | None, config_path: Path | None, as_json: bool
) -> None:
    """Would MODEL fit these GPUs? Tensor-parallel size and context, or why not."""
    from agent import deploy
    from agent.models import parse_memory
    from agent.refs import ModelRef

    settings = load_settings(config_path)
    memory = parse_memory(gpu_memory) if gpu_memory is not None else None
    result = deploy.fit(
        settings,
        ModelRef.parse(name),
        hf_token(settings),
        gpu_memory=memory,
        gpus=gpus,
        root=host_root(),
    )
    render(result, as_json, fit_text)


def fit_text(result: FitReport) -> Iterator[str]:
    from agent.models import NO_FIT_FIX

    plan = result.plan
    yield (
        f"{result.model} on {plan.gpu_count} x {_gb(max(plan.gpu_memory))} "
        f"(gpu_memory_utilization {plan.gpu_memory_utilization:.2f}), weights "
        f"{_gb(plan.weights_bytes)} ({plan.weights_source})"
    )
    yield plan.summary()
    if not plan.fits:
        yield ToStderr(f"  fix: {NO_FIT_FIX}")
