"""`sandbox-agent model`: pull, list, rm, fit. Parse, call one function, render its result.

Exit codes: 0 ok, 1 a failure (or a plan that does not fit), 2 bad input.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from agent.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    config_option,
    emit_json,
    guarded,
    host_root,
    json_option,
    load_settings,
)
from agent.errors import BadInput


def _token(settings: Any) -> str | None:
    from agent.secrets import SecretStore

    return SecretStore(settings.paths.secrets).hf_token(os.environ)


def _ref(text: str, revision: str | None = None) -> Any:
    from agent.models import ModelRef

    return ModelRef.parse(text, revision)


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
    from agent.model_cache import pull as fetch

    settings = load_settings(config_path)
    result = fetch(settings, _ref(name, revision), token=_token(settings))
    if as_json:
        emit_json(result.as_dict())
    else:
        state = "already complete" if result.already_complete else "fetched and verified"
        if result.offline:
            state += f" (Hub unreachable: kept the cached copy, {result.revision} not re-checked)"
        click.echo(
            f"{result.repo_id}@{result.commit[:12]}: {state}, {len(result.files)} files, "
            f"{_gb(result.bytes_total)}"
        )
        click.echo(f"  path: {result.path}")


@model.command(name="list")
@config_option
@json_option
@guarded
def list_(config_path: Path | None, as_json: bool) -> None:
    """Every cached model: complete or not, size, which one is served."""
    from agent.model_cache import list_models

    result = list_models(load_settings(config_path))
    if as_json:
        emit_json(result.as_dict())
        return
    if not result.models:
        click.echo(f"no models in {result.root}")
    for m in result.models:
        state = "complete" if m.complete else "INCOMPLETE"
        refs = ",".join(m.refs) or "-"
        serving = "  (serving)" if m.serving else ""
        click.echo(f"{m.repo_id}  {m.commit[:12]}  {refs}  {_gb(m.bytes)}  {state}{serving}")


@model.command()
@click.argument("name", metavar="MODEL")
@config_option
@json_option
@guarded
def rm(name: str, config_path: Path | None, as_json: bool) -> None:
    """Remove MODEL from the cache (never the model being served)."""
    from agent.model_cache import remove

    result = remove(load_settings(config_path), name)
    if as_json:
        emit_json(result.as_dict())
    else:
        click.echo(f"removed {result.repo_id}: {_gb(result.freed_bytes)} freed")


@model.command()
@click.argument("name", metavar="MODEL")
@click.option("--gpu-memory", default=None, help="Memory per GPU, e.g. 24GB, to plan elsewhere.")
@click.option("--gpus", type=click.IntRange(1, 64), default=None, help="GPU count (default 1).")
@config_option
@json_option
@guarded
def fit(
    name: str, gpu_memory: str | None, gpus: int | None, config_path: Path | None, as_json: bool
) -> None:
    """Would MODEL fit these GPUs? Tensor-parallel size and context, or why not."""
    from agent.fit import NO_FIT_FIX, parse_memory
    from agent.model_fit import fit_model

    settings = load_settings(config_path)
    ref = _ref(name)
    if gpu_memory is not None:
        totals = [parse_memory(gpu_memory)] * (gpus or 1)
    else:
        totals = _local_gpus(gpus)
    result = fit_model(settings, ref, totals, _token(settings))
    if as_json:
        emit_json({"model": str(ref), **result.as_dict()})
    else:
        click.echo(
            f"{ref} on {len(totals)} x {_gb(totals[0])} "
            f"(gpu_memory_utilization {result.gpu_memory_utilization:.2f}), weights "
            f"{_gb(result.weights_bytes)} ({result.weights_source})"
        )
        click.echo(result.summary())
        if not result.fits:
            click.echo(f"  fix: {NO_FIT_FIX}", err=True)
    sys.exit(EXIT_OK if result.fits else EXIT_FAILED)


def _local_gpus(count: int | None) -> list[int]:
    """Memory totals of this box's healthy GPUs, or a BadInput asking for --gpu-memory."""
    from agent import gpu

    inventory = gpu.read_inventory(host_root())
    totals = inventory.healthy_memory
    if not totals:
        raise BadInput(
            "--gpu-memory",
            f"no GPU found on this box to plan for ({inventory.detail})",
            fix="pass --gpu-memory 24GB (and --gpus N) to plan for other hardware",
        )
    if count and count > len(totals):
        raise BadInput(
            "--gpus",
            f"this box has {len(totals)} usable GPU(s), not {count}",
            fix="pass --gpu-memory too (e.g. --gpu-memory 80GB) to plan for other hardware",
        )
    return totals[:count] if count else totals


if __name__ == "__main__":
    model()
