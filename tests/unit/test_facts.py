"""agent.facts: read once whoever asks first; one slow fact holds up no other."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from agent.facts import Facts


def test_many_asking_at_once_read_it_once() -> None:
    facts, reads, gate = Facts(), [], threading.Event()

    def read() -> str:
        reads.append(1)
        gate.wait(5)
        return "inventory"

    with ThreadPoolExecutor(8) as pool:
        asked = [pool.submit(facts.once, "gpu", read) for _ in range(8)]
        gate.set()
        answers = [f.result(timeout=5) for f in asked]
    assert answers == ["inventory"] * 8
    assert reads == [1]
    assert facts.known("gpu") == "inventory"


def test_a_slow_fact_holds_up_no_other() -> None:
    facts, release = Facts(), threading.Event()
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(facts.once, "engine", lambda: release.wait(5) and "slow")
        assert facts.once("os", lambda: "bookworm") == "bookworm"  # while engine still reads
        assert not slow.done()
        release.set()
        assert slow.result(timeout=5) == "slow"


def test_a_read_that_raises_is_read_again_and_forget_reads_anew() -> None:
    facts, tries = Facts(), []

    def flaky() -> int:
        tries.append(1)
        if len(tries) == 1:
            raise OSError("not yet")
        return len(tries)

    with pytest.raises(OSError):
        facts.once("disk", flaky)
    assert facts.known("disk") is None
    assert facts.once("disk", flaky) == 2
    assert facts.once("disk", flaky) == 2
    facts.forget("disk")
    assert facts.once("disk", flaky) == 3
