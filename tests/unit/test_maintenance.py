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
