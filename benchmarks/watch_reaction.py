"""The watchdog against a 5-second poller like docker-autoheal, side by side in one run, on
the real engine with the vLLM stand-in; then its own cost over a minute of idle watching.

- hang: each stack's vLLM gets SIGSTOP at the same moment (the port stays open), with the
  seed's own healthcheck (10 s interval, 4 retries); time from the hang to the container's
  next `start` event.
- unhealthy: Docker's healthcheck (1 s, 1 retry, blind to our probes) turns unhealthy in
  both stacks at once; time from each `health_status: unhealthy` event to the next `start`.
- idle: RSS and CPU (% of one core) of `sandbox-agent watch` over 60 s, both services healthy.

The poller does what docker-autoheal does: every 5 s, list the containers whose health is
`unhealthy` and restart them (its default stop timeout, 10 s).

    .venv/bin/python benchmarks/watch_reaction.py [--idle-seconds 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.watch_support import (  # noqa: E402
    Stack,
    Watcher,
    fast_healthcheck_template,
)

POLL = 5.0


class Autoheal(threading.Thread):
    """docker-autoheal's loop: every 5 s, restart what Docker calls unhealthy."""

    def __init__(self, client: Any, project: str) -> None:
        super().__init__(daemon=True)
        self.client, self.project, self.stopped = client, project, threading.Event()

    def run(self) -> None:
        label = f"com.docker.compose.project={self.project}"
        while not self.stopped.wait(POLL):
            for c in self.client.containers.list(filters={"label": label, "health": "unhealthy"}):
                c.restart(timeout=10)


def start_after(stack: Stack, since: float, after_action: str | None = None) -> tuple[float, float]:
    """(when `after_action` happened (or `since`), the container's next start after it)."""
    deadline = time.time() + 240
    while time.time() < deadline:
        raw = stack.client.events(
            since=int(since) - 1,
            until=int(time.time()) + 1,
            decode=True,
            filters={"container": stack.container().id, "event": ["health_status", "start"]},
        )
        mark = since if after_action is None else None
        for e in raw:
            t = e["timeNano"] / 1e9
            if t < since:
                continue
            if mark is None and e["Action"] == after_action:
                mark = t
            elif mark is not None and e["Action"] == "start" and t > mark:
                return mark, t
        time.sleep(1)
    raise RuntimeError(f"{stack.project}: no restart within 240 s")


def hang_round(ours: Stack, theirs: Stack) -> tuple[float, float]:
    hung = time.time()
    for st in (ours, theirs):
        st.container().kill(signal="SIGSTOP")
    a = start_after(ours, hung)
    b = start_after(theirs, hung)
    return a[1] - a[0], b[1] - b[0]


def unhealthy_round(ours: Stack, theirs: Stack) -> tuple[float, float]:
    since = time.time()
    for st in (ours, theirs):
        st.mark_unhealthy()
    a = start_after(ours, since, "health_status: unhealthy")
    b = start_after(theirs, since, "health_status: unhealthy")
    return a[1] - a[0], b[1] - b[0]


def wait_docker_healthy(*stacks: Stack, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    for st in stacks:
        while st.container().attrs["State"].get("Health", {}).get("Status") != "healthy":
            if time.time() > deadline:
                raise RuntimeError(f"{st.project} never healthy for Docker")
            time.sleep(0.5)


def idle_cost(watcher: Watcher, seconds: float) -> tuple[float, float]:
    pid = watcher.proc.pid
    tick = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    start_cpu, start = cpu(), time.monotonic()
    time.sleep(seconds)
    used = cpu() - start_cpu
    rss = next(
        int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )  # fmt: skip
    return rss / 1024, 100 * used / (time.monotonic() - start)


def say(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="unhealthy rounds")
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--skip-hang", action="store_true", help="skip the ~90 s hang round")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="watch-bench-"))
    stacks: list[Stack] = []
    watchers: list[Watcher] = []
    healers: list[Autoheal] = []
    try:
        # idle first, on a plain stack: both services healthy, nobody calling
        plain = Stack(work / "plain")
        stacks.append(plain)
        watchers.append(Watcher(plain.config))
        watchers[-1].wait_for("service_healthy", 30, service="vllm")
        time.sleep(5)  # past start-up
        rss, cpu = idle_cost(watchers[-1], args.idle_seconds)
        say(f"idle over {args.idle_seconds:.0f}s: RSS {rss:.1f} MB (limit 45), "
              f"CPU {cpu:.3f} % of a core (limit 0.2)")  # fmt: skip

        # a fresh pair each round: a second restart within the hour would wait out the
        # watchdog's backoff (10 s), which is policy, not reaction time
        template = fast_healthcheck_template(work)
        rows = []
        for i in range(args.rounds):
            ours = Stack(work / f"ours-u{i}", template=template)
            theirs = Stack(work / f"theirs-u{i}", template=template)
            stacks += [ours, theirs]
            watchers.append(Watcher(ours.config))
            watchers[-1].wait_for("service_healthy", 30, service="vllm")
            healers.append(Autoheal(theirs.client, theirs.project))
            healers[-1].start()
            wait_docker_healthy(ours, theirs)
            a, b = unhealthy_round(ours, theirs)
            rows.append((a, b))
            say(f"unhealthy round {i + 1}: watchdog {a:.2f}s, 5 s poller {b:.2f}s")
            for done in (ours, theirs):
                done.remove()
        a = sum(r[0] for r in rows) / len(rows)
        b = sum(r[1] for r in rows) / len(rows)
        say(f"unhealthy event -> restart, mean of {len(rows)}: watchdog {a:.2f}s "
            f"(worst {max(r[0] for r in rows):.2f}s), 5 s poller {b:.2f}s "
            f"(poller / watchdog = {b / a:.1f}x)")  # fmt: skip

        if not args.skip_hang:
            ours, theirs = Stack(work / "ours-h"), Stack(work / "theirs-h")
            stacks += [ours, theirs]
            watchers.append(Watcher(ours.config))
            watchers[-1].wait_for("service_healthy", 30, service="vllm")
            healers.append(Autoheal(theirs.client, theirs.project))
            healers[-1].start()
            wait_docker_healthy(ours, theirs, timeout=120)
            a, b = hang_round(ours, theirs)
            say(f"hang -> restart (seed's healthcheck): watchdog {a:.1f}s, 5 s poller {b:.1f}s "
                  f"(poller / watchdog = {b / a:.1f}x)")  # fmt: skip
    finally:
        for h in healers:
            h.stopped.set()
        for w in watchers:
            w.stop()
        for st in stacks:
            st.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
