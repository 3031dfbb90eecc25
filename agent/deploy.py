"""deploy: secrets + snapshot + fit + render + reconcile + wait until ready.

One path shared by `up`, bootstrap's stack step and switch-model. Everything that can be
refused (a bad template, a model not downloaded, GPUs without a runtime, a model that does not
fit) is refused before a secret is written or a container touched.
"""

from __future__ import annotations

import dataclasses
import secrets as _random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import engine, log, probes, stack
from agent.errors import AgentError, BadInput
from agent.secrets import API_KEY, WEBUI_ADMIN, WEBUI_SECRET_KEY, SecretStore
from agent.settings import Settings

HF_HOME_IN_VLLM = Path("/root/.cache/huggingface")  # the vLLM image's HF_HOME
CRASH_RESTARTS = 3  # restarts during the wait that mean "crash loop", not "still loading"
Progress = Callable[[str], None]


class NotReady(AgentError):
    pass


@dataclass(frozen=True)
class DeployResult:
    project: str
    model: str
    api_url: str
    ui_url: str | None
    compose_file: Path
    key_file: Path
    admin_login_file: Path | None
    actions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Plan:
    snapshot: Path
    spec: stack.StackSpec


def _quiet(_: str) -> None:
    pass


def plan(settings: Settings, client: Any, *, root: Path = Path("/")) -> Plan:
    """The snapshot to serve and the GPU request, tensor-parallel size and context length."""
    from agent import model_fit, models

    snapshot = models.snapshot_path(settings)
    container_path = models.snapshot_path(settings, mount=HF_HOME_IN_VLLM)
    m = settings.model
    memory: list[int] = []
    if settings.gpus != "none":
        from agent import gpu

        memory = gpu.read_inventory(root).healthy_memory
    request = stack.gpu_request(settings.gpus, len(memory), engine.info(client).has_nvidia_runtime)
    tp = m.tensor_parallel_size if m.tensor_parallel_size != "auto" else 1
    max_len = m.max_model_len if m.max_model_len != "auto" else None
    if request is not None and memory:
        from agent import fit

        count = None if request == "all" else int(request)
        try:
            fitted = model_fit.fit_cached(settings, memory, count)
        except fit.UnsizedModel:
            if "auto" in (m.tensor_parallel_size, m.max_model_len):
                raise
            fitted = None  # both set by hand: trust them, vLLM checks the memory itself
        if fitted is not None:
            if not fitted.fits:
                raise fit.NoFit(fitted.reason, fix=fit.NO_FIT_FIX)
            tp, max_len = fitted.tensor_parallel_size or tp, fitted.max_model_len
    return Plan(snapshot, stack.StackSpec(str(container_path), tp, max_len, request))


def admin_credentials(settings: Settings, store: SecretStore) -> tuple[str, str]:
    """The UI's first admin, `webui_admin` = "email\\npassword": generated once, kept."""
    lines = (store.read(WEBUI_ADMIN) or "").splitlines()
    password = lines[1] if len(lines) > 1 and lines[1] else _random.token_urlsafe(18)
    if lines[:1] != [settings.ui.admin_email] or len(lines) < 2:
        store.write(WEBUI_ADMIN, f"{settings.ui.admin_email}\n{password}\n")
    return settings.ui.admin_email, password


def up(
    settings: Settings,
    *,
    root: Path = Path("/"),
    template: Path | None = None,
    progress: Progress = _quiet,
    client: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> DeployResult:
    started = clock()
    text = _read_template(template)
    client = client or engine.connect()
    planned = plan(settings, client, root=root)
    stack.render(settings, planned.spec, text)  # refuse a bad template before any change
    store = SecretStore(settings.paths.secrets)
    api_key = store.ensure(API_KEY)
    secret_env = {stack.VLLM: {"VLLM_API_KEY": api_key}}
    if settings.ui.enabled:
        email, password = admin_credentials(settings, store)
        secret_env[stack.UI] = {
            "OPENAI_API_KEY": api_key,
            "WEBUI_SECRET_KEY": store.ensure(WEBUI_SECRET_KEY),
            "WEBUI_ADMIN_EMAIL": email,
            "WEBUI_ADMIN_PASSWORD": password,
        }
    spec = dataclasses.replace(planned.spec, secret_env=secret_env)
    rendered = stack.render(settings, spec, text)
    stack.write_env_files(rendered)
    project = stack.load_project(rendered.path, text=rendered.text)
    progress(f"stack {settings.project}: {planned.snapshot.name[:12]} of {settings.model.id}")
    actions = stack.reconcile(client, project, progress)
    stack.write(rendered)  # the file describes the stack that was started
    progress(", ".join(f"{name} {action}" for name, action in actions.items()))
    wait_ready(settings, client, api_key, progress=progress, sleep=sleep, clock=clock)
    result = DeployResult(
        project=settings.project,
        model=settings.model.name,
        api_url=probes.base_url(settings.api.bind, settings.api.port) + "/v1",
        ui_url=probes.base_url(settings.ui.bind, settings.ui.port) if settings.ui.enabled else None,
        compose_file=rendered.path,
        key_file=store.path(API_KEY),
        admin_login_file=store.path(WEBUI_ADMIN) if settings.ui.enabled else None,
        actions=actions,
        seconds=round(clock() - started, 1),
    )
    log.get("deploy").info("stack.ready", **result.as_dict())
    return result


def _read_template(template: Path | None) -> str | None:
    if template is None:
        return None
    try:
        return Path(template).read_text()
    except OSError as exc:
        raise BadInput("--template", f"{template} cannot be read: {exc.strerror}") from None


def wait_ready(
    settings: Settings,
    client: Any,
    api_key: str,
    *,
    progress: Progress = _quiet,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """vLLM /health, the served name in /v1/models, one chat completion, then the UI.

    Within `timeouts.ready` in all: no probe waits longer than the time left."""
    api = probes.base_url(settings.api.bind, settings.api.port)
    ui = probes.base_url(settings.ui.bind, settings.ui.port)
    name = settings.model.name
    stages: list[tuple[str, str, Callable[[float], probes.Probe]]] = [
        ("vLLM /health", stack.VLLM, lambda left: probes.vllm_health(api, min(3, left))),
        (
            f"{name} in /v1/models",
            stack.VLLM,
            lambda left: probes.vllm_models(api, api_key, name, min(5, left)),
        ),
        (
            "a chat completion",
            stack.VLLM,
            lambda left: probes.vllm_chat(api, api_key, name, min(60, left)),
        ),
    ]
    if settings.ui.enabled:
        store = SecretStore(settings.paths.secrets)
        stages += [
            ("Open WebUI /health", stack.UI, lambda left: probes.ui_health(ui, min(3, left))),
            (
                "Open WebUI admin",
                stack.UI,
                lambda left: _ensure_admin(settings, store, ui, min(10, left)),
            ),
        ]
    start = clock()
    deadline = start + settings.timeouts.ready
    restarts = {s.service: s.restart_count for s in stack.status(client, settings.project, ())}
    for label, service, probe in stages:
        progress(f"waiting for {label}")
        noted = clock()
        while True:
            result = probe(max(1.0, deadline - clock()))
            if result.ok:
                progress(f"  ok after {clock() - start:.0f}s: {result.detail}")
                break
            crashed = _crashed(client, settings.project, service, restarts.get(service, 0))
            if crashed or clock() >= deadline:
                why = crashed or f"not ready after {settings.timeouts.ready}s"
                raise _not_ready(client, settings, service, label, why, result.detail)
            if clock() - noted >= 30:
                progress(f"  still waiting for {label} ({clock() - start:.0f}s): {result.detail}")
                noted = clock()
            sleep(1.0)
    # A service that crashes and comes back can answer every probe between two crashes.
    for service in dict.fromkeys(service for _, service, _ in stages):
        crashed = _crashed(client, settings.project, service, restarts.get(service, 0), limit=1)
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
        email, password = admin_credentials(settings, store)
        made = probes.ui_signup(ui, "admin", email, password, timeout)
        return made if not made.ok else probes.ui_signup_closed(ui, timeout)
    raise AgentError(
        f"Open WebUI lets anyone sign up ({closed.detail})",
        fix="set ENABLE_SIGNUP=False for the UI, or disable signup in its admin panel",
    )


def _crashed(
    client: Any, project: str, service: str, restarts_before: int, limit: int = CRASH_RESTARTS
) -> str:
    for svc in stack.status(client, project, (service,)):
        if svc.service != service:
            continue
        if svc.state in ("exited", "dead", "missing"):
            return f"the {service} container is {svc.state}"
        if svc.restart_count - restarts_before >= limit:
            return (
                f"the {service} container crashed {svc.restart_count - restarts_before} "
                "time(s) while up waited for it"
            )
    return ""


def _not_ready(
    client: Any, settings: Settings, service: str, label: str, why: str, last: str
) -> NotReady:
    tail = stack.last_lines(client, settings.project, service, 15)
    fix = f"see `sandbox-agent logs {service}`; " + (
        "check that the model fits the GPUs and its files are complete; a very large model may "
        "need a longer timeouts.ready"
        if service == stack.VLLM
        else "check the UI's data folder and image"
    )
    message = f"{label}: {why}; last answer: {last}"
    if tail:
        message += f"\nlast log lines of {service}:\n" + "\n".join(
            "  " + line for line in tail.splitlines()
        )
    return NotReady(message, fix=fix)
