"""The bootstrap's overlap: the real step engine (agent.bootstrap.run) over the real steps'
ids and needs, each step only waiting for its share of a reference profile.

Run: .venv/bin/python benchmarks/bootstrap_overlap.py [scale]

Reference profile in seconds (a fresh GPU box): driver 150, docker 40, toolkit 30, image pulls
120, model download 240, model load (the stack step) 90; scaled down 100x by default. The three
package steps hold one lock while they wait, as they share apt (one dpkg lock), Docker's
first as agent/steps/apt.py orders the transactions. Printed, from one run: the serial sum
of the steps' work (their waits for the apt lock left out), the run's wall time, and their
ratio.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import bootstrap, settings  # noqa: E402
from agent.markers import BootState  # noqa: E402
from agent.steps import ALL, Done, StepContext, Todo  # noqa: E402

PROFILE = {
    "nvidia-driver": 150,
    "docker": 40,
    "container-toolkit": 30,
    "images": 120,
    "model-fetch": 240,
    "stack": 90,
}
APT = ("nvidia-driver", "docker", "container-toolkit")


def waiting_steps(scale: float, worked: dict[str, float]) -> list[Any]:
    apt = threading.Lock()
    engine_installed = threading.Event()  # agent.steps.apt: Docker's transaction goes first
    done: set[str] = set()
    steps = []
    for real in ALL:
        sid = real.META.id

        def check(ctx: StepContext, sid: str = sid) -> Any:
            return Done(f"{sid} done") if sid in done else Todo(f"{sid} to do")

        def apply(ctx: StepContext, sid: str = sid) -> None:
            seconds = PROFILE.get(sid, 0) / scale
            if sid in APT and sid != "docker":
                engine_installed.wait()
            with apt if sid in APT else contextlib.nullcontext():
                start = time.monotonic()
                time.sleep(seconds)
                worked[sid] = time.monotonic() - start  # the work, not the wait for apt
            if sid == "docker":
                engine_installed.set()
            done.add(sid)

        steps.append(SimpleNamespace(META=real.META, check=check, apply=apply))
    return steps


def main() -> None:
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 100.0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = {k: str(folder / k) for k in ("models", "ui_data", "stack", "state", "secrets")}
        s = settings.load(folder / "none.yaml", flags={f"paths.{k}": v for k, v in paths.items()})
        root = folder / "root"
        root.mkdir()
        ctx = StepContext(s, BootState(s.paths.state, "bench"), root=root, is_root=True)
        worked: dict[str, float] = {}
        started = time.monotonic()
        result = bootstrap.run(ctx, waiting_steps(scale, worked), reboot=False)
        wall = time.monotonic() - started
    assert result.status == "done", result
    serial = sum(worked.values())
    expected = sum(PROFILE.values()) / scale
    print(f"profile (scaled 1/{scale:g}): {', '.join(f'{k} {v}s' for k, v in PROFILE.items())}")
    print(f"serial sum of the steps: {serial:.2f} s (profile says {expected:.2f} s)")
    print(f"overlapped wall time:    {wall:.2f} s")
    print(f"overlapped/serial ratio: {serial / wall:.2f}x faster")


if __name__ == "__main__":
    main()
