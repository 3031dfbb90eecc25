"""Which GPUs vLLM gets and so which memory a model is fit on: one rule, computed once per
command and handed to the fit, the pull, `up`, doctor and the bootstrap alike.

`gpus: auto` asks for every healthy GPU when the engine has the NVIDIA runtime (none without
it); `all` every one; a count the first N; `none` no GPU. The model is fit on exactly the GPUs
the container will get, so a switch that fits 8 GPUs but not the 2 the settings give is refused
before a byte is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent import log
from agent.errors import AgentError


@dataclass(frozen=True)
class GpuPlan:
    request: int | str | None  # what vLLM's container asks for: a count, "all", None (no GPU)
    memory: tuple[int, ...]  # memory totals of the GPUs it gets: what the model is fit on

    @property
    def fit_on(self) -> list[int] | None:
        """The memory to fit on, or None: no GPU to fit on (the fit is skipped)."""
        return list(self.memory) if self.memory else None


def gpu_request(setting: int | str, detected: int, has_nvidia_runtime: bool) -> int | str | None:
    """The GPU request for vLLM: `auto` asks only when GPUs and the runtime are both there."""
    if setting == "none" or (setting == "auto" and not detected):
        return None
    if setting == "auto":
        if not has_nvidia_runtime:
            log.get("gpu").warning("gpu.no_runtime", detected=detected)
            return None
        return "all"
    if not has_nvidia_runtime:
        raise AgentError(
            f"gpus: {setting} asks for GPUs, but the Docker engine has no NVIDIA runtime",
            fix="run `sandbox-agent bootstrap` (installs and configures the NVIDIA Container "
            "Toolkit), or set `gpus: none` in config.yaml",
        )
    return int(setting) if setting != "all" else "all"


def chosen(setting: int | str, healthy: list[int]) -> tuple[int, ...]:
    """Memory totals of the GPUs the setting gives vLLM (of the healthy ones): the first N
    for a count, all for auto and all, none for none. What the fit is made on."""
    if setting == "none":
        return ()
    return tuple(healthy[:setting] if isinstance(setting, int) else healthy)


def choose(setting: int | str, healthy: list[int], has_nvidia_runtime: bool) -> GpuPlan:
    """The plan for the `gpus` setting on GPUs with these memory totals (healthy ones only):
    the request needs the engine's NVIDIA runtime (a count without one is refused), the fit
    is on the chosen GPUs whatever the runtime (its absence is a fault of its own)."""
    if setting == "none":
        return GpuPlan(None, ())
    return GpuPlan(gpu_request(setting, len(healthy), has_nvidia_runtime), chosen(setting, healthy))
