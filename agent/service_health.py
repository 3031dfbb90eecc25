"""What "the service is healthy" means, written once: the container as the engine shows it,
then the probes that prove the service does its job, in order.

vLLM: /health, then the served name in /v1/models (with the key), then one real chat
completion (the API server can answer /health while its engine hangs, vllm #39863).
Open WebUI: /health. The proxy: its loopback /health (a certificate still pending is no ill
health: Caddy retries on its own, and doctor says why). `up`'s gate, doctor's stack checks
and the watchdog judge with these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent import door, probes
from agent.settings import Settings
from agent.stack import PROXY, UI, VLLM, ServiceStatus

KEY_REQUIRED = "the API key being required"
COMPLETION = "a chat completion"
CRASH_RESTARTS = 3  # restarts while waiting that mean "crash loop", not "still loading"


@dataclass(frozen=True)
class Stage:
    """One probe of a service: `run(timeout)` never raises."""

    label: str
    service: str
    run: Callable[[float], probes.Probe]
    timeout: float  # the most one try may take


def api_url(settings: Settings) -> str:
    return probes.base_url(settings.api.bind, settings.api.port)


def ui_url(settings: Settings) -> str:
    return probes.base_url(settings.ui.bind, settings.ui.port)


def stages(settings: Settings, service: str, api_key: str | None) -> list[Stage]:
    """The probes that make `service` healthy, in the order they must pass."""
    if service == VLLM:
        api, name = api_url(settings), settings.model.name
        return [
            Stage("vLLM /health", VLLM, lambda t: probes.vllm_health(api, t), 3),
            Stage(
                f"{name} in /v1/models",
                VLLM,
                lambda t: probes.vllm_models(api, api_key, name, t),
                5,
            ),
            Stage(KEY_REQUIRED, VLLM, lambda t: probes.vllm_key_required(api, name, t), 5),
            Stage(COMPLETION, VLLM, lambda t: probes.vllm_chat(api, api_key, name, t), 60),
        ]
    if service == UI:
        ui = ui_url(settings)
        return [Stage("Open WebUI /health", UI, lambda t: probes.ui_health(ui, t), 3)]
    if service == PROXY:
        url = door.health_url(settings)
        return [Stage("proxy /health", PROXY, lambda t: probes.proxy_health(url, t), 3)]
    raise ValueError(f"no health definition for {service!r}")


def container_problem(
    svc: ServiceStatus | None, restarts_before: int = 0, limit: int = CRASH_RESTARTS
) -> str:
    """Why the container cannot be healthy ("" when it may be): gone, stopped, crash-looping."""
    if svc is None or svc.state in ("exited", "dead", "missing"):
        state = svc.state if svc is not None else "missing"
        service = svc.service if svc is not None else "service's"
        return f"the {service} container is {state}"
    crashes = svc.restart_count - restarts_before
    if crashes >= limit:
        return f"the {svc.service} container crashed {crashes} time(s) while up waited for it"
    return ""


@dataclass(frozen=True)
class ServiceHealth:
    """A judgement of one service now: which stage failed (None: all passed) and why."""

    service: str
    ok: bool
    failed: Stage | None
    probe: probes.Probe | None  # the last probe run: the failing one, or the last that passed
    problem: str  # the container's problem, "" when its state allows health

    @property
    def detail(self) -> str:
        if self.problem:
            return self.problem
        return self.probe.detail if self.probe is not None else ""


def assess(
    svc: ServiceStatus | None, checks: list[Stage], *, budget: float | None = None
) -> ServiceHealth:
    """The container first, then every stage until one fails. `budget` caps each probe."""
    service = checks[0].service if checks else (svc.service if svc else "")
    if svc is None or svc.state != "running":
        state = svc.state if svc is not None else "missing"
        return ServiceHealth(service, False, None, None, f"the {service} container is {state}")
    last: probes.Probe | None = None
    for stage in checks:
        last = stage.run(min(stage.timeout, budget) if budget else stage.timeout)
        if not last.ok:
            return ServiceHealth(service, False, stage, last, "")
    return ServiceHealth(service, True, None, last, "")


@dataclass(frozen=True)
class LoadSample:
    at: float  # monotonic seconds
    load: probes.EngineLoad


STALL_SECONDS = 15.0  # requests running while no token is generated for this long: stuck


def engine_progress(samples: list[LoadSample], stall: float = STALL_SECONDS) -> tuple[str, str]:
    """("idle" | "busy" | "stuck" | "unknown", why) from /metrics samples, oldest first.

    Requests running while vllm:generation_tokens_total stands still for `stall` seconds is a
    stuck engine, even when /health answers (vllm #39863); slow answers while the counter
    moves is a busy one, never a reason to restart. Doctor can take two samples too.
    """
    good = [s for s in samples if s.load.ok and s.load.generated is not None]
    if not good:
        return "unknown", samples[-1].load.detail if samples else "no /metrics sample yet"
    last = good[-1]
    if not ((last.load.running or 0) + (last.load.waiting or 0)):
        return "idle", "no request running"
    # the oldest sample of the current run of busy samples with the same token count
    since = last
    for s in reversed(good):
        busy = (s.load.running or 0) + (s.load.waiting or 0) > 0
        if not busy or s.load.generated != last.load.generated:
            break
        since = s
    frozen = last.at - since.at
    running = int((last.load.running or 0) + (last.load.waiting or 0))
    if frozen >= stall:
        return "stuck", (
            f"{running} request(s) in the engine and no token generated for {frozen:.0f}s "
            "(vllm:generation_tokens_total stands still)"
        )
    return "busy", f"{running} request(s) in the engine, tokens flowing"


def completion_wait(
    before: probes.EngineLoad, after: probes.EngineLoad, waited: float
) -> tuple[str, str]:
    """Why a completion did not finish in `waited` seconds, from /metrics read before and after:
    ("busy", why) when the token counter moved meanwhile (the engine works through a queue),
    ("stuck", why) when requests are in the engine and it did not, ("unknown", why) otherwise."""
    if not (before.ok and after.ok) or before.generated is None or after.generated is None:
        return "unknown", (after if before.ok else before).detail
    queued = int((after.running or 0) + (after.waiting or 0))
    made = after.generated - before.generated
    if made > 0:
        return "busy", (
            f"{queued} request(s) in the engine and {made:.0f} token(s) generated in the "
            f"{waited:.0f}s doctor waited"
        )
    if queued:
        return "stuck", (
            f"{queued} request(s) in the engine and no token generated in the {waited:.0f}s "
            "doctor waited (vllm:generation_tokens_total stands still)"
        )
    return "unknown", "no request in the engine, yet the completion did not finish"
