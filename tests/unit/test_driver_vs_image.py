"""doctor's gpu.driver_vs_image: CUDA 13 vLLM images (the pinned default) need driver 580+."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agent import gpu, settings
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
        ("vllm/vllm-openai:v0.30.0", 13),  # the pinned default
        ("vllm/vllm-openai:0.30.0", 13),  # no `v`: the same release (update let it through)
        ("vllm/vllm-openai:v0.20.0", 13),  # the first CUDA 13 release
        ("vllm/vllm-openai:v0.19.1", 12),
        ("vllm/vllm-openai:v0.19.0", 12),
        ("vllm/vllm-openai:v0.14.0", 12),
        ("vllm/vllm-openai:v0.8.5.post1", 12),
        ("vllm/vllm-openai:v1.2.0", 13),
        ("vllm/vllm-openai:v0.30.0-cu129", 12),
        ("vllm/vllm-openai:v0.30.0-cu126", 12),
        ("vllm/vllm-openai:v0.19.1-cu126", 12),
        ("vllm/vllm-openai:v0.19.1-cu130", 13),
        ("vllm/vllm-openai:v0.30.0-ubuntu2404", 13),
        ("vllm/vllm-openai:v0.30.0-cu129-ubuntu2404", 12),
        ("vllm/vllm-openai:v0.30.0-arm64-cu129", 12),
        ("vllm/vllm-openai:v0.12.0-cu118", 11),
        ("docker.io/vllm/vllm-openai:v0.21.1", 13),
        ("index.docker.io/vllm/vllm-openai:0.21.1-cu129", 12),
        ("registry.example.com:5000/vllm/vllm-openai:v0.30.0", 13),  # a mirror keeps the path
        ("harbor.example.com/dockerhub/vllm/vllm-openai:v0.30.0", 13),  # a proxy cache
        ("localhost:5000/vllm/vllm-openai:v0.19.0", 12),
        (f"vllm/vllm-openai:v0.30.0@sha256:{'a' * 64}", 13),  # judged by its tag
        (f"vllm/vllm-openai:v0.30.0-cu129@sha256:{'a' * 64}", 12),
        (f"vllm/vllm-openai@sha256:{'a' * 64}", None),  # a bare digest: no release to read
        ("vllm/vllm-openai", None),  # no tag
        ("localhost:5000/vllm/vllm-openai", None),  # a port is no tag
        ("vllm/vllm-openai:latest", None),
        ("vllm/vllm-openai:nightly", None),
        ("myvllm/vllm-openai:v0.30.0", None),  # someone else's image
        ("ghcr.io/someone/vllm-openai:v0.30.0", None),
        ("vllm/vllm-openai-rocm:v0.30.0", None),
        ("ghcr.io/open-webui/open-webui:v0.12.4", None),
        ("sandbox-test/vllm-standin:current", None),
    ],
)
def test_the_cuda_of_a_vllm_tag(image: str, cuda: int | None) -> None:
    assert gpu.image_cuda(image) == cuda


@pytest.mark.parametrize(
    ("image", "driver", "fits", "alternative"),
    [
        ("vllm/vllm-openai:v0.30.0", "580.95.05", True, "vllm/vllm-openai:v0.30.0-cu129"),
        ("vllm/vllm-openai:v0.30.0", "575.57.08", False, "vllm/vllm-openai:v0.30.0-cu129"),
        ("vllm/vllm-openai:0.30.0", "535.183.01", False, "vllm/vllm-openai:0.30.0-cu129"),
        (
            "registry.example.com:5000/vllm/vllm-openai:v0.30.0-ubuntu2404",
            "535.183.01",
            False,
            "registry.example.com:5000/vllm/vllm-openai:v0.30.0-cu129",
        ),
        (
            f"vllm/vllm-openai:v0.21.0@sha256:{'b' * 64}",
            "550.54.15",
            False,
            "vllm/vllm-openai:v0.21.0-cu129",
        ),
        ("vllm/vllm-openai:v0.30.0", "470.256.02", False, None),  # too old for CUDA 12 too
        ("vllm/vllm-openai:v0.30.0-cu129", "535.183.01", True, None),
        ("vllm/vllm-openai:v0.30.0-cu129", "470.256.02", False, None),
        ("vllm/vllm-openai:v0.19.1", "525.60.13", True, None),
        ("vllm/vllm-openai:v0.30.0", None, None, None),  # the driver's version unknown
        ("vllm/vllm-openai:latest", "535.183.01", None, None),
    ],
)
def test_a_driver_against_a_vllm_image(
    image: str, driver: str | None, fits: bool | None, alternative: str | None
) -> None:
    fit = gpu.driver_fit(image, driver)
    assert (fit.fits, fit.cuda12_image) == (fits, alternative)
    if fits is False:
        fix = fit.fix("use {image}")
        upgrade = "install the 580 driver branch and reboot"
        assert fix == (f"use {alternative}, or {upgrade}" if alternative else upgrade)


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
    assert got.detail == (
        "vLLM cannot start its engine on this driver (CUDA reports an insufficient driver); "
        "driver 535.183.01 runs CUDA 12.2 at most"
    )
    assert check(tmp_path, old, "vllm/vllm-openai:v0.30.0-cu129").status == "ok"
    # the tag without its `v` is the same release: refused here as `update` refuses it
    assert check(tmp_path, old, "vllm/vllm-openai:0.30.0").status == "fail"


def test_no_gpu_skips_and_an_unknown_image_is_not_judged(tmp_path: Path) -> None:
    assert check(tmp_path, NO_GPU).status == "skip"
    unknown = check(tmp_path, OK, "sandbox-test/vllm-standin:current")
    assert (unknown.status, unknown.summary) == (
        "skip",
        "cannot tell which CUDA sandbox-test/vllm-standin:current needs",
    )
