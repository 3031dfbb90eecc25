"""`sandbox-agent bootstrap` in a process of its own, with the fake first-boot box
(tests/fakes/box.py) behind the one command runner, and a kill point: with KILL_AFTER=<step>
the process SIGKILLs itself right after that step's marker is written, a step boundary; with
KILL_IN_GATE=1, once the stack's containers are created, before they answered.

    python tests/integration/bootstrap_driver.py bootstrap [ARGS]   (FAKE_BOX=<folder>)

Everything else is real: the Docker engine, the Hub protocol, NVML (through the fake driver
library when LD_LIBRARY_PATH names it), the files.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent import proc  # noqa: E402
from agent.markers import BootState  # noqa: E402
from tests.fakes.box import FakeBox  # noqa: E402


def main() -> None:
    proc.set_runner(FakeBox(Path(os.environ["FAKE_BOX"])))
    kill_after = os.environ.get("KILL_AFTER")
    if kill_after:
        original = BootState.mark_done

        def mark_done(self: BootState, step_id: str, detail: str, **extra: Any) -> None:
            original(self, step_id, detail, **extra)
            if step_id == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

        BootState.mark_done = mark_done  # type: ignore[method-assign]
    if os.environ.get("KILL_IN_GATE"):  # the stack's containers started, not yet answered
        from agent import gate

        def killed(*_: Any, **__: Any) -> None:
            os.kill(os.getpid(), signal.SIGKILL)

        gate.wait_ready = killed  # type: ignore[assignment]
    from agent.cli import main as cli

    cli(sys.argv[1:], prog_name="sandbox-agent")


if __name__ == "__main__":
    main()
