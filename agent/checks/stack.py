"""stack.*: the services are running, healthy and answering, and nothing is open to strangers."""

from __future__ import annotations

import time

from agent import engine, maintenance, probes, service_health, stack
from agent.checks.base import Check, CheckSpec, DoctorContext
from agent.secrets import API_KEY, SecretStore

UP_FIX = "run `sandbox-agent up` (it says what is wrong when it cannot start the stack)"
LOOPBACK = ("127.", "::1", "[::1]")
PROBE_BUDGET = 8.0  # seconds one probe may take inside doctor (a completion included)
LOAD_TIMEOUT = 2.0  # vLLM's /metrics, read around the probes: busy or stuck, when one times out


def _services(ctx: DoctorContext) -> dict[str, stack.ServiceStatus]:
    def read() -> dict[str, stack.ServiceStatus]:
        client = engine.connect(ctx.docker_url, timeout=5)
        found = stack.status(client, ctx.settings.project, (stack.VLLM, stack.UI))
        return {s.service: s for s in found}

    return ctx.once("stack.status", read)


def _running(ctx: DoctorContext, check_id: str, service: str) -> Check | stack.ServiceStatus:
    try:
        svc = _services(ctx)[service]
    except engine.EngineUnavailable:
        return Check(check_id, "skip", "the Docker engine is not reachable (see docker.engine)")
    if svc.state == "missing":
        return Check(check_id, "fail", f"{service} is not running: no container", fix=UP_FIX)
    if svc.state != "running":
        return Check(
            check_id,
            "fail",
            f"{service} is {svc.state}",
            detail=f"restarted {svc.restart_count} time(s)",
            fix=f"`sandbox-agent logs {service}` shows why; then {UP_FIX}",
        )
    return svc


def _detail(svc: stack.ServiceStatus) -> str:
    return f"container {svc.container}, health {svc.health}, ports {', '.join(svc.ports) or '-'}"


def check_api(ctx: DoctorContext) -> Check:
    svc = _running(ctx, "stack.api", stack.VLLM)
    if isinstance(svc, Check):
        return svc
    s = ctx.settings
    key = SecretStore(s.paths.secrets).read(API_KEY)
    before, started = probes.vllm_load(service_health.api_url(s), LOAD_TIMEOUT), time.monotonic()
    judged = service_health.assess(
        svc, service_health.stages(s, stack.VLLM, key), budget=PROBE_BUDGET
    )
    answered = judged.probe is not None and judged.probe.status is not None
    if (
        judged.failed is not None
        and judged.failed.label == service_health.KEY_REQUIRED
        and answered
    ):
        return Check(
            "stack.api",
            "fail",
            "vLLM answers without the API key: anyone who reaches it can use it",
            detail=f"{judged.detail}; {_detail(svc)}",
            fix="run `sandbox-agent up` (it starts vLLM with the key from "
            f"{s.paths.secrets / API_KEY}); check model.extra_args for a flag that replaces it",
        )
    if (
        not judged.ok
        and judged.failed is not None
        and judged.failed.label == service_health.COMPLETION
    ):
        waited = time.monotonic() - started
        after = probes.vllm_load(service_health.api_url(s), LOAD_TIMEOUT)
        verdict, why = service_health.completion_wait(before, after, waited)
        if verdict == "busy":
            return Check(
                "stack.api",
                "warn",
                "vLLM is busy: tokens flow, but a chat completion did not finish within "
                f"{PROBE_BUDGET:.0f}s",
                detail=f"{why}; {_detail(svc)}",
                fix="nothing is broken; if the load is not expected, see who calls the API",
            )
        if verdict == "stuck":
            return Check(
                "stack.api",
                "fail",
                "vLLM answers /health but its engine is stuck",
                detail=f"{why}; {_detail(svc)}",
                fix="the watchdog restarts it within a minute; is it running? "
                "`systemctl status sandbox-agent` (else `sandbox-agent logs vllm`)",
            )
    if not judged.ok:
        loading = svc.health == "starting"
        stage = judged.failed.label if judged.failed else "vLLM /health"
        summary = (
            "vLLM is still loading the model"
            if loading
            else "vLLM is not answering"
            if stage == "vLLM /health"
            else f"vLLM answers /health but {stage} fails"
        )
        return Check(
            "stack.api",
            "warn" if loading else "fail",
            summary,
            detail=f"{judged.detail}; {_detail(svc)}",
            fix=f"`sandbox-agent logs {stack.VLLM}` shows what it is doing",
        )
    if svc.health == "unhealthy":
        return Check(
            "stack.api",
            "fail",
            "vLLM answers but its healthcheck fails",
            detail=_detail(svc),
            fix=f"`sandbox-agent logs {stack.VLLM}`",
        )
    return Check(
        "stack.api",
        "ok",
        f"vLLM serves {s.model.name!r} at {service_health.api_url(s)}/v1 (with the key)",
        detail=_detail(svc),
    )


def check_ui(ctx: DoctorContext) -> Check:
    s = ctx.settings
    if not s.ui.enabled:
        return Check("stack.ui", "skip", "the chat UI is disabled (ui.enabled: false)")
    svc = _running(ctx, "stack.ui", stack.UI)
    if isinstance(svc, Check):
        return svc
    ui = service_health.ui_url(s)
    judged = service_health.assess(
        svc, service_health.stages(s, stack.UI, None), budget=PROBE_BUDGET
    )
    if not judged.ok:
        return Check(
            "stack.ui",
            "fail",
            "Open WebUI is not answering",
            detail=f"{judged.detail}; {_detail(svc)}",
            fix=f"`sandbox-agent logs {stack.UI}`",
        )
    login = SecretStore(s.paths.secrets).admin_login()
    if login is None:
        return Check(
            "stack.ui",
            "warn",
            f"Open WebUI answers at {ui}",
            detail="no generated admin credentials to test the model list with",
        )
    models = probes.ui_models(ui, login.email, login.password, s.model.name, timeout=8)
    if not models.ok:
        return Check(
            "stack.ui",
            "warn",
            f"Open WebUI answers at {ui} but its model list failed",
            detail=models.detail,
            fix="if you changed the admin password this check cannot sign in; else "
            f"see `sandbox-agent logs {stack.UI}` and run `sandbox-agent up`",
        )
    return Check(
        "stack.ui", "ok", f"Open WebUI at {ui} lists {s.model.name!r}", detail=_detail(svc)
    )


def _published(svc: stack.ServiceStatus) -> list[tuple[str, int]]:
    out = []
    for port in svc.ports:
        outside = port.split("->")[0]
        ip, _, number = outside.rpartition(":")
        out.append((ip, int(number)))
    return out


def check_exposure(ctx: DoctorContext) -> Check:
    try:
        services = _services(ctx)
    except engine.EngineUnavailable:
        return Check("stack.exposure", "skip", "the Docker engine is not reachable")
    if not any(svc.state == "running" for svc in services.values()):
        return Check("stack.exposure", "skip", "no service of the stack is running")
    open_to: list[str] = []
    failures: list[str] = []
    for name, svc in services.items():
        for ip, port in _published(svc) if svc.state == "running" else []:
            # loopback too: anyone with a shell on the box (or a tunnel) is a stranger as well
            if not ip.startswith(LOOPBACK):
                open_to.append(f"{name} on {ip}:{port}")
            failures += _stranger_view(name, probes.base_url(ip, port), ctx.settings.model.name)
    if failures:
        return Check(
            "stack.exposure",
            "fail",
            "a service is open to anyone who can reach it",
            detail="; ".join(failures),
            fix="run `sandbox-agent up` (it sets the API key and closes signup), or bind "
            "the port to 127.0.0.1 (api.bind / ui.bind) and reach it through SSH",
        )
    if not open_to:
        return Check("stack.exposure", "ok", "the running services listen on this machine only")
    return Check(
        "stack.exposure",
        "ok",
        "published ports require a key or a login",
        detail=", ".join(open_to),
    )


def _stranger_view(service: str, url: str, served_name: str) -> list[str]:
    """What someone without credentials gets from a published port."""
    if service == stack.VLLM:
        answer = probes.vllm_models(url, None, served_name, timeout=5)
        if answer.status == 200:
            return [f"vLLM at {url} answers /v1/models without an API key"]
    elif service == stack.UI:
        answer = probes.ui_signup_closed(url, timeout=5)
        if answer.status == 200 and not answer.ok:
            return [f"Open WebUI at {url}: {answer.detail}"]
    return []


def check_change(ctx: DoctorContext) -> Check:
    """A switch-model or update killed half done (its journal, nobody holding the lock): the
    settings file may name what never came up, and the watchdog stands back until `up`."""
    state = ctx.settings.paths.state
    found = maintenance.pending(state)
    if found is not None:
        return Check(
            "stack.change",
            "fail",
            found.summary,
            detail=f"the change's journal is {maintenance.journal(state).path}; the watchdog "
            "leaves the services alone until it is repaired",
            fix=found.fix,
        )
    held = maintenance.current(state)
    if held is not None:
        return Check(
            "stack.change",
            "warn",
            f"a change is running: {held.describe()}",
            fix="wait for it to finish; the watchdog stands back meanwhile",
        )
    return Check("stack.change", "ok", "no change running or half done")


CHECKS: list[CheckSpec] = [
    CheckSpec("stack.api", check_api, timeout=20),
    CheckSpec("stack.ui", check_ui, timeout=15),
    CheckSpec("stack.exposure", check_exposure, timeout=15),
    CheckSpec("stack.change", check_change, timeout=5),
]
