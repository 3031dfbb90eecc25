"""The watchdog's GPU signal against the real nvidia-ml-py and the fake driver library: one
NVML session kept open over many reads, XIDs from an event set, what a restart cannot heal
(a lost GPU, XID 79) with its fix, a driver without event sets, and the metrics it exports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fakes import nvml
from tests.fakes.nvml import GIB, FakeGpu, Scenario

REPO = Path(__file__).resolve().parents[2]
SNIPPET = """
import json, sys, time
from pathlib import Path
from agent.watchdog.gpus import GpuWatch, hopeless
from agent.watchdog.metrics import Metrics
watch, metrics, reads = GpuWatch(Path(sys.argv[1])), Metrics(), []
for i in range(int(sys.argv[2])):
    if i == 1:
        Path(sys.argv[3]).write_text(sys.argv[4])
    news = watch.read()
    metrics.gpus(news.inventory)
    for x in news.xids:
        metrics.xid_seen(x.index, x.uuid, x.xid)
    reads.append({"events": news.events, "xids": [[x.index, x.uuid, x.xid] for x in news.xids],
                  "problems": [p.message for p in news.problems], "hopeless": hopeless(news)})
watch.close()
print(json.dumps({"reads": reads, "metrics": metrics.text()}))
"""


def run(
    lib: Path, scenario: Scenario, tmp_path: Path, *, reads: int = 3, xids: str = ""
) -> tuple[list[dict[str, Any]], str, list[str]]:
    root = tmp_path / "root"
    root.mkdir()
    nvml.add_pci_device(root)
    calls, xid_file = tmp_path / "calls", tmp_path / "xids"
    xid_file.write_text("")
    done = subprocess.run(
        [sys.executable, "-c", SNIPPET, str(root), str(reads), str(xid_file), xids],
        env=nvml.fake_env(lib, scenario.write(tmp_path / "scenario"), calls=calls, xids=xid_file),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    return out["reads"], out["metrics"], calls.read_text().split() if calls.exists() else []


def series(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def card(index: int, **kw: Any) -> FakeGpu:
    return FakeGpu(
        uuid=f"GPU-{index:08x}-aaaa",
        bus=f"00000000:{index + 1:02X}:00.0",
        util=37,
        power_mw=215_500,
        mem_used=3 * GIB,
        temp=44,
        **kw,
    )


def test_one_session_many_reads_and_an_xid_that_needs_a_reboot(
    fake_nvml_dir: Path, tmp_path: Path
) -> None:
    reads, metrics, calls = run(
        fake_nvml_dir, Scenario((card(0), card(1))), tmp_path, xids="1 79\n0 13\n"
    )
    assert calls.count("nvmlInitWithFlags") == 1 and calls.count("nvmlShutdown") == 1
    assert calls.count("nvmlEventSetCreate") == 1 and "nvmlEventSetFree" in calls
    assert [r["events"] for r in reads] == ["watching"] * 3
    assert reads[0]["xids"] == [] and reads[2]["xids"] == []
    assert reads[1]["xids"] == [[1, "GPU-00000001-aaaa", 79], [0, "GPU-00000000-aaaa", 13]]
    reason, fix = reads[1]["hopeless"]
    assert reason == "GPU 1 reported XID 79 (reboot)"
    assert fix == "the GPU fell off the bus: reboot the box (`sudo reboot`)"
    values = series(metrics)
    for name, value in (
        ('sandbox_agent_gpu_utilization_ratio{gpu="0",uuid="GPU-00000000-aaaa"}', 0.37),
        ('sandbox_agent_gpu_power_watts{gpu="1",uuid="GPU-00000001-aaaa"}', 215.5),
        ('sandbox_agent_gpu_temperature_celsius{gpu="0",uuid="GPU-00000000-aaaa"}', 44),
        ('sandbox_agent_gpu_memory_used_bytes{gpu="0",uuid="GPU-00000000-aaaa"}', 3 * GIB),
        ('sandbox_agent_gpu_memory_total_bytes{gpu="1",uuid="GPU-00000001-aaaa"}', 80 * GIB),
        ('sandbox_agent_gpu_xid_events_total{gpu="1",uuid="GPU-00000001-aaaa",xid="79"}', 1),
        ('sandbox_agent_gpu_xid_events_total{gpu="0",uuid="GPU-00000000-aaaa",xid="13"}', 1),
    ):
        assert values.get(name) == value, name


def test_an_application_xid_is_counted_but_restarting_heals_it(
    fake_nvml_dir: Path, tmp_path: Path
) -> None:
    reads, _, _ = run(fake_nvml_dir, Scenario((card(0),)), tmp_path, xids="0 13\n")
    assert reads[1]["xids"] == [[0, "GPU-00000000-aaaa", 13]] and reads[1]["hopeless"] is None


def test_a_lost_gpu_is_reported_with_a_reboot(fake_nvml_dir: Path, tmp_path: Path) -> None:
    reads, _, _ = run(fake_nvml_dir, Scenario((card(0), card(1, lost=True))), tmp_path)
    reason, fix = reads[0]["hopeless"]
    assert reason == "GPU 1 (GPU-00000001-aaaa) is lost: it no longer answers the driver"
    assert fix.startswith("reboot the box")


def test_a_driver_without_event_sets_is_not_supported_not_broken(
    fake_nvml_dir: Path, tmp_path: Path
) -> None:
    scenario = Scenario((card(0),), errors={"nvmlEventSetCreate": nvml.FUNCTION_NOT_FOUND})
    reads, metrics, _ = run(fake_nvml_dir, scenario, tmp_path)
    assert reads[0]["events"].startswith("not supported: ")
    assert "Function Not Found" in reads[0]["events"]
    assert all(r["xids"] == [] and r["hopeless"] is None for r in reads)
    assert (
        series(metrics)['sandbox_agent_gpu_utilization_ratio{gpu="0",uuid="GPU-00000000-aaaa"}']
        == 0.37
    )


def test_no_driver_library_reads_without_raising(tmp_path: Path) -> None:
    reads, metrics, _ = run(None, Scenario(), tmp_path)  # type: ignore[arg-type]
    assert [r["events"] for r in reads] == ["closed"] * 3
    assert "sandbox_agent_gpu_utilization_ratio{" not in metrics
