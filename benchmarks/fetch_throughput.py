"""Fetch throughput: `model pull` (resolve, parallel download, sha256 verification) against
`curl` of the same files from the same local Hub server, one after the other.

    .venv/bin/python benchmarks/fetch_throughput.py [--mb 200] [--files 4]

Prints MB/s of each and the ratio; not a timed test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import log, models, settings  # noqa: E402
from tests.fakes.hub_server import running_hub  # noqa: E402

CONFIG = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2}


def serve(mb: int, count: int, queue: multiprocessing.Queue) -> None:
    """The Hub in its own process: in ours it would share the GIL with the client."""
    shard = mb * 10**6 // count
    files = {
        f"model-{i:05d}-of-{count:05d}.safetensors": os.urandom(shard) for i in range(1, count + 1)
    }
    files["config.json"] = json.dumps(CONFIG).encode()
    with running_hub() as hub:
        commit = hub.add_repo("bench/model", files)
        queue.put((hub.url, commit, {name: len(data) for name, data in files.items()}))
        queue.get()  # until the benchmark is done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200, help="total megabytes of weights")
    parser.add_argument("--files", type=int, default=4, help="number of safetensors shards")
    args = parser.parse_args()
    log.configure(stream=open(os.devnull, "w"))  # noqa: SIM115 - the whole run
    queue: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(args.mb, args.files, queue), daemon=True)
    server.start()
    url, commit, files = queue.get(timeout=120)
    total = sum(files.values())
    work = Path(tempfile.mkdtemp(prefix="fetch-bench-"))
    try:
        s = settings.load(
            work / "absent.yaml",
            env={},
            flags={
                "hub.endpoint": url,
                "paths.models": str(work / "models"),
                "paths.secrets": str(work / "secrets"),
            },
        )
        started = time.perf_counter()
        result = models.pull(s, models.ModelRef("bench/model"), progress="none", margin=0)
        pull_s = time.perf_counter() - started
        started = time.perf_counter()
        for name in files:
            hashlib.sha256((result.path / name).read_bytes()).hexdigest()
        sha_s = time.perf_counter() - started

        out = work / "curl"
        out.mkdir()
        cmd = ["curl", "-sS", "--fail"]
        for name in files:
            cmd += ["-o", str(out / name), f"{url}/bench/model/resolve/{commit}/{name}"]
        started = time.perf_counter()
        subprocess.run(cmd, check=True)
        curl_s = time.perf_counter() - started
        assert sum(p.stat().st_size for p in out.iterdir()) == total
    finally:
        queue.put("done")
        server.join(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    mb = total / 1e6
    print(f"payload        {mb:8.1f} MB in {len(files)} files")
    print(f"model pull     {pull_s:8.2f} s  {mb / pull_s:8.1f} MB/s  (resolve, 8 workers, sha256)")
    print(f"  of which     {sha_s:8.2f} s  sha256 of the shards, timed apart")
    print(f"curl           {curl_s:8.2f} s  {mb / curl_s:8.1f} MB/s  (one process, sequential)")
    print(f"ratio pull/curl {(mb / pull_s) / (mb / curl_s):7.2f}")


if __name__ == "__main__":
    main()
