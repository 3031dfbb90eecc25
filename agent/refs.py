"""A Hugging Face model reference (repo id + revision), validated by the Hub's own rules.

The settings hand it out (`settings.model.ref`) and every cache path is built from one, so the
rules live here, once: settings validation and every fetch use the same checks.
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
