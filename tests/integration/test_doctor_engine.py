"""doctor on a vLLM whose chat completion does not finish in time: busy (tokens flow) is a
warning, stuck (requests in the engine, no token) is a failure, each saying so."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.watch_support import Stack

pytestmark = pytest.mark.docker


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    st = Stack(tmp_path / "stack")
    try:
        yield st
    finally:
        st.mode(hang=False, token_seconds=0)
        st.remove()


def api_check(st: Stack) -> dict[str, Any]:
    ran = st.run("doctor", "--json", timeout=120)
    checks = {c["id"]: c for c in json.loads(ran.stdout)["checks"]}
    return checks["stack.api"]


def test_a_healthy_engine_is_ok(stack: Stack) -> None:
    assert api_check(stack)["status"] == "ok"


def test_a_busy_engine_is_a_warning_not_a_failure(stack: Stack) -> None:
    stack.mode(token_seconds=3)  # doctor's 4 tokens take 12 s: more than its 8 s budget
    others = [threading.Thread(target=stack.chat, kwargs={"words": 3}) for _ in range(2)]
    for t in others:
        t.start()
    check = api_check(stack)
    assert check["status"] == "warn", check
    assert check["summary"] == (
        "vLLM is busy: tokens flow, but a chat completion did not finish within 8s"
    )
    assert "token(s) generated in the" in check["detail"], check
    stack.mode(token_seconds=0)
    for t in others:
        t.join()


def test_a_stuck_engine_behind_a_healthy_health_is_a_failure(stack: Stack) -> None:
    stack.mode(hang="engine")  # /health and /v1/models answer; no token comes
    check = api_check(stack)
    assert check["status"] == "fail", check
    assert check["summary"] == "vLLM answers /health but its engine is stuck"
    assert "no token generated in the" in check["detail"], check
    assert "systemctl status sandbox-agent" in check["fix"]
