"""Issue 14 d: during a change, SIGTERM and SIGHUP raise (so the rollback runs, as on
Ctrl-C); a signal the process was started ignoring (`nohup`) stays ignored; afterwards the
handlers are what they were."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from agent.cli.environment import signals_raise


@pytest.fixture
def handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_a_signal_during_a_change_raises_system_exit(handlers: None, sig: signal.Signals) -> None:
    signal.signal(sig, signal.SIG_DFL)
    with pytest.raises(SystemExit) as caught, signals_raise():
        os.kill(os.getpid(), sig)
    assert caught.value.code == 128 + sig
    assert signal.getsignal(sig) is signal.SIG_DFL  # put back after the change


def test_a_signal_ignored_by_nohup_stays_ignored(handlers: None) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with signals_raise():
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGHUP)  # nothing happens
        assert callable(signal.getsignal(signal.SIGTERM))
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
