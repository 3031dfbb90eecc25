"""`sandbox-agent backup` against `tar` of the same folder, and the UI's answer time while a
backup runs against while none does, side by side in one run on the real engine.

    .venv/bin/python benchmarks/backup.py [--mb 200] [--seconds 10] [--webui-image IMAGE]

The data folder is laid out as a used Open WebUI leaves it: `webui.db` (WAL) full of chats,
Chroma's SQLite, uploads half text and half incompressible. Throughput is the folder's size
over the wall time of `sandbox-agent backup` (the CLI a person or the timer runs) and of
`tar -czf` / `tar -cf` of the same folder. Then the stack is started (the stand-in UI, or
`--webui-image`) on that folder, and a client asks the UI's /api/config every 20 ms for
`--seconds` with no backup, then as long again while backups run back to back. Prints
MB/s, sizes, latencies and their ratios; not a timed test.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from tests.integration.stack_support import (  # noqa: E402
    agent,
    docker_client,
    fake_snapshot,
    project_name,
    remove_project,
    standin_images,
    write_config,
)

MB = 1_000_000


def lay_out(folder: Path, megabytes: int) -> int:
    """A used data folder of about `megabytes`: 40% chats, 10% vectors, 50% uploads."""
    (folder / "uploads").mkdir(parents=True)
    (folder / "vector_db").mkdir()
    db = sqlite3.connect(folder / "webui.db")
    db.execute("PRAGMA journal_mode=wal")
    db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    db.execute("INSERT INTO alembic_version VALUES ('0bd252b206fb')")
    db.execute("CREATE TABLE chat (id INTEGER PRIMARY KEY, title TEXT, chat TEXT)")
    words = ("the model said that a backup is only as good as its restore " * 30).encode()
    rows = int(megabytes * 0.4 * MB) // len(words)
    db.executemany(
        "INSERT INTO chat (title, chat) VALUES (?, ?)",
        ((f"chat {i}", words.decode() + str(i)) for i in range(rows)),
    )
    db.commit()
    db.close()
    chroma = sqlite3.connect(folder / "vector_db" / "chroma.sqlite3")
    chroma.execute("CREATE TABLE embeddings (id INTEGER PRIMARY KEY, vector BLOB)")
    chroma.executemany(
        "INSERT INTO embeddings (vector) VALUES (?)",
        ((os.urandom(1536),) for _ in range(int(megabytes * 0.1 * MB) // 1536)),
    )
    chroma.commit()
    chroma.close()
    for i in range(10):
        size = int(megabytes * 0.05 * MB)
        data = os.urandom(size) if i % 2 else (words * (size // len(words) + 1))[:size]
        (folder / "uploads" / f"upload-{i}.{'bin' if i % 2 else 'txt'}").write_bytes(data)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


class Asker(threading.Thread):
    """The UI's answer times (/api/config, every 20 ms) while it runs."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.times = url, threading.Event(), []
        self.failed = 0

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as reply:
                    reply.read()
                self.times.append(time.monotonic() - started)
            except OSError:
                self.failed += 1
            time.sleep(0.02)


def answer_times(
    url: str, seconds: float, during: list[str] | None
) -> tuple[list[float], int, int]:
    asker = Asker(url)
    asker.start()
    runs = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if during:
            ran = agent(*during, timeout=600)
            assert ran.returncode == 0, ran.stderr[-2000:]
            runs += 1
        else:
            time.sleep(0.2)
    asker.stop.set()
    asker.join()
    return asker.times, asker.failed, runs


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the data folder")
    parser.add_argument("--seconds", type=float, default=10.0, help="each latency window")
    parser.add_argument("--webui-image", default=None, help="the UI image (default: stand-in)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backup-", dir="/var/tmp") as tmp:
        folder = Path(tmp)
        vllm, standin = standin_images()
        project = project_name("bench-bk")
        config = write_config(folder, project, (vllm, args.webui_image or standin))
        size = lay_out(folder / "ui_data", args.mb)
        print(f"data folder: {size / MB:.0f} MB (webui.db, chroma.sqlite3, 10 uploads)")
        agent_cmd = [str(Path(sys.executable).with_name("sandbox-agent"))]
        ours = timed([*agent_cmd, "backup", "--config", str(config)])
        [archive] = (folder / "state" / "backups").iterdir()
        data = str(folder / "ui_data")
        gz = timed(["tar", "-czf", str(folder / "tar.tar.gz"), "-C", data, "."])
        plain = timed(["tar", "-cf", str(folder / "tar.tar"), "-C", data, "."])
        rows = [
            ("sandbox-agent backup", ours, archive.stat().st_size),
            ("tar -czf", gz, (folder / "tar.tar.gz").stat().st_size),
            ("tar -cf", plain, (folder / "tar.tar").stat().st_size),
        ]
        for name, seconds, out in rows:
            print(
                f"  {name:<22} {size / MB / seconds:7.1f} MB/s  {seconds:6.2f} s  "
                f"archive {out / MB:7.1f} MB"
            )
        print(
            f"  ratio backup/tar -czf: {gz / ours:.2f}x the speed, "
            f"{rows[0][2] / rows[1][2]:.2f}x the size"
        )

        fake_snapshot(folder / "models", "acme/tiny-chat")
        client = docker_client()
        try:
            ran = agent("up", "--config", str(config), timeout=600)
            assert ran.returncode == 0, ran.stderr[-3000:]
            ui = f"http://127.0.0.1:{yaml.safe_load(config.read_text())['ui']['port']}"
            idle, idle_failed, _ = answer_times(f"{ui}/api/config", args.seconds, None)
            busy, busy_failed, runs = answer_times(
                f"{ui}/api/config", args.seconds, ["backup", "--config", str(config)]
            )
        finally:
            remove_project(client, project)
        print(f"UI answers (/api/config every 20 ms, {args.seconds:.0f} s each):")
        for name, times, failed in (
            ("no backup", idle, idle_failed),
            (f"{runs} backups running", busy, busy_failed),
        ):
            print(
                f"  {name:<22} median {p(times, 0.5):6.1f} ms  p95 {p(times, 0.95):6.1f} ms  "
                f"max {max(times) * 1000:6.1f} ms  failed {failed}"
            )
        print(
            f"  ratio during/idle: median {statistics.median(busy) / statistics.median(idle):.2f}x,"
            f" p95 {p(busy, 0.95) / p(idle, 0.95):.2f}x"
        )


if __name__ == "__main__":
    main()
