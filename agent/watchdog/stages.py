"""The probes the loop runs per service, by role (health, models, canary), with the API key as
the secret store holds it now, not as it was when `watch` started.

`watch` may start before the first `up` writes the key, and `up` writes a new one when the file
is gone: a key read once would be refused (401) for good and vLLM restarted until failed. So
the key is read again while it is missing, and when vLLM refuses it (401/403: then the probe
runs once more with the new key, so a key that changed never counts as a failure), at most
every REREAD seconds: one small file, never on the hot path of a probe that passes.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from agent import probes, service_health
from agent.errors import AgentError
from agent.secrets import API_KEY, SecretStore
from agent.settings import Settings

REREAD = 5.0  # seconds between two reads of the key file, at most one read per period
REFUSED = (401, 403)


class ApiKey:
    """The API key, read again while missing or refused, at most every `every` seconds. The
    first read raises as SecretStore.read does (a link, no permission); a later one that fails
    keeps the key it had (doctor's host.secrets says what is wrong with the file)."""

    def __init__(
        self,
        store: SecretStore | None,
        *,
        every: float = REREAD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.every, self.clock = store, every, clock
        self._lock = threading.Lock()
        self._read_at = clock()
        self.value = store.read(API_KEY) if store is not None else None
        self.stale = self.value is None

    def get(self) -> str | None:
        return self._fresh() if self.stale else self.value

    def refused(self, sent: str | None) -> bool:
        """vLLM refused `sent`: read the file again (when due); True when the key changed."""
        self.stale = True
        return self._fresh() != sent

    def _fresh(self) -> str | None:
        with self._lock:
            now = self.clock()
            if self.store is None or now - self._read_at < self.every:
                return self.value
            self._read_at = now
            try:
                found = self.store.read(API_KEY)
            except AgentError:
                return self.value
            self.value, self.stale = found, found is None
            return self.value


def stages(settings: Settings, service: str, key: ApiKey) -> dict[str, service_health.Stage]:
    """agent.service_health's stages of `service` by role, each probe built with the key now."""

    def run(index: int) -> Callable[[float], probes.Probe]:
        def probe(timeout: float) -> probes.Probe:
            sent = key.get()
            done = service_health.stages(settings, service, sent)[index].run(timeout)
            if not done.ok and done.status in REFUSED and key.refused(sent):
                done = service_health.stages(settings, service, key.get())[index].run(timeout)
            return done

        return probe

    return {
        _role(stage.label): dataclasses.replace(stage, run=run(index))
        for index, stage in enumerate(service_health.stages(settings, service, None))
    }


def _role(label: str) -> str:
    """Which of agent.service_health's stages a label is: health, models, canary (or itself)."""
    for word, role in (("/health", "health"), ("/v1/models", "models"), ("completion", "canary")):
        if label.endswith(word):
            return role
    return label
