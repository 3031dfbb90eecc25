"""Which CUDA a vLLM image is built for, and whether a driver runs it: the one rule doctor
(`gpu.driver_vs_image`), `update` and the bootstrap's nvidia-driver step all judge with.

vLLM's own images are `vllm/vllm-openai` (also behind a registry or proxy that keeps that
path, e.g. `registry.example.com/mirror/vllm/vllm-openai`). Their release tags are CUDA 13
builds from v0.20 on and CUDA 12 builds before; a `-cu12x` variant (`-cu126`, `-cu129`) is a
CUDA 12 build of any release, `-cu13x` a CUDA 13 one, and other variants (`-ubuntu2404`)
change nothing. A tag pinned by a digest (`:v0.30.0@sha256:...`) is judged by its tag; a bare
digest, a tag that is no release (`latest`, `nightly`) and every other image cannot be told.
A CUDA major needs a driver branch: 13 needs 580, 12 needs 525 (minor-version compatibility),
11 needs 450.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REPOSITORY = "vllm/vllm-openai"
CUDA13_SINCE = (0, 20)  # the first release whose default tags are CUDA 13 builds
DRIVER_FOR_CUDA = {11: 450, 12: 525, 13: 580}
CUDA13_DRIVER = DRIVER_FOR_CUDA[13]
CUDA12_BUILD = "cu129"  # the CUDA 12 variant vLLM publishes for each CUDA 13 release
DETAIL = "vLLM cannot start its engine on this driver (CUDA reports an insufficient driver)"

_RELEASE = re.compile(r"v?(\d+)\.(\d+)(?:\.[0-9A-Za-z]+)*(?:-(.+))?")
_CUDA_VARIANT = re.compile(r"(?:^|-)cu(1\d)\d(?:-|$)")


@dataclass(frozen=True)
class VllmTag:
    repository: str  # everything before the tag, registry included
    release: str  # "v0.30.0"
    cuda: int


def parse(image: str) -> VllmTag | None:
    """A vllm/vllm-openai release tag, or None when the image is not one."""
    name = image.partition("@")[0]
    repository, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return None  # no tag (a bare digest, or a registry's port)
    parts = repository.split("/")
    if len(parts) > 2 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]  # the registry host
    path = "/".join(parts)
    if path != REPOSITORY and not path.endswith("/" + REPOSITORY):
        return None
    found = _RELEASE.fullmatch(tag)
    if not found:
        return None
    release = tag.split("-", 1)[0]
    variant = _CUDA_VARIANT.search(found[3] or "")
    if variant:
        return VllmTag(repository, release, int(variant[1]))
    cuda = 13 if (int(found[1]), int(found[2])) >= CUDA13_SINCE else 12
    return VllmTag(repository, release, cuda)


def image_cuda(image: str) -> int | None:
    """The CUDA major a vLLM image is built for, or None when it cannot be told."""
    tag = parse(image)
    return tag.cuda if tag else None


def driver_branch(version: str | None) -> int | None:
    """535 of "535.183.01"; None when the version is unknown or not a number."""
    head = (version or "").split(".")[0]
    return int(head) if head.isdigit() else None


@dataclass(frozen=True)
class DriverFit:
    """A vLLM image against the driver that would run it."""

    image: str
    driver: str | None  # the driver's version, "580.95.05"
    cuda: int | None  # the CUDA major the image is built for; None: cannot be told
    need: int | None  # the driver branch that CUDA needs
    driver_cuda: str | None = None  # "12.2": the newest CUDA this driver runs, when known

    @property
    def fits(self) -> bool | None:
        """True or False; None when the image's CUDA or the driver's branch is unknown."""
        branch = driver_branch(self.driver)
        if self.need is None or branch is None:
            return None
        return branch >= self.need

    @property
    def summary(self) -> str:
        if self.cuda is None:
            return f"cannot tell which CUDA {self.image} needs"
        if self.fits is None:
            return "driver version unknown"
        if self.fits:
            need = f"CUDA {self.cuda} needs {self.need} or newer"
            return f"driver {self.driver} runs {self.image} ({need})"
        return (
            f"driver {self.driver} is too old for {self.image}: a CUDA {self.cuda} build needs "
            f"{self.need} or newer"
        )

    @property
    def detail(self) -> str:
        if self.driver_cuda:
            return f"{DETAIL}; driver {self.driver} runs CUDA {self.driver_cuda} at most"
        return DETAIL

    @property
    def cuda12_image(self) -> str | None:
        """The CUDA 12 build of the same release, when this driver runs it."""
        tag = parse(self.image)
        branch = driver_branch(self.driver)
        if tag is None or tag.cuda != 13 or branch is None or branch < DRIVER_FOR_CUDA[12]:
            return None
        return f"{tag.repository}:{tag.release}-{CUDA12_BUILD}"

    def fix(self, use: str) -> str:
        """What to do about a driver that is too old. `use` is this caller's way to set the
        image, with `{image}` where the CUDA 12 build goes."""
        upgrade = f"install the {CUDA13_DRIVER} driver branch and reboot"
        alternative = self.cuda12_image
        return f"{use.format(image=alternative)}, or {upgrade}" if alternative else upgrade


def driver_fit(image: str, driver: str | None, driver_cuda: str | None = None) -> DriverFit:
    cuda = image_cuda(image)
    need = DRIVER_FOR_CUDA.get(cuda) if cuda is not None else None
    return DriverFit(image, driver, cuda, need, driver_cuda)
