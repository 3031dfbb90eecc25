"""The watchdog's small parts: sd_notify on a real socket, the journal's wire format, the
/metrics reading, stuck vs busy, its saved state, its settings, the unit install."""

from __future__ import annotations

import json
import os
import socket
import struct
from pathlib import Path

import pytest

from agent import probes, service_health, settings, systemd_client
from agent.errors import BadInput
from agent.watchdog import install, ledger
from agent.watchdog.machine import Machine, Policy
from agent.watchdog.report import Reporter


def test_notify_reaches_an_abstract_socket_with_a_leading_at() -> None:
    name = f"sandbox-agent-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        notifier = systemd_client.Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier.notify("READY=1", "STATUS=vllm healthy · open-webui healthy")
        assert server.recv(4096).decode() == "READY=1\nSTATUS=vllm healthy · open-webui healthy"
        notifier.close()


def test_notify_reaches_a_socket_path(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        assert systemd_client.Notifier(str(path)).notify("WATCHDOG=1")
        assert server.recv(64) == b"WATCHDOG=1"


def test_without_systemd_notify_is_a_no_op() -> None:
    assert systemd_client.Notifier.from_env({}).notify("READY=1") is False
    assert systemd_client.Notifier("/nonexistent/socket").notify("READY=1") is False


@pytest.mark.parametrize(
    "env, interval",
    [
        pytest.param({"WATCHDOG_USEC": "30000000"}, 15.0, id="half of WatchdogSec"),
        pytest.param({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, None, id="another pid"),
        pytest.param({}, None, id="no watchdog"),
    ],
)
def test_the_watchdog_interval_is_half_of_watchdogsec(env: dict, interval: float | None) -> None:
    assert systemd_client.watchdog_interval(env) == interval


def test_journal_fields_use_the_binary_form_for_newlines() -> None:
    data = systemd_client.encode(
        {"MESSAGE": "one line", "sandbox.reason": "two\nlines", "skip": None}
    )
    multi = b"two\nlines"
    assert data == (
        b"MESSAGE=one line\n" + b"SANDBOX_REASON\n" + struct.pack("<Q", len(multi)) + multi + b"\n"
    )


@pytest.mark.parametrize(
    "key, name", [("service", "SERVICE"), ("_private", "PRIVATE"), ("1st", "X1ST"), ("a-b", "A_B")]
)
def test_journal_field_names(key: str, name: str) -> None:
    assert systemd_client.field_name(key) == name


def test_journal_send_without_journald_says_so(tmp_path: Path) -> None:
    assert systemd_client.Journal(tmp_path / "no-socket").send("x") is False


def test_journal_datagram_on_a_real_socket(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        journal = systemd_client.Journal(path)
        assert journal.available
        assert journal.send("restarted vllm", "warning", SANDBOX_EVENT="service_restarted")
        assert server.recv(4096) == (
            b"MESSAGE=restarted vllm\nPRIORITY=4\nSANDBOX_EVENT=service_restarted\n"
        )


METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="a"} 2.0
vllm:num_requests_running{model_name="b"} 1.0
vllm:num_requests_waiting{model_name="a"} 3.0
vllm:generation_tokens_total{model_name="a"} 1234.0
vllm:generation_tokens_created{model_name="a"} 1.7e9
"""


def test_the_load_series_are_summed_over_labels() -> None:
    assert probes.parse_load(METRICS) == {"running": 3.0, "waiting": 3.0, "generated": 1234.0}


def load(running: float, generated: float, ok: bool = True) -> probes.EngineLoad:
    return probes.EngineLoad(ok, "read", running, 0.0, generated)


def samples(*points: tuple[float, float, float]) -> list[service_health.LoadSample]:
    return [service_health.LoadSample(t, load(r, g)) for t, r, g in points]


@pytest.mark.parametrize(
    "points, verdict",
    [
        pytest.param([(0, 0, 10), (5, 0, 10)], "idle", id="idle"),
        pytest.param([(0, 16, 10), (5, 16, 90), (10, 16, 170)], "busy", id="busy, tokens flow"),
        pytest.param([(0, 1, 10), (5, 1, 10), (10, 1, 10)], "busy", id="10 s still: not yet"),
        pytest.param([(0, 1, 10), (5, 1, 10), (10, 1, 10), (15, 1, 10)], "stuck", id="stuck"),
        pytest.param([(0, 0, 10), (5, 1, 10), (10, 1, 10), (15, 1, 10)], "busy", id="new request"),
        pytest.param([(0, 1, 5), (5, 1, 10), (20, 1, 10)], "stuck", id="stopped after moving"),
    ],
)
def test_stuck_or_busy_from_the_token_counter(points: list, verdict: str) -> None:
    found, why = service_health.engine_progress(samples(*points))
    assert found == verdict
    if verdict == "stuck":
        assert "no token generated for 15s" in why


def test_no_metrics_is_unknown_never_stuck() -> None:
    bad = [service_health.LoadSample(0, probes.EngineLoad(False, "HTTP 404: not found"))]
    assert service_health.engine_progress(bad) == ("unknown", "HTTP 404: not found")


@pytest.mark.parametrize(
    "before, after, verdict, why",
    [
        pytest.param(
            load(1, 10), load(3, 14), "busy", "3 request(s) in the engine and 4 token(s)", id="busy"
        ),
        pytest.param(
            load(1, 10), load(1, 10), "stuck", "1 request(s) in the engine and no token", id="stuck"
        ),
        pytest.param(load(0, 10), load(0, 10), "unknown", "no request in the engine", id="empty"),
        pytest.param(
            load(1, 10),
            probes.EngineLoad(False, "HTTP 404: not found"),
            "unknown",
            "HTTP 404: not found",
            id="no metrics after",
        ),
        pytest.param(
            probes.EngineLoad(False, "timed out"),
            load(1, 10),
            "unknown",
            "timed out",
            id="no metrics before",
        ),
    ],
)
def test_doctor_tells_a_busy_engine_from_a_stuck_one_around_its_completion(
    before: probes.EngineLoad, after: probes.EngineLoad, verdict: str, why: str
) -> None:
    found, detail = service_health.completion_wait(before, after, 8.2)
    assert found == verdict and detail.startswith(why), detail
    if verdict != "unknown":
        assert "in the 8s doctor waited" in detail


def test_the_state_survives_a_restart_of_the_watchdog(tmp_path: Path) -> None:
    policy = Policy(budget=3)
    m = Machine.new("vllm", policy, 100.0)
    m.crashed(100.0, "exited")
    m.crashed(110.0, "exited")
    wall = 1_000_000.0
    rec = ledger.record(m, 120.0, wall, None)
    assert rec.restarts == (wall - 20, wall - 10)
    # the agent restarts 5 s later with a new monotonic clock
    again = ledger.restore(rec, "vllm", policy, 7.0, wall + 5)
    assert again.restarts_in_window(7.0) == 2
    assert [d.action for d in again.crashed(8.0, "exited")][-1] == "failed"


def test_up_clears_a_failed_service_in_the_file(tmp_path: Path) -> None:
    rec = ledger.ServiceRecord("vllm", "failed", "crashed 5 times", 1.0, (1.0, 2.0), "abc")
    ok = ledger.ServiceRecord("open-webui", "healthy", "", 1.0, ())
    ledger.save(tmp_path, ledger.WatchState("fp", 2.0, 42, {"vllm": rec, "open-webui": ok}))
    assert (tmp_path / "watchdog.json").stat().st_mode & 0o777 == 0o600
    assert ledger.clear_failed(tmp_path) is True
    found = ledger.load(tmp_path)
    assert found is not None and found.cleared > 0
    assert found.services["vllm"].state == "starting" and found.services["vllm"].restarts == ()
    assert found.services["open-webui"].state == "healthy"
    assert ledger.clear_failed(tmp_path) is False
    summary = ledger.summary(tmp_path)
    assert summary is not None and summary["services"]["vllm"]["restarts_last_hour"] == 0


def test_a_broken_state_file_reads_as_none(tmp_path: Path) -> None:
    (tmp_path / "watchdog.json").write_text("{not json")
    assert ledger.load(tmp_path) is None and ledger.summary(tmp_path) is None


def test_a_change_of_settings_changes_the_fingerprint(write_config) -> None:
    a = settings.load(write_config())
    b = settings.load(write_config({"model": {"id": "acme/other"}}))
    c = settings.load(write_config({"watch": {"restarts_per_hour": 9}}))
    assert ledger.fingerprint(a) != ledger.fingerprint(b)
    assert ledger.fingerprint(a) == ledger.fingerprint(c)  # the watchdog's own knobs do not


def test_watch_settings_defaults_and_environment(write_config) -> None:
    s = settings.load(write_config(), env={"WATCH_METRICS_PORT": "9999", "WATCH_START_GRACE": "60"})
    assert (s.watch.metrics_port, s.watch.metrics_bind) == (9999, "127.0.0.1")
    assert s.start_grace == 60 and s.watch.restarts_per_hour == 5
    assert settings.load(write_config()).start_grace == 1800  # auto: timeouts.ready


@pytest.mark.parametrize(
    "over, words",
    [
        ({"watch": {"restarts_per_hour": 0}}, "watch.restarts_per_hour"),
        ({"watch": {"metrics_port": 70000}}, "watch.metrics_port"),
        ({"watch": {"metrics_bind": "not an ip"}}, "watch.metrics_bind"),
        ({"watch": {"colour": "red"}}, "watch.colour"),
    ],
)
def test_bad_watch_settings_are_refused_with_the_key(write_config, over: dict, words: str) -> None:
    with pytest.raises(BadInput) as caught:
        settings.load(write_config(over))
    assert words in str(caught.value)


def test_the_same_warning_is_said_once_until_it_changes() -> None:
    report = Reporter()
    for _ in range(5):
        report.once("vllm", "timed out", "service_suspect", "warning", "vllm may be unhealthy")
    report.once("vllm", "HTTP 503", "service_suspect", "warning", "vllm may be unhealthy")
    assert [e["event"] for e in report.sent] == ["service_suspect", "service_suspect"]


def test_install_writes_the_unit_and_enables_it(tmp_path: Path, fake_commands) -> None:
    fake_commands.on(r"^systemctl daemon-reload$").on(r"^systemctl enable --now")
    result = install.install_unit(
        unit_dir=tmp_path, command="/opt/venv/bin/sandbox-agent", config=Path("/etc/x.yaml")
    )
    text = (tmp_path / "sandbox-agent.service").read_text()
    assert "ExecStart=/opt/venv/bin/sandbox-agent watch --config /etc/x.yaml\n" in text
    assert "Type=notify" in text and "WatchdogSec=" in text and "Restart=always" in text
    assert fake_commands.calls == [
        ("systemctl", "daemon-reload"),
        ("systemctl", "enable", "--now", "sandbox-agent.service"),
        ("systemctl", "daemon-reload"),
        ("systemctl", "enable", "--now", "sandbox-agent-backup.timer"),
    ]
    assert result.exec_start == "/opt/venv/bin/sandbox-agent watch --config /etc/x.yaml"
    backup = (tmp_path / "sandbox-agent-backup.service").read_text()
    line = "ExecStart=/opt/venv/bin/sandbox-agent backup --daily --config /etc/x.yaml\n"
    assert line in backup and "Type=oneshot" in backup
    assert "OnCalendar=daily" in (tmp_path / "sandbox-agent-backup.timer").read_text()
    assert result.timers == ("sandbox-agent-backup.service", "sandbox-agent-backup.timer")


@pytest.mark.parametrize(
    "config, word",
    [
        ("/etc/x.yaml", "/etc/x.yaml"),
        ("/etc/my dir/c.yaml", '"/etc/my dir/c.yaml"'),
        ("/etc/100%/$HOME/c.yaml", "/etc/100%%/$$HOME/c.yaml"),
        ("/etc/${X}/c.yaml", '"/etc/$${X}/c.yaml"'),
        ("/etc/a\"b\\c'd;/x.yaml", '"/etc/a\\"b\\\\c\'d;/x.yaml"'),
        ("/etc/t\tn\nz\x7f/é.yaml", '"/etc/t\\tn\\nz\\x7f/é.yaml"'),
    ],
    ids=[
        "plain",
        "space",
        "specifier-and-variable",
        "braced-variable",
        "quotes-backslash",
        "controls",
    ],
)
def test_the_config_path_is_written_into_exec_start_as_systemd_reads_it(
    config: str, word: str
) -> None:
    text = install.render_unit(
        "[Service]\nExecStart=/x\n", "/opt/v/bin/sandbox-agent", Path(config)
    )
    assert text == f"[Service]\nExecStart=/opt/v/bin/sandbox-agent watch --config {word}\n"


def test_the_executable_is_quoted_too_but_its_dollar_is_not_a_variable() -> None:
    text = install.render_unit("ExecStart=/x\n", "/opt/my venv %h $x/bin/sandbox-agent")
    assert text == 'ExecStart="/opt/my venv %%h $x/bin/sandbox-agent" watch\n'


def test_a_config_path_that_is_not_utf8_is_refused_naming_the_option() -> None:
    with pytest.raises(BadInput) as caught:
        install.render_unit("ExecStart=/x\n", "/x/sandbox-agent", Path("/etc/\udcff.yaml"))
    assert caught.value.key == "--config" and caught.value.exit_code == 2


def test_install_failure_says_where_to_look(tmp_path: Path, fake_commands) -> None:
    fake_commands.on(r"daemon-reload").on(r"enable", rc=1, stderr="Failed to enable unit")
    with pytest.raises(Exception) as caught:
        install.install_unit(unit_dir=tmp_path, command="/x/sandbox-agent")
    assert "Failed to enable unit" in str(caught.value)
    assert "journalctl -u sandbox-agent" in str(caught.value)


def test_status_json_carries_the_watchdog(tmp_path: Path) -> None:
    rec = ledger.ServiceRecord("vllm", "failed", "3 restarts in an hour", 1.0, ())
    ledger.save(tmp_path, ledger.WatchState("fp", 0.0, 7, {"vllm": rec}, "switch-model x"))
    found = ledger.summary(tmp_path)
    assert json.loads(json.dumps(found))["maintenance"] == "switch-model x"


def test_the_api_key_is_read_again_only_while_missing_or_refused(tmp_path: Path) -> None:
    from agent.secrets import SecretStore
    from agent.watchdog.stages import ApiKey

    now = [0.0]
    keyfile = tmp_path / "api_key"
    key = ApiKey(SecretStore(tmp_path), every=5.0, clock=lambda: now[0])
    assert key.get() is None  # missing at start
    keyfile.write_text("k1\n")
    keyfile.chmod(0o600)
    now[0] = 4.0
    assert key.get() is None  # not read again within 5 s
    now[0] = 5.0
    assert key.get() == "k1"
    keyfile.write_text("k2\n")
    now[0] = 100.0
    assert key.get() == "k1"  # a key that works is never read again: no cost per probe
    assert key.refused("k1") is True and key.get() == "k2"  # refused: read at once, changed
    now[0] = 101.0
    keyfile.write_text("k3\n")
    assert key.refused("k2") is False and key.get() == "k2"  # at most every 5 s
    now[0] = 106.0
    assert key.get() == "k3"  # still stale from the refusal: read when due
