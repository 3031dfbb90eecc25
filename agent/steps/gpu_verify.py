"""gpu-verify: every GPU healthy in NVML, and a container given the GPUs sees all of them.

Verified once per boot (`again="per-boot"`: the runner keeps the result for this boot id): a GPU
that fell off the bus shows after a reboot, not before.
"""

from __future__ import annotations

from agent import engine, gpu
from agent.steps.base import Done, Outcome, StepContext, StepFailed, StepMeta, Todo

META = StepMeta(
    "gpu-verify",
    needs=("container-toolkit", "images"),
    again="per-boot",
    title="GPUs in a container",
)


def check(ctx: StepContext) -> Outcome:
    if why := ctx.wants_gpu():
        return Done(f"skipped: {why}", skipped=True)
    return Todo("run a container with the GPUs and count them")


def apply(ctx: StepContext) -> str | None:
    inv = ctx.inventory(fresh=True)
    failing = [p for p in gpu.problems(inv) if p.severity == "fail"]
    if inv.state != "ok" or failing:
        why = failing[0].message if failing else inv.detail
        raise StepFailed(f"the GPUs are not healthy: {why}", fix="see `sandbox-agent doctor`")
    from docker.types import DeviceRequest

    client = ctx.client()
    with engine.engine_errors("a GPU container could not run"):
        out = client.containers.run(
            ctx.settings.images.vllm,
            entrypoint=["nvidia-smi", "-L"],
            device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])],
            remove=True,
            network_disabled=True,
        )
    seen = [line for line in out.decode(errors="replace").splitlines() if line.startswith("GPU ")]
    if len(seen) != len(inv.gpus):
        raise StepFailed(
            f"a container sees {len(seen)} GPU(s), NVML {len(inv.gpus)}",
            fix="run `nvidia-ctk runtime configure --runtime=docker` and restart docker",
        )
    return f"a container sees all {len(seen)} GPU(s)"  # the runner stamps it with the boot
