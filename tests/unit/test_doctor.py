"""doctor's runner: concurrent, each check under its own timeout, a crash is a failed check."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from agent import doctor, settings
from agent.checks.base import Check, CheckSpec


def test_hung_and_crashing_checks_fail_without_holding_up_the_report(tmp_path: Path) -> None:
    release = threading.Event()

    def hangs(ctx):  # noqa: ANN001, ANN202
        release.wait(30)
        return Check("t.hang", "ok", "never seen")

    def crashes(ctx):  # noqa: ANN001, ANN202
        raise RuntimeError("boom")

    def slow_ok(name: str):  # noqa: ANN202
        def check(ctx):  # noqa: ANN001, ANN202
            time.sleep(0.3)  # runs beside the others: the report takes ~max, not the sum
            return Check(name, "ok", "fine")

        return check

    specs = [
        CheckSpec("t.hang", hangs, timeout=0.5),
        CheckSpec("t.crash", crashes, timeout=1),
        CheckSpec("t.ok", slow_ok("t.ok"), timeout=2),
        CheckSpec("t.ok2", slow_ok("t.ok2"), timeout=2),
    ]
    start = time.monotonic()
    report = doctor.run(settings.load(tmp_path / "none.yaml"), specs=specs)
    took = time.monotonic() - start
    release.set()
    assert took < 1.5, f"doctor waited {took:.1f}s"
    by_id = {c.id: c for c in report.checks}
    assert [c.id for c in report.checks] == ["t.hang", "t.crash", "t.ok", "t.ok2"]  # stable order
    assert by_id["t.hang"].status == "fail" and by_id["t.hang"].summary == "no answer within 0.5s"
    assert by_id["t.crash"].summary == "the check itself failed: RuntimeError: boom"
    assert by_id["t.ok"].status == "ok"
    assert report.ok is False
    assert report.as_dict()["ok"] is False and report.as_dict()["gpus"] == []


def test_all_ok_is_ok(tmp_path: Path) -> None:
    spec = CheckSpec("t.ok", lambda ctx: Check("t.ok", "warn", "meh"), timeout=1)
    report = doctor.run(settings.load(tmp_path / "none.yaml"), specs=[spec])
    assert report.ok is True  # a warning is not a failure


def test_every_check_id_is_unique_and_stable() -> None:
    ids = [spec.id for spec in doctor.all_checks()]
    assert len(ids) == len(set(ids))
    assert {
        "host.os",
        "host.disk",
        "host.memory",
        "host.secrets",
        "host.metrics",
        "gpu.pci",
        "gpu.driver",
        "gpu.devices",
        "gpu.uvm",
        "gpu.driver_vs_image",
        "docker.engine",
        "docker.gpu_runtime",
        "model.cache",
        "model.fit",
        "stack.api",
        "stack.ui",
        "stack.exposure",
        "stack.change",
        "https.door",
        "https.dns",
        "https.proxy",
        "https.certificate",
        "backup.last",
    } == set(ids)
