"""Median wall time of `sandbox-agent --help` and `doctor`, and what they import.

Run: .venv/bin/python benchmarks/cli_speed.py [runs]
Prints medians side by side with `python -c pass` (the floor any Python CLI pays), so the
ratio means the same on a noisy machine.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

AGENT = str(Path(sys.executable).with_name("sandbox-agent"))
HEAVY = ("docker", "huggingface_hub", "pynvml", "psutil", "yaml", "httpx", "structlog", "asyncio")


def median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def imported_by_help() -> list[str]:
    code = (
        "import sys; from click.testing import CliRunner; from agent.cli import main;"
        "CliRunner().invoke(main, ['--help']);"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    floor = median_seconds([sys.executable, "-c", "pass"], runs)
    rows = [
        ("python -c pass", floor),
        ("sandbox-agent --help", median_seconds([AGENT, "--help"], runs)),
        ("sandbox-agent doctor --json", median_seconds([AGENT, "doctor", "--json"], runs)),
    ]
    print(f"median of {runs} runs")
    for name, seconds in rows:
        print(f"  {name:<30} {seconds * 1000:7.1f} ms   x{seconds / floor:5.1f} of bare python")
    heavy = imported_by_help()
    print(f"  heavy modules imported by --help: {', '.join(heavy) or 'none'}")
    help_ms = rows[1][1] * 1000
    print(f"  --help budget 200 ms: {'within' if help_ms < 200 else 'OVER'} ({help_ms:.0f} ms)")


if __name__ == "__main__":
    main()
