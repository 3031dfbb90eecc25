"""Fixtures the integration tier shares."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.fakes import acme


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[acme.Pebble]:
    """A real ACME CA (pebble) and its mock DNS on 127.0.0.1, for the whole session.

    Issuances are counted from pebble's start: take ``pebble.issued()`` before an action and
    compare after. A test that points a name elsewhere (``pebble.answer``) puts it back
    (``pebble.forget``)."""
    with contextlib.ExitStack() as stack:
        try:
            ca = stack.enter_context(acme.running_pebble(tmp_path_factory.mktemp("pebble")))
        except acme.AcmeFixtureError as exc:
            pytest.fail(f"the ACME fixture did not start: {exc}")
        yield ca
