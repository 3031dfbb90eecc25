"""doctor's gpu.driver_vs_image: CUDA 13 vLLM images (the pinned default) need driver 580+."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agent import settings
from agent.checks import gpu as checks
from agent.checks.base import Check, DoctorContext
from tests.unit.test_gpu_pci import NO_GPU, OK


def check(tmp_path: Path, inv, image: str | None = None) -> Check:
    env = {"MODELS_DIR": str(tmp_path / "models")}
    if image:
        env["VLLM_IMAGE"] = image
    ctx = DoctorContext(settings=settings.load(tmp_path / "none.yaml", env=env), root=tmp_path)
    ctx.once("gpu.inventory", lambda: inv)
    return checks.check_driver_vs_image(ctx)


@pytest.mark.parametrize(
    ("image", "cuda"),
    [
        ("vllm/vllm-openai:v0.30.0", 13),
        ("vllm/vllm-openai:v0.30.0-cu129", 12),
        ("vllm/vllm-openai:v0.30.0-ubuntu2404", 13),
        ("vllm/vllm-openai:v0.14.0", 12),
        ("docker.io/vllm/vllm-openai:v0.21.1", 13),
        ("sandbox-test/vllm-standin:current", None),
        ("vllm/vllm-openai:latest", None),
    ],
)
def test_the_cuda_of_a_vllm_tag(image: str, cuda: int | None) -> None:
    assert checks.image_cuda(image) == cuda


def test_driver_580_runs_the_pinned_image(tmp_path: Path) -> None:
    assert check(tmp_path, OK) == Check(
        "gpu.driver_vs_image",
        "ok",
        "driver 580.95.05 runs vllm/vllm-openai:v0.30.0 (CUDA 13 needs 580 or newer)",
    )


def test_driver_535_is_too_old_for_a_cuda_13_image_and_the_fix_names_the_cu129_tag(
    tmp_path: Path,
) -> None:
    old = replace(OK, driver_version="535.183.01", cuda_driver_version="12.2")
    got = check(tmp_path, old)
    assert (got.status, got.summary) == (
        "fail",
        "driver 535.183.01 is too old for vllm/vllm-openai:v0.30.0: a CUDA 13 build needs "
        "580 or newer",
    )
    assert got.fix == (
        "set images.vllm to the CUDA 12.9 build (vllm/vllm-openai:v0.30.0-cu129), or install "
        "the 580 driver branch and reboot"
    )
    assert check(tmp_path, old, "vllm/vllm-openai:v0.30.0-cu129").status == "ok"


def test_no_gpu_skips_and_an_unknown_image_is_not_judged(tmp_path: Path) -> None:
    assert check(tmp_path, NO_GPU).status == "skip"
    unknown = check(tmp_path, OK, "sandbox-test/vllm-standin:current")
    assert (unknown.status, unknown.summary) == (
        "skip",
        "cannot tell which CUDA sandbox-test/vllm-standin:current needs",
    )
