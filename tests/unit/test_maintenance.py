"""The maintenance lock: one change at a time, visible to the watchdog, freed by a crash."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from agent import maintenance


def _hold_forever(state: str, ready: multiprocessing.synchronize.Event) -> None:
    with maintenance.hold(Path(state), "switch-model acme/big"):
        ready.set()
        signal.pause()


def test_a_second_change_is_refused_naming_the_first(tmp_path: Path) -> None:
    assert maintenance.current(tmp_path) is None
    with maintenance.hold(tmp_path, "switch-model acme/tiny") as me:
        assert maintenance.current(tmp_path) == me  # what the watchdog sees
        assert me.pid == os.getpid()
    assert maintenance.current(tmp_path) is None  # released, and the file says nothing


def test_another_process_holding_it_blocks_us_and_its_death_frees_it(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_hold_forever, args=(str(tmp_path), ready))
    child.start()
    try:
        assert ready.wait(10)
        seen = maintenance.current(tmp_path)
        assert seen is not None and seen.what == "switch-model acme/big" and seen.pid == child.pid
        with (
            pytest.raises(maintenance.ChangeInProgress, match="switch-model acme/big") as caught,
            maintenance.hold(tmp_path, "update"),
        ):
            pass
        assert caught.value.exit_code == 1 and "wait for it to finish" in str(caught.value.fix)
    finally:
        os.kill(child.pid, signal.SIGKILL)  # kill -9: the kernel drops the lock
        child.join()
    with maintenance.hold(tmp_path, "update") as me:
        assert me.what == "update"


def _probe_until(state: str, stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        maintenance.current(Path(state))  # what the watchdog, status and doctor do


def test_a_probe_of_the_lock_never_makes_a_change_fail(tmp_path: Path) -> None:
    """`current` takes the lock shared for an instant; `hold` retries past it (before, 2 of
    3,211 holds in such a loop were refused as 'another change is running: unknown')."""
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    probers = [ctx.Process(target=_probe_until, args=(str(tmp_path), stop)) for _ in range(2)]
    for p in probers:
        p.start()
    try:
        for i in range(4000):
            with maintenance.hold(tmp_path, f"change {i}") as me:
                assert me.what == f"change {i}"
    finally:
        stop.set()
        for p in probers:
            p.join(10)
    assert maintenance.current(tmp_path) is None


def test_a_change_really_held_is_still_refused_after_the_brief_retry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_hold_forever, args=(str(tmp_path), ready))
    child.start()
    try:
        assert ready.wait(10)
        clock = iter(range(100))
        slept: list[float] = []
        with (
            pytest.raises(maintenance.ChangeInProgress, match="switch-model acme/big"),
            maintenance.hold(
                tmp_path, "update", sleep=slept.append, clock=lambda: next(clock) * 0.1
            ),
        ):
            pass
        assert 0 < len(slept) <= 6  # about half a second of retries, then the refusal
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()


def test_a_change_killed_half_done_is_pending_until_its_journal_goes(tmp_path: Path) -> None:
    journal = maintenance.journal(tmp_path)
    assert maintenance.pending(tmp_path) is None
    with maintenance.hold(tmp_path, "switch-model acme/new"):
        journal.write("switch-model", "starting", Path("rel/config.yaml"), "before")
        assert maintenance.pending(tmp_path) is None  # running: not half done
    found = maintenance.pending(tmp_path)  # the lock is free, the journal is still there
    assert found == maintenance.PendingChange(
        "switch-model", os.path.join(os.getcwd(), "rel/config.yaml")
    )  # recorded absolute
    assert found.fix.startswith("run `sandbox-agent up`: it puts the settings from before")
    journal.clear()
    assert maintenance.pending(tmp_path) is None
