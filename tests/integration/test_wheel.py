"""The wheel built from this checkout carries what the agent renders: `pip install` alone is
enough (compose/ lives at the top level of the checkout, inside the package in the wheel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_wheel_from_the_checkout_renders_the_stack(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO)],
        check=True, cwd=tmp_path,
    )  # fmt: skip
    [wheel] = out.glob("linode_ai_sandbox_agent-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "agent/compose/docker-compose.yml" in names
    assert "agent/systemd/sandbox-agent.service" in names  # the unit the bootstrap installs
    assert {
        "agent/systemd/sandbox-agent-backup.service",
        "agent/systemd/sandbox-agent-backup.timer",
        "agent/backup/run.py",
        "agent/settings/rows.py",
    } <= set(names)
    assert {"agent/watchdog/loop.py", "agent/systemd_client.py"} <= set(names)
    assert {"agent/cli/__init__.py", "agent/models/pull.py", "agent/stack/apply.py"} <= set(names)
    assert not [n for n in names if n.startswith("tests/")]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # without PYTHONPATH: a checkout on it, with the egg-info `pip wheel` leaves there, reads
    # as this distribution installed already, and pip would skip the wheel
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        env=clean,
    )
    # The wheel's dependencies come from the test environment, its .pth hooks (our own
    # editable install among them) left out: only a path line is added.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    script = (
        "import json, agent\n"
        "from pathlib import Path\n"
        "from agent import settings, stack\n"
        "s = settings.load(Path('none.yaml'), env={})\n"
        "r = stack.render(s, stack.StackSpec('/root/.cache/huggingface/hub/x'))\n"
        "from agent.watchdog import unit_source\n"
        "print(json.dumps({'agent': agent.__file__, 'template': str(stack.TEMPLATE),"
        " 'text': r.text, 'unit': str(unit_source()), 'unit_text': unit_source().read_text()}))\n"
    )
    ran = subprocess.run(
        [str(python), "-c", script], check=True, capture_output=True, text=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    found = json.loads(ran.stdout)
    assert found["agent"].startswith(site) and found["template"].startswith(site)
    assert found["template"].endswith("agent/compose/docker-compose.yml")
    assert found["unit"].startswith(site) and found["unit"].endswith(
        "agent/systemd/sandbox-agent.service"
    )
    assert "Type=notify" in found["unit_text"]
    assert "vllm/vllm-openai:v0.30.0" in found["text"] and "open-webui:" in found["text"]
