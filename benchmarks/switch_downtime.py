"""API downtime of a model change: `sandbox-agent switch-model` against the seed's procedure
(`down`, change the model in the settings, `up`, so the fetch happens while the API is dead),
side by side in one run on the real engine with the stand-ins and the local Hub server.

    .venv/bin/python benchmarks/switch_downtime.py [--fetch 12] [--load 1]

The Hub is throttled so each new model's weights take `--fetch` seconds to download (a real
model takes minutes), and the vLLM stand-in takes `--load` seconds to load. A poller asks
/v1/models (with the key) every 50 ms; the longest run of failed answers is the downtime.
Prints both gaps and their ratio; not a timed test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from tests.fakes.hub_server import running_hub  # noqa: E402
from tests.integration.stack_support import (  # noqa: E402
    agent,
    docker_client,
    fake_snapshot,
    project_name,
    remove_project,
    standin_images,
    write_config,
)

CONFIG = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2}


class Poller(threading.Thread):
    """The longest stretch without a 200 from /v1/models while it runs."""

    def __init__(self, api: str, key_file: Path) -> None:
        super().__init__(daemon=True)
        self.api, self.key_file, self.stop = api, key_file, threading.Event()
        self.longest, self._down_since = 0.0, None

    def ok(self) -> bool:
        key = self.key_file.read_text().strip()
        req = urllib.request.Request(
            f"{self.api}/v1/models", headers={"Authorization": f"Bearer {key}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            if self.ok():
                if self._down_since is not None:
                    self.longest = max(self.longest, now - self._down_since)
                self._down_since = None
            elif self._down_since is None:
                self._down_since = now
            time.sleep(0.05)


def measure(folder: Path, config: Path, change: list[list[str]]) -> float:
    api = f"http://127.0.0.1:{yaml.safe_load(config.read_text())['api']['port']}"
    poller = Poller(api, folder / "secrets" / "api_key")
    poller.start()
    for args in change:
        if args[0] == "set-model":
            data = yaml.safe_load(config.read_text())
            data["model"]["id"] = args[1]
            config.write_text(yaml.safe_dump(data))
            continue
        ran = agent(*args, "--config", str(config), timeout=600)
        if ran.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed: {ran.stderr[-2000:]}")
    time.sleep(0.5)
    poller.stop.set()
    poller.join()
    return poller.longest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetch", type=float, default=12.0, help="seconds a new model downloads")
    parser.add_argument("--load", type=float, default=1.0, help="seconds vLLM loads a model")
    args = parser.parse_args()
    images = standin_images()
    client = docker_client()
    knobs = json.dumps({"load_seconds": args.load}).encode()
    # 64 shards, each held back fetch/8 s: huggingface_hub fetches 8 at a time, so about
    # `fetch` seconds in all, and no single read waits long.
    files = {"config.json": json.dumps(CONFIG).encode(), "standin.json": knobs}
    files.update({f"model-{i:05d}-of-00064.safetensors": bytes([i]) * 10_000 for i in range(64)})
    with running_hub() as hub, tempfile.TemporaryDirectory() as tmp:
        hub.add_repo("bench/ours", files)
        hub.add_repo("bench/seeds", files)
        hub.on_download = lambda repo, path: (
            time.sleep(args.fetch / 8) if path.endswith(".safetensors") else None
        )
        gaps = {}
        for name, change in (
            ("switch-model", [["switch-model", "bench/ours", "--yes"]]),
            ("seed: down, edit, up", [["down"], ["set-model", "bench/seeds"], ["up"]]),
        ):
            folder = Path(tmp) / name.split(":")[0]
            folder.mkdir()
            project = project_name("bench")
            config = write_config(folder, project, images, hub={"endpoint": hub.url},
                                  timeouts={"ready": 300})  # fmt: skip
            fake_snapshot(folder / "models", "acme/tiny-chat")
            try:
                if agent("up", "--config", str(config), timeout=300).returncode != 0:
                    raise SystemExit("the first up failed")
                gaps[name] = measure(folder, config, change)
            finally:
                remove_project(client, project)
    ours, seeds = gaps["switch-model"], gaps["seed: down, edit, up"]
    print(f"model download {args.fetch:.0f}s, model load {args.load:.0f}s (stand-ins)")
    print(f"longest API gap, switch-model:         {ours:6.2f}s")
    print(f"longest API gap, seed's down/edit/up:  {seeds:6.2f}s")
    print(f"downtime ratio (seed / switch-model):  {seeds / ours:6.1f}x")


if __name__ == "__main__":
    main()
