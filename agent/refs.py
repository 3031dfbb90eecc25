"""References the agent takes: a Hugging Face model (repo id + revision), validated by the
Hub's own rules, and a container image, parsed by the distribution reference grammar.

The settings hand a model out (`settings.model.ref`) and every cache path is built from one;
every image setting is parsed here at settings load, which also tells its registry. So the
rules live here, once: settings validation, every fetch and `update` use the same checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent import validate as v
from agent.errors import BadInput
from agent.results import Record

# The Hub's rules: a part neither starts nor ends with - or ., holds no -- (the cache folder
# joins org and name with --) and does not end in .git; `..` is refused by the validator.
_REPO_PART = r"(?![^/]*--)(?![^/]*\.git(?:/|$))[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"

REPO_ID = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")

REVISION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,127}$")


@dataclass(frozen=True)
class ModelRef(Record):
    """A repo id and a revision, both validated: every cache path is built from them."""

    repo_id: str
    revision: str = "main"

    def __post_init__(self) -> None:
        self.check(self.repo_id, self.revision, "model")

    @classmethod
    def check(cls, repo_id: str, revision: str, where: str) -> None:
        cls.check_repo_id(repo_id, where)
        cls.check_revision(revision, f"{where} revision")

    @staticmethod
    def check_repo_id(repo_id: str, where: str) -> None:
        """The Hub's rules for a repo id; the settings and every fetch use this one."""
        if not REPO_ID.fullmatch(repo_id) or ".." in repo_id:
            raise BadInput(
                where,
                f"{v.shown(repo_id)} is not a Hugging Face repo id",
                fix="write it as org/name, e.g. mistralai/Mistral-7B-Instruct-v0.3",
            )

    @staticmethod
    def check_revision(revision: str, where: str) -> None:
        """A branch, tag or commit whose parts can name a file under refs/ (no '.', '..',
        empty parts): the settings and every fetch use this one rule."""
        parts = revision.split("/")
        if not REVISION.fullmatch(revision) or {"..", ".", ""} & set(parts):
            raise BadInput(
                where,
                f"{v.shown(revision)} is not a branch, tag or commit",
                fix="use a branch (main), a tag (v1.0) or a 40-character commit sha",
            )

    @classmethod
    def parse(cls, text: str, revision: str | None = None, where: str = "MODEL") -> ModelRef:
        """`org/name[@revision]`; a bad id is `BadInput` naming `where` (exit 2)."""
        repo_id, _, at = text.partition("@")
        rev = revision or at or "main"
        cls.check(repo_id, rev, where)
        return cls(repo_id, rev)

    def __str__(self) -> str:
        return self.repo_id if self.revision == "main" else f"{self.repo_id}@{self.revision}"


# An image reference by the distribution grammar (distribution/reference, reference.go):
#   reference := name [ ":" tag ] [ "@" digest ];  name := [domain "/"] path
# where the first part is a domain only when it holds a `.` or `:`, is `localhost`, or has an
# upper-case letter (Docker's own split); the path's parts are lower case, joined by `.`, `_`,
# `__` or dashes; a tag is at most 128 characters; the name at most 255.
_DOMAIN_PART = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
REGISTRY = re.compile(
    rf"^(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?$"
)
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_PATH = re.compile(rf"^{_PATH_PART}(?:/{_PATH_PART})*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGESTS = {"sha256": 64, "sha384": 96, "sha512": 128}  # what Docker's digest package takes
DOCKER_HUB = "docker.io"
HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")


def registry_name(value: str, where: str) -> str:
    """A registry as `images.registries` names it: host[:port], lower case; Docker Hub's
    aliases as docker.io."""
    found = REGISTRY.fullmatch(value) if isinstance(value, str) else None
    port = found and found.group("port")
    if found is None or (port and not 0 < int(port) < 65536):
        raise BadInput(
            where,
            f"{v.shown(value)} is not a registry (a host name or address, and a port)",
            fix="name registries as they start an image reference, e.g. registry.example.com:5000",
        )
    name = value.lower()
    return DOCKER_HUB if name in HUB_ALIASES else name


@dataclass(frozen=True)
class ImageRef(Record):
    """An image reference, parsed: which registry it comes from, its path, tag and digest."""

    registry: str  # docker.io when none is named
    path: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str, where: str) -> ImageRef:
        """`[registry[:port]/]path[:tag][@digest]`; anything else is BadInput (exit 2)."""
        bad = BadInput(
            where,
            f"{v.shown(text)} is not a Docker image reference",
            fix="write it as [registry[:port]/]path[:tag][@sha256:digest], "
            "e.g. vllm/vllm-openai:v0.30.0",
        )
        if not isinstance(text, str) or not text.isascii() or not 0 < len(text) <= 512:
            raise bad
        name, _, digest = text.partition("@")
        if digest:
            algorithm, _, hexes = digest.partition(":")
            if DIGESTS.get(algorithm) != len(hexes) or hexes.strip("0123456789abcdef"):
                raise bad
        first, slash, rest = name.partition("/")
        has_registry = slash and (
            "." in first or ":" in first or first == "localhost" or first.lower() != first
        )
        registry, remainder = (first, rest) if has_registry else ("", name)
        path, colon, tag = remainder.rpartition(":") if ":" in remainder else (remainder, "", "")
        if (
            (registry and not REGISTRY.fullmatch(registry))
            or not IMAGE_PATH.fullmatch(path)
            or len(registry) + len(path) + bool(registry) > 255
            or (colon and not TAG.fullmatch(tag))
        ):
            raise bad
        try:
            registry = registry_name(registry, where) if registry else DOCKER_HUB
        except BadInput:
            raise bad from None
        return cls(registry, path, tag or None, digest or None)
