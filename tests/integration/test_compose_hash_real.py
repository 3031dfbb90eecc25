"""The hashes recorded in tests/unit/test_compose_hash.py are still what the real Compose v2
binary computes: `config --hash` for a service without env files, the label `docker compose
create` writes for one with them (their contents merged, as `up` does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.compose_hashes import CASES, real_hash
from tests.integration.stack_support import docker_client, standin_images
from tests.unit.test_compose_hash import RECORDED

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def engine() -> None:
    docker_client()
    standin_images()  # the env-file cases are created from the vllm stand-in's :current tag


@pytest.mark.parametrize("case", sorted(CASES))
def test_recorded_hash_is_the_real_binarys(case: str, tmp_path: Path, engine: None) -> None:
    assert real_hash(case, tmp_path) == RECORDED[case]
