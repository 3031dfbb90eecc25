"""The gate: every service of the stack healthy by agent.service_health's stages, in turn, within
`timeouts.ready`; a crash, a timeout or an API that answers without the key ends it with the
service's last log lines. `up`, the bootstrap's stack step and every change pass this one gate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent import probes, service_health, stack
from agent.errors import AgentError
from agent.results import Progress, quiet
from agent.secrets import SecretStore
from agent.settings import Settings

if TYPE_CHECKING:
    from agent.engine import DockerClient


class NotReady(AgentError):
    pass


def wait_ready(
    settings: Settings,
    client: DockerClient,
    api_key: str,
    *,
    progress: Progress = quiet,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Every health stage of every service in turn (agent.service_health), then the UI's admin,
    then the proxy (when the door is open).

    Within `timeouts.ready` in all: no probe waits longer than the time left."""
    checks = service_health.stages(settings, stack.VLLM, api_key)
    if settings.ui.enabled:
        store = SecretStore(settings.paths.secrets)
        ui = service_health.ui_url(settings)
        checks += [
            *service_health.stages(settings, stack.UI, api_key),
            service_health.Stage(
                "Open WebUI admin", stack.UI, lambda t: _ensure_admin(settings, store, ui, t), 10
            ),
        ]
    if stack.PROXY in stack.wanted_services(settings):
        checks += service_health.stages(settings, stack.PROXY, api_key)
    start = clock()
    deadline = start + settings.timeouts.ready
    restarts = {s.service: s.restart_count for s in stack.status(client, settings.project, ())}
    for stage in checks:
        progress(f"waiting for {stage.label}")
        noted = clock()
        while True:
            result = stage.run(min(stage.timeout, max(1.0, deadline - clock())))
            if result.ok:
                progress(f"  ok after {clock() - start:.0f}s: {result.detail}")
                break
            if stage.label == service_health.KEY_REQUIRED and result.status not in (None, 401, 403):
                # An answer without the key is no "not yet": the API is open to anyone.
                stack.stop(client, settings.project, stack.VLLM)
                raise NotReady(
                    f"{stage.label}: {result.detail}; vLLM was stopped",
                    fix="vLLM must start with the agent's key: check model.extra_args and "
                    "images.vllm, then run `sandbox-agent up` again",
                )
            crashed = _crashed(client, settings.project, stage.service, restarts)
            if crashed or clock() >= deadline:
                why = crashed or f"not ready after {settings.timeouts.ready}s"
                raise _not_ready(client, settings, stage.service, stage.label, why, result.detail)
            if clock() - noted >= 30:
                progress(
                    f"  still waiting for {stage.label} ({clock() - start:.0f}s): {result.detail}"
                )
                noted = clock()
            sleep(1.0)
    # A service that crashes and comes back can answer every probe between two crashes.
    for service in dict.fromkeys(stage.service for stage in checks):
        crashed = _crashed(client, settings.project, service, restarts, limit=1)
        if crashed:
            raise _not_ready(
                client, settings, service, f"{service} staying up", crashed, "every probe passed"
            )


def _ensure_admin(settings: Settings, store: SecretStore, ui: str, timeout: float) -> probes.Probe:
    """Signup closed with an admin in place; creates the admin when the UI has no user yet
    (UI versions that ignore WEBUI_ADMIN_EMAIL leave the first signup to whoever comes)."""
    closed = probes.ui_signup_closed(ui, timeout)
    if closed.ok or closed.status != 200:
        return closed
    if "no user" in closed.detail:
        login = store.ensure_admin_login(settings.ui.admin_email)
        made = probes.ui_signup(ui, "admin", login.email, login.password, timeout)
        return made if not made.ok else probes.ui_signup_closed(ui, timeout)
    raise AgentError(
        f"Open WebUI lets anyone sign up ({closed.detail})",
        fix="set ENABLE_SIGNUP=False for the UI, or disable signup in its admin panel",
    )


def _crashed(
    client: DockerClient,
    project: str,
    service: str,
    restarts: dict[str, int],
    limit: int = service_health.CRASH_RESTARTS,
) -> str:
    found = {s.service: s for s in stack.status(client, project, (service,))}
    return service_health.container_problem(found.get(service), restarts.get(service, 0), limit)


def _not_ready(
    client: DockerClient, settings: Settings, service: str, label: str, why: str, last: str
) -> NotReady:
    tail = stack.last_lines(client, settings.project, service, 15)
    fix = f"see `sandbox-agent logs {service}`; " + (
        "check that the model fits the GPUs and its files are complete; a very large model may "
        "need a longer timeouts.ready"
        if service == stack.VLLM
        else "another program may hold one of its ports (https.http_port, https.port, "
        "https.api_port, https.health_port); check images.proxy"
        if service == stack.PROXY
        else "check the UI's data folder and image"
    )
    message = f"{label}: {why}; last answer: {last}"
    if tail:
        message += f"\nlast log lines of {service}:\n" + "\n".join(
            "  " + line for line in tail.splitlines()
        )
    return NotReady(message, fix=fix)
