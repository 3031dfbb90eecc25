"""The watchdog's state machine on a fake monotonic clock: hundreds of ticks in milliseconds."""

from __future__ import annotations

import time

import pytest

from agent.watchdog.machine import Machine, Policy, Verdict

OK = Verdict(True)
FAIL = Verdict(False, "/health: no answer: timed out")
UNHEALTHY = Verdict(False, "Docker's healthcheck reports unhealthy", sustained=True)
POLICY = Policy(start_grace=600, fail_after=3, backoff_first=10, backoff_cap=300, budget=5)


def healthy_machine(now: float = 0.0, policy: Policy = POLICY) -> Machine:
    m = Machine.new("vllm", policy, now)
    assert [d.action for d in m.observe(now + 1, OK)] == ["healthy"]
    return m


def drive(m: Machine, verdict: Verdict, start: float, end: float, step: float = 1.0) -> list:
    """Feed `verdict` every `step` seconds; restart at once when asked (as the loop does)."""
    out = []
    t = start
    while t < end:
        for d in m.observe(t, verdict) + m.tick(t):
            out.append((t, d))
            if d.action == "restart":
                m.restarted(t)
        t += step
    return out


def test_failures_inside_the_start_grace_do_not_count() -> None:
    m = Machine.new("vllm", POLICY, 0.0)
    assert drive(m, FAIL, 0, 599) == []  # a 70B model loading for ten minutes
    assert m.state == "starting"
    assert [d.action for d in m.observe(599.5, OK)] == ["healthy"]


def test_a_service_never_healthy_after_the_grace_is_restarted() -> None:
    m = Machine.new("vllm", POLICY, 0.0)
    decisions = drive(m, FAIL, 0, 602)
    assert [d.action for _, d in decisions] == ["unhealthy", "restart"]
    assert decisions[0][0] == 600


def test_a_restart_needs_sustained_failure_not_one_bad_probe() -> None:
    m = healthy_machine()
    assert [d.action for d in m.observe(10, FAIL)] == ["suspect"]
    assert m.observe(11, OK)[0].action == "recovered"
    assert m.state == "healthy" and m.restarts_in_window(11) == 0
    assert m.observe(20, FAIL)[0].action == "suspect"
    assert m.observe(22, FAIL) == []  # 2 s: not yet sustained
    decisions = m.observe(23, FAIL)
    assert [d.action for d in decisions] == ["unhealthy", "restart"]
    assert decisions[1].attempt == 1 and decisions[1].reason == FAIL.reason


def test_dockers_unhealthy_is_already_sustained() -> None:
    m = healthy_machine()
    assert [d.action for d in m.observe(5, UNHEALTHY)] == ["unhealthy", "restart"]


def test_restarts_back_off_exponentially_up_to_the_cap() -> None:
    policy = Policy(start_grace=0, fail_after=0, backoff_first=10, backoff_cap=40, budget=100)
    m = healthy_machine(policy=policy)
    times = [t for t, d in drive(m, UNHEALTHY, 2, 400, 0.5) if d.action == "restart"]
    gaps = [round(b - a, 1) for a, b in zip(times, times[1:], strict=False)]
    assert gaps[:5] == [10, 20, 40, 40, 40]


def test_the_restart_budget_stops_a_crash_loop_reported_once() -> None:
    m = healthy_machine()
    out = drive(m, UNHEALTHY, 2, 2000)
    actions = [d.action for _, d in out]
    assert actions.count("restart") == 5 and actions.count("failed") == 1
    assert actions[-1] == "failed" and m.state == "failed"
    failed = out[-1][1]
    assert failed.attempt == 5 and "5 restarts in an hour" in failed.reason
    assert drive(m, UNHEALTHY, 2000, 2500) == []  # left alone: no second report


def test_docker_restarts_count_against_the_budget() -> None:
    m = healthy_machine()
    for i in range(4):
        assert [d.action for d in m.crashed(10 + i, "exited with code 1")] == ["crashed"]
    assert m.state == "starting"
    last = m.crashed(15, "exited with code 1")
    assert [d.action for d in last] == ["crashed", "failed"]
    assert m.crashed(16, "exited with code 1") == []


def test_the_budget_is_per_hour() -> None:
    m = healthy_machine()
    for i in range(4):
        m.crashed(10 + i * 60, "exited")
    assert m.restarts_in_window(3650) == 3  # the first one is an hour old
    m.crashed(3650, "exited")
    assert m.state == "starting"


def test_reset_by_up_clears_failed_and_the_budget() -> None:
    m = healthy_machine()
    drive(m, UNHEALTHY, 2, 2000)
    assert m.state == "failed"
    assert [d.action for d in m.reset(2001)] == ["recovered"]
    assert m.state == "starting" and m.restarts_in_window(2001) == 0
    assert m.observe(2002, OK)[0].action == "healthy"


def test_after_a_change_the_grace_runs_from_the_containers_start() -> None:
    """The end of maintenance: a container the change left alone (running for an hour, hung
    meanwhile) is judged at once; one it started a minute ago still loads under the grace."""
    old = healthy_machine()
    old.reset(3600, started=0)
    assert old.state == "starting" and old.observe(3601, FAIL) != []  # unhealthy: restart
    assert old.state == "restarting"
    new = healthy_machine()
    new.reset(3600, started=3540)
    assert drive(new, FAIL, 3601, 4139) == [] and new.state == "starting"
    assert [d.action for d in new.observe(4141, FAIL)] == ["unhealthy", "restart"]


def test_a_hopeless_failure_is_failed_at_once_with_its_fix() -> None:
    m = healthy_machine()
    lost = Verdict(False, "GPU 1 is lost", hopeless=True, fix="reboot the box")
    [d] = m.observe(3, lost)
    assert (d.action, d.fix, d.attempt) == ("failed", "reboot the box", 0)


def test_probes_started_before_a_restart_are_told_apart_by_epoch() -> None:
    m = healthy_machine()
    before = m.epoch
    m.observe(2, UNHEALTHY)
    assert m.state == "restarting" and m.epoch == before + 1
    assert m.observe(2.5, OK) == []  # restarting: verdicts wait for the restart to finish
    m.restarted(3)
    assert m.state == "starting"


@pytest.mark.parametrize("restarts, wait", [(0, 0), (1, 10), (2, 20), (3, 40), (9, 300)])
def test_backoff_table(restarts: int, wait: float) -> None:
    assert Policy(backoff_first=10, backoff_cap=300).backoff(restarts) == wait


def test_a_thousand_ticks_take_milliseconds() -> None:
    m = healthy_machine()
    started = time.perf_counter()
    verdicts = [OK] * 5 + [FAIL] * 5
    for i in range(1000):
        for d in m.observe(float(i), verdicts[i % 10]):
            if d.action == "restart":
                m.restarted(float(i))
    assert time.perf_counter() - started < 0.5


def test_a_new_run_no_crash_caused_loads_again_under_the_grace_and_keeps_the_budget() -> None:
    m = healthy_machine()
    m.crashed(5, "exited with code 1")
    assert m.observe(6, OK)[0].action == "healthy"
    before = m.epoch
    m.started_again(100)  # a restarted engine started the same container again
    assert m.state == "starting" and m.epoch == before + 1 and m.started == 100
    assert drive(m, FAIL, 100, 690) == []  # loading: failures inside the grace do not count
    assert m.restarts_in_window(690) == 1  # the budget stays: it was no restart
    assert m.observe(691, OK)[0].action == "healthy"


def test_a_failed_service_is_not_woken_by_a_new_run() -> None:
    m = healthy_machine()
    drive(m, UNHEALTHY, 2, 2000)
    m.started_again(2001)
    assert m.state == "failed"
