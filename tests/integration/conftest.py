"""Fixtures the integration tier shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.hub_server import HubServer, running_hub


@pytest.fixture
def hub() -> Iterator[HubServer]:
    """A local Hub-protocol server with no repo yet: a test adds the repos it needs. (A module
    that needs a fixed set of repos defines its own `hub` with them.)"""
    with running_hub() as server:
        yield server
