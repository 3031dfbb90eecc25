"""Secrets never reach a log line: by key, by registered value, by shape."""

from __future__ import annotations

import io
import json

import pytest

from agent import log

TOKEN = "hf_" + "Ab3" * 12


@pytest.fixture
def lines():
    stream = io.StringIO()
    log.configure(stream=stream)
    yield lambda: [json.loads(x) for x in stream.getvalue().splitlines()]
    log.configure()


def test_secret_keys_are_redacted(lines) -> None:
    log.get().info("hub.login", token="abc123secret", api_key="k-123456", user="alice")
    event = lines()[0]
    assert event["token"] == log.REDACTED and event["api_key"] == log.REDACTED
    assert event["user"] == "alice" and event["event"] == "hub.login"


def test_registered_secret_is_redacted_inside_any_text(lines) -> None:
    log.register_secret("s3cr3t-value-xyz")
    log.get().warning(
        "probe.failed",
        detail="server said: bad key s3cr3t-value-xyz!",
        items=["x s3cr3t-value-xyz"],
    )
    event = lines()[0]
    assert "s3cr3t-value-xyz" not in json.dumps(event)
    assert event["detail"] == f"server said: bad key {log.REDACTED}!"
    assert event["items"] == [f"x {log.REDACTED}"]


def test_token_shapes_are_redacted_without_registration(lines) -> None:
    log.get().info(
        "command",
        argv=["vllm", "--api-key", "unregistered-key-1", "-H", f"Authorization: Bearer {TOKEN}"],
    )
    text = json.dumps(lines()[0])
    assert TOKEN not in text and "unregistered-key-1" not in text


def test_console_on_tty_is_readable_and_keeps_info_for_the_journal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    log.configure(stream=stream)
    try:
        log.get().info("stack.reconciled", project="demo")
        log.get().warning(
            "step.skipped", step="driver", reason="no NVIDIA PCI device", password="pw-123456"
        )
    finally:
        log.configure()
    out = stream.getvalue()
    assert "stack.reconciled" not in out  # the command prints its own progress on a terminal
    assert "step.skipped" in out and "reason='no NVIDIA PCI device'" in out.replace('"', "'")
    assert "pw-123456" not in out
    assert not out.lstrip().startswith("{")  # readable lines, not JSON


def test_verbose_on_a_tty_shows_info_and_debug() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    log.configure(verbose=True, stream=stream)
    try:
        log.get().debug("command.start", argv=["true"])
    finally:
        log.configure()
    assert "command.start" in stream.getvalue()
