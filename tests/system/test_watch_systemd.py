"""`sandbox-agent watch` under a real systemd (PID 1 in a container, TESTING.md), installed
from a wheel of this checkout with `watch --install`, driving the host's engine: READY
arrives (the unit is active), STATUS says what it watches, a restart is found with
`journalctl SANDBOX_EVENT=service_restarted` and its fields, journald takes our multi-line
and oversize entries, a hung agent is killed by WatchdogSec and started again, the unit's
sandbox lets it write its state and the MOTD only, and a failed service's notice reaches
/run/motd.d on a box where that folder did not exist at boot.

The box gets CAP_SYS_ADMIN: without it systemd cannot make a unit's mount namespace (every
ProtectSystem=, ReadWritePaths= and PrivateTmp= is silently skipped), so the sandbox the
unit describes would go untested."""

from __future__ import annotations

import json
import shlex
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.fakes.images import ensure_image
from tests.fakes.wheelhouse import wheelhouse
from tests.integration.stack_support import free_port
from tests.integration.watch_support import Stack

pytestmark = [pytest.mark.systemd, pytest.mark.docker]
VENV = "/opt/sandbox-agent"
AGENT = f"{VENV}/bin/sandbox-agent"


class Box:
    def __init__(self, container: Any) -> None:
        self.container = container

    def sh(self, command: str, check: bool = True) -> str:
        code, out = self.container.exec_run(["sh", "-c", command])
        text = out.decode(errors="replace")
        assert not check or code == 0, f"{command!r} exited {code}:\n{text}"
        return text

    def until(self, command: str, ok: Any, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            out = self.sh(command, check=False)
            if ok(out):
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"{command!r} never satisfied; last:\n{out}\n" + self.log())
            time.sleep(0.3)

    def log(self) -> str:
        return self.sh("journalctl -u sandbox-agent --no-pager -n 40 -o cat", check=False)

    def journal(self, *matches: str) -> list[dict[str, Any]]:
        out = self.sh(f"journalctl --no-pager -o json --all {' '.join(matches)}", check=False)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    st = Stack(tmp_path_factory.mktemp("sd-stack"))
    yield st
    st.remove()


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[Box]:
    image = ensure_image("systemd-box")
    work = tmp_path_factory.mktemp("sd-box")
    wheels = wheelhouse(work / "wheels")
    etc = work / "etc"
    (etc / "secrets").mkdir(parents=True)
    shutil.copy2(stack.folder / "secrets" / "api_key", etc / "secrets" / "api_key")
    data = yaml.safe_load(stack.config.read_text())
    # the box's own places for what it owns; the stack's for what the stack is
    data["paths"].update(state="/var/lib/sandbox-agent", secrets="/etc/sandbox-agent/secrets")
    data["watch"] = {"metrics_port": free_port(), "motd": "/run/motd.d/50-sandbox-agent-watch"}
    (etc / "config.yaml").write_text(yaml.safe_dump(data))
    container = stack.client.containers.run(
        image,
        detach=True,
        network_mode="host",  # the stand-ins publish on the host's loopback
        tmpfs={"/run": "", "/run/lock": ""},  # /run as at boot: no motd.d in it
        cap_add=["SYS_ADMIN"],  # so that systemd can build the unit's mount namespace
        volumes={
            "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"},
            "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
            str(wheels): {"bind": "/wheels", "mode": "ro"},
            str(etc): {"bind": "/etc/sandbox-agent", "mode": "rw"},
        },
        labels={"org.sandbox-agent.test": "systemd-box"},
    )
    b = Box(container)
    try:
        b.until("systemctl is-system-running", lambda o: o.strip() in ("running", "degraded"))
        b.sh(f"python3 -m venv {VENV} && {VENV}/bin/pip install -q --no-index "
             "--find-links /wheels linode-ai-sandbox-agent")  # fmt: skip
        yield b
    finally:
        container.remove(force=True)


def test_watch_install_leaves_the_unit_active_with_its_status(box: Box) -> None:
    assert box.sh("test -e /run/motd.d || echo absent").strip() == "absent"  # a fresh boot
    out = box.sh(f"{AGENT} watch --install")
    assert f"ExecStart={AGENT} watch); enabled and started" in out
    unit = box.sh("cat /etc/systemd/system/sandbox-agent.service")
    assert f"ExecStart={AGENT} watch\n" in unit
    assert "\nExecStartPre=+/usr/bin/mkdir -p -m 0755 /run/motd.d\n" in unit
    verify = box.sh("systemd-analyze verify /etc/systemd/system/sandbox-agent.service 2>&1")
    assert verify.strip() == ""
    # Type=notify: active only once READY=1 came, after the stack's state was read
    assert box.sh("systemctl is-enabled sandbox-agent").strip() == "enabled"
    box.until("systemctl is-active sandbox-agent", lambda o: o.strip() == "active")
    status = box.until(
        "systemctl show -p StatusText --value sandbox-agent",
        lambda o: "vllm healthy · open-webui healthy" in o,
    )
    assert "0 restarts in the last hour" in status
    [started] = box.journal("SANDBOX_EVENT=watch_started")
    assert started["_SYSTEMD_UNIT"] == "sandbox-agent.service" and started["PRIORITY"] == "6"


SEED_DB = (
    "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.execute('PRAGMA journal_mode=wal');"
    " db.execute('CREATE TABLE chat (t TEXT)'); db.execute('INSERT INTO chat VALUES (1)');"
    " db.commit()"
)


def test_the_daily_backup_is_installed_with_it_and_runs_in_its_sandbox(box: Box) -> None:
    """`watch --install` installed the timer too; systemd reads both units cleanly, the timer
    is enabled and scheduled, and the service, started as the timer starts it, writes a
    backup, the login notice and its journal event from inside its own sandbox."""
    units = "/etc/systemd/system/sandbox-agent-backup.service /etc/systemd/system/sandbox-agent-backup.timer"
    assert box.sh(f"systemd-analyze verify {units} 2>&1").strip() == ""
    assert box.sh("systemctl is-enabled sandbox-agent-backup.timer").strip() == "enabled"
    assert "sandbox-agent-backup.timer" in box.sh("systemctl list-timers --all --no-pager")
    unit = box.sh("cat /etc/systemd/system/sandbox-agent-backup.service")
    assert f"ExecStart={AGENT} backup --daily\n" in unit
    data = yaml.safe_load(box.sh("cat /etc/sandbox-agent/config.yaml"))["paths"]["ui_data"]
    seed = f"{VENV}/bin/python -c {shlex.quote(SEED_DB)} {data}/webui.db"
    box.sh(f"mkdir -p {data}/uploads && echo note > {data}/uploads/a.txt && {seed}")
    box.sh("systemctl start sandbox-agent-backup.service")  # a oneshot: returns once it is done
    [done] = box.journal("-u", "sandbox-agent-backup", "SANDBOX_EVENT=backup_done")
    assert done["SANDBOX_REASON"] == "daily" and int(done["SANDBOX_SIZE"]) > 0
    assert done["SANDBOX_PATH"].startswith("/var/lib/sandbox-agent/backups/open-webui-")
    assert box.sh(f"stat -c %a {done['SANDBOX_PATH']}").strip() == "600"
    notice = box.sh("cat /run/motd.d/51-sandbox-agent-backup")
    assert (
        notice.startswith("sandbox-agent backup:\n  last backup ")
        and done["SANDBOX_PATH"] in notice
    )
    listed = box.sh(f"{AGENT} backup list")
    assert "daily" in listed and done["SANDBOX_PATH"].rsplit("/", 1)[1] in listed


def test_the_unit_writes_only_its_state_and_the_motd_folder(box: Box) -> None:
    """In the main process's own mount namespace (systemd builds one per process it starts,
    so the folder that ExecStartPre=+ made before it is there): /run, /etc and /usr are
    read-only, the state folder and /run/motd.d are writable."""
    pid = box.sh("systemctl show -p MainPID --value sandbox-agent").strip()
    assert box.sh(f"readlink /proc/{pid}/ns/mnt") != box.sh("readlink /proc/1/ns/mnt")
    probe = (
        "for d in /run /etc /usr /run/motd.d /var/lib/sandbox-agent; do "
        "if touch $d/.probe 2>/dev/null; then rm $d/.probe; echo $d rw; else echo $d ro; fi; "
        "done"
    )
    seen = box.sh(f"nsenter --target {pid} --mount -- sh -c '{probe}'")
    assert seen.split("\n")[:5] == [
        "/run ro", "/etc ro", "/usr ro", "/run/motd.d rw", "/var/lib/sandbox-agent rw",
    ]  # fmt: skip
    assert box.sh("stat -c %a /run/motd.d").strip() == "755"  # pam_motd's, not ours alone


ODD_AGENT = "/opt/odd venv %h $HOME/bin/sandbox-agent"
ODD_CONFIG = "/etc/sandbox-agent/odd \"dir\" 'q' \\back %n ${HOME} $X ; tab\there\nnl/c.yaml"
ARGV_PRINTER = "#!/usr/bin/python3\nimport json, sys\nprint(json.dumps(sys.argv))\n"
RENDER = (
    "import sys; from pathlib import Path; from agent.watchdog import install; "
    "sys.stdout.write(install.render_unit(install.unit_source().read_text(), "
    "sys.argv[1], Path(sys.argv[2])))"
)


def test_systemd_reads_back_an_odd_agent_and_config_path_exactly(box: Box) -> None:
    """The ExecStart= that `watch --install` writes, parsed by systemd itself and run (with
    HOME and X set, so an expanded variable or specifier would show): the process gets the
    two paths as they are."""
    import shlex

    folder = ODD_AGENT.rsplit("/", 1)[0]
    box.sh(f"mkdir -p {shlex.quote(folder)} && printf %s {shlex.quote(ARGV_PRINTER)} > "
           f"{shlex.quote(ODD_AGENT)} && chmod +x {shlex.quote(ODD_AGENT)}")  # fmt: skip
    unit = "/etc/systemd/system/odd-probe.service"
    box.sh(f"{VENV}/bin/python -c {shlex.quote(RENDER)} {shlex.quote(ODD_AGENT)} "
           f"{shlex.quote(ODD_CONFIG)} > {unit}")  # fmt: skip
    assert box.sh(f"systemd-analyze verify {unit} 2>&1").strip() == ""
    [line] = [x for x in box.sh(f"cat {unit}").splitlines() if x.startswith("ExecStart=")]
    box.sh(
        f"printf '[Service]\\nType=oneshot\\nEnvironment=HOME=EXPANDED X=EXPANDED\\n%s\\n' "
        f"{shlex.quote(line)} > /etc/systemd/system/odd-run.service && "
        "systemctl daemon-reload && systemctl start odd-run"
    )
    out = box.sh("journalctl -u odd-run -o cat --no-pager | grep '^\\['")
    assert json.loads(out) == [ODD_AGENT, "watch", "--config", ODD_CONFIG]


def test_journalctl_finds_the_restart_with_its_fields(box: Box, stack: Stack) -> None:
    stack.container().kill(signal="SIGSTOP")
    box.until(
        "journalctl -u sandbox-agent SANDBOX_EVENT=service_restarted -o cat",
        lambda o: "restarted vllm" in o,
        timeout=30,
    )
    [entry] = box.journal("-u", "sandbox-agent", "SANDBOX_EVENT=service_restarted")
    assert entry["SANDBOX_SERVICE"] == "vllm" and entry["SANDBOX_ATTEMPT"] == "1"
    assert "timed out" in entry["SANDBOX_REASON"] and entry["PRIORITY"] == "4"
    assert entry["MESSAGE"].startswith("restarted vllm (attempt 1 in the last hour)")
    box.until(
        "systemctl show -p StatusText --value sandbox-agent",
        lambda o: "vllm healthy" in o and "1 restart in the last hour" in o,
    )


def test_journald_takes_multiline_and_oversize_entries(box: Box) -> None:
    script = (
        "from agent import systemd_client\n"
        "j = systemd_client.Journal()\n"
        "assert j.send('two\\nlines', 'notice', SANDBOX_TEST='nl', SANDBOX_WHY='a\\nb')\n"
        "assert j.send('big', 'info', SANDBOX_TEST='big', SANDBOX_BIG='x' * 400000)\n"
    )
    box.sh(f'{VENV}/bin/python -c "{script}"')
    [nl] = box.journal("SANDBOX_TEST=nl")
    assert (nl["MESSAGE"], nl["SANDBOX_WHY"], nl["PRIORITY"]) == ("two\nlines", "a\nb", "5")
    [big] = box.journal("SANDBOX_TEST=big")
    assert len(big["SANDBOX_BIG"]) == 400000  # past a datagram's size: sent as a memfd


def test_a_hung_agent_is_killed_by_the_watchdog_and_started_again(box: Box) -> None:
    # WatchdogSec=30 on a box; 3 s here so the test does not wait half a minute
    box.sh(
        "mkdir -p /etc/systemd/system/sandbox-agent.service.d && printf "
        "'[Service]\\nWatchdogSec=3\\nTimeoutStopSec=3\\n' "
        "> /etc/systemd/system/sandbox-agent.service.d/test.conf && "
        "systemctl daemon-reload && systemctl restart sandbox-agent"
    )
    box.until("systemctl is-active sandbox-agent", lambda o: o.strip() == "active")
    pid = box.sh("systemctl show -p MainPID --value sandbox-agent").strip()
    hung = time.monotonic()
    box.sh(f"kill -STOP {pid}")
    box.until(
        "systemctl show -p MainPID --value sandbox-agent",
        lambda o: o.strip() not in ("", "0", pid),
        timeout=30,
    )
    box.until("systemctl is-active sandbox-agent", lambda o: o.strip() == "active")
    assert time.monotonic() - hung < 20
    assert "Watchdog timeout" in box.sh("journalctl -u sandbox-agent --no-pager -o cat")


def test_a_failed_service_writes_its_notice_to_the_motd(box: Box, stack: Stack) -> None:
    """The whole path: a restart budget of one, vLLM hung twice, `failed`, and the notice in
    /run/motd.d (the folder that did not exist at boot), written from inside the sandbox."""
    motd = "/run/motd.d/50-sandbox-agent-watch"
    box.sh(
        # the unit's own WatchdogSec (30 s): stopping a hung vLLM takes longer than 3 s
        "systemctl stop sandbox-agent && rm -rf /etc/systemd/system/sandbox-agent.service.d && "
        "rm -f /var/lib/sandbox-agent/watchdog.json && "
        "mkdir /etc/systemd/system/sandbox-agent.service.d && "
        "printf '[Service]\\nEnvironment=WATCH_RESTARTS_PER_HOUR=1\\n' "
        "> /etc/systemd/system/sandbox-agent.service.d/budget.conf && "
        "systemctl daemon-reload && systemctl start sandbox-agent"
    )
    status = "systemctl show -p StatusText --value sandbox-agent"
    box.until(status, lambda o: "vllm healthy" in o)
    assert box.sh(f"test -e {motd} || echo none").strip() == "none"
    stack.container().kill(signal="SIGSTOP")
    box.until(status, lambda o: "1 restart in the last hour" in o)
    box.until(status, lambda o: "vllm healthy" in o)
    stack.container().kill(signal="SIGSTOP")
    box.until(status, lambda o: "vllm FAILED" in o, timeout=30)
    [failed] = box.journal("-u", "sandbox-agent", "SANDBOX_EVENT=service_failed")
    assert failed["SANDBOX_SERVICE"] == "vllm" and failed["PRIORITY"] == "2"
    text = box.sh(f"cat {motd}")
    assert text.startswith("sandbox-agent watchdog:\n  vllm FAILED: ")
    assert "fix: see `sandbox-agent logs vllm`, fix the cause, then run `sandbox-agent up`" in text
