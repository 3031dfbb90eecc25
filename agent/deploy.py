"""deploy: secrets + snapshot + fit + render + reconcile + wait until ready; and the stack's
other verbs (down, status, logs), so the CLI calls one function each.

One path shared by `up`, bootstrap's stack step and switch-model. Everything that can be
refused (a bad template, a model not downloaded, GPUs without a runtime, a model that does not
fit) is refused before a secret is written or a container touched.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agent import door, engine, gate, gpu, linode, log, models, service_health, stack
from agent.door import Door
from agent.errors import AgentError, BadInput
from agent.refs import ModelRef
from agent.results import INTERNAL, Progress, Result, quiet
from agent.secrets import API_KEY, WEBUI_ADMIN, WEBUI_SECRET_KEY, SecretStore
from agent.settings import Settings, loopback

if TYPE_CHECKING:
    from agent.engine import DockerClient

HF_HOME_IN_VLLM = Path("/root/.cache/huggingface")  # the vLLM image's HF_HOME


@dataclass(frozen=True)
class DeployResult(Result):
    project: str
    model: str
    api_url: str
    ui_url: str | None
    compose_file: Path
    key_file: Path
    admin_login_file: Path | None
    actions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class DownResult(Result):
    project: str
    removed: tuple[str, ...]
    kept: tuple[Path, ...] = field(default=(), metadata=INTERNAL)  # data folders left alone


@dataclass(frozen=True)
class Plan:
    snapshot: Path
    spec: stack.StackSpec


def healthy_gpus(settings: Settings, root: Path) -> list[int]:
    """Memory totals of the box's healthy GPUs (NVML is not asked when `gpus: none`)."""
    return gpu.read_inventory(root).healthy_memory if settings.gpus != "none" else []


def gpu_plan(settings: Settings, client: DockerClient, root: Path) -> gpu.GpuPlan:
    """The GPUs vLLM gets and the model is fit on (agent.gpu.plan), read once per command."""
    has_runtime = engine.info(client).has_nvidia_runtime
    return gpu.choose(settings.gpus, healthy_gpus(settings, root), has_runtime)


def plan(
    settings: Settings,
    client: DockerClient,
    *,
    root: Path = Path("/"),
    found: gpu.GpuPlan | None = None,
) -> Plan:
    """The snapshot to serve and the GPU request, tensor-parallel size and context length."""
    snapshot = models.snapshot_path(settings)
    container_path = models.snapshot_path(settings, mount=HF_HOME_IN_VLLM)
    m = settings.model
    chosen = found or gpu_plan(settings, client, root)
    tp = m.tensor_parallel_size if m.tensor_parallel_size != "auto" else 1
    max_len = m.max_model_len if m.max_model_len != "auto" else None
    if chosen.fit_on:
        fitted: models.FitPlan | None
        try:
            fitted = models.fit_cached(settings, chosen.fit_on)
        except models.UnsizedModel:
            if "auto" in (m.tensor_parallel_size, m.max_model_len):
                raise
            fitted = None  # both set by hand: trust them, vLLM checks the memory itself
        if fitted is not None:
            if not fitted.fits:
                raise models.NoFit(fitted.reason, fix=models.NO_FIT_FIX)
            tp, max_len = fitted.tensor_parallel_size or tp, fitted.max_model_len
    return Plan(snapshot, stack.StackSpec(str(container_path), tp, max_len, chosen.request))


@dataclass(frozen=True)
class UpOptions:
    """How `up` reaches this box: the same for every `up` one command makes (the change's, its
    rollback's, a repair's), so a command builds it once (the CLI from its environment)."""

    root: Path = Path("/")
    template: Path | None = None
    progress: Progress = quiet
    client: DockerClient | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    token: str | None = None
    metadata: str = linode.METADATA
    front: Door | None = None  # the door, once resolved for this command (else resolved here)

    def saying(self, progress: Progress) -> UpOptions:
        return dataclasses.replace(self, progress=progress)


def up(settings: Settings, options: UpOptions | None = None) -> DeployResult:
    """Fetch the model when it is missing, then render, start what is missing or changed,
    and wait until every service is healthy. Every refusal comes before the first write."""
    o = options or UpOptions()
    root, token, progress, clock = o.root, o.token, o.progress, o.clock
    started = clock()
    client = o.client or engine.connect(settings.docker.host)
    front = o.front if o.front is not None else resolve_door(settings, o.metadata)
    found = gpu_plan(settings, client, root)
    text = check_inputs(
        settings, template=o.template, token=token, gpu_count=found.request, front=front
    )
    _ensure_model(settings, token, found)
    planned = plan(settings, client, root=root, found=found)
    planned = dataclasses.replace(planned, spec=dataclasses.replace(planned.spec, door=front))
    first = stack.render(settings, planned.spec, text)  # a bad template, port, bind: refused
    stack.load_project(first.path, text=first.text, read_env=False)  # ... before any write
    store = SecretStore(settings.paths.secrets)
    store.prepare_folder()
    store.repair()
    api_key = store.ensure(API_KEY)
    secret_env = {stack.VLLM: {"VLLM_API_KEY": api_key}}
    if settings.ui.enabled:
        login = store.ensure_admin_login(settings.ui.admin_email)
        secret_env[stack.UI] = {
            "OPENAI_API_KEY": api_key,
            "WEBUI_SECRET_KEY": store.ensure(WEBUI_SECRET_KEY),
            "WEBUI_ADMIN_EMAIL": login.email,
            "WEBUI_ADMIN_PASSWORD": login.password,
        }
    if front.on:
        _check_key_for_proxy(api_key, store.path(API_KEY))
        secret_env[stack.PROXY] = {stack.caddy.KEY_ENV: api_key}
        if settings.https.domain == "auto" and front.name:
            door.save_name(settings, front.name)  # doctor, status, the watchdog read it
    spec = dataclasses.replace(planned.spec, secret_env=secret_env)
    rendered = stack.render(settings, spec, text)
    stack.write_env_files(rendered)
    stack.write_proxy_files(settings, rendered)
    project = stack.load_project(rendered.path, text=rendered.text)
    progress(f"stack {settings.project}: {planned.snapshot.name[:12]} of {settings.model.id}")
    actions = stack.reconcile(client, project, progress)
    from agent.watchdog import ledger

    if ledger.clear_failed(settings.paths.state):  # `up` is how a person clears it
        progress("the watchdog's failed mark is cleared: it watches the stack again")
    stack.write(rendered)  # the file describes the stack that was started
    progress(", ".join(f"{name} {action}" for name, action in actions.items()))
    gate.wait_ready(settings, client, api_key, progress=progress, sleep=o.sleep, clock=clock)
    public_ui, public_api = door.ui_url(settings, front), door.api_url(settings, front)
    result = DeployResult(
        project=settings.project,
        model=settings.model.name,
        api_url=(public_api or service_health.api_url(settings)) + "/v1",
        ui_url=(public_ui or service_health.ui_url(settings)) if settings.ui.enabled else None,
        compose_file=rendered.path,
        key_file=store.path(API_KEY),
        admin_login_file=store.path(WEBUI_ADMIN) if settings.ui.enabled else None,
        actions=actions,
        seconds=round(clock() - started, 1),
    )
    log.get("deploy").info("stack.ready", **result.as_dict())
    return result


def _check_key_for_proxy(key: str, path: Path) -> None:
    """The proxy compares the key as a header pattern, where `*` is a wildcard: a key of the
    token characters only (the agent makes such keys) means exactly itself."""
    if not re.fullmatch(r"[A-Za-z0-9._~+/=-]{16,}", key):
        raise AgentError(
            f"the API key in {path} holds characters the proxy cannot compare exactly (or is "
            "shorter than 16)",
            fix=f"delete {path} to have a new key generated (or write one of letters, digits "
            "and - _ . ~ + / =), then run `sandbox-agent up`",
        )


def resolve_door(settings: Settings, metadata: str = linode.METADATA) -> Door:
    """The door `up` opens. `https.domain: auto` is the box's Linode name: the one saved at an
    earlier `up`, else asked of the metadata service (off Linode: none, so no proxy). With no
    name a public API is refused, before anything changes: vLLM's own port never faces the
    network."""
    front = door.current(settings)
    if settings.https.domain == "auto" and front.name is None and door.wants(settings).on:
        ipv4 = linode.metadata_ipv4(metadata)
        front = door.current(settings, door.linode_name(ipv4) if ipv4 else None)
    if not front.on and not loopback(settings.api.bind):
        raise BadInput(
            "api.bind",
            f"{settings.api.bind} asks for the API on the network, but https.domain is auto and "
            "this box has no Linode name (the metadata service did not answer), so there is no "
            "proxy to guard vLLM's port",
            fix="set HTTPS_DOMAIN to a domain whose A record points here, or keep "
            "API_BIND=127.0.0.1 and reach the API with `ssh -L 8000:127.0.0.1:8000`",
        )
    if front.on:
        log.get("deploy").info("door.open", name=front.name, ui=front.ui, api=front.api)
    return front


def check_inputs(
    settings: Settings,
    *,
    template: Path | None = None,
    token: str | None = None,
    gpu_count: int | str | None = None,
    front: Door = stack.CLOSED,
) -> str | None:
    """Every refusal of `up` that needs neither a write nor a download, so that a bad input
    is refused before the model is fetched or a lock is taken: the template, the compose file
    rendered from it (ports, binds), and where a pull would send the token. Returns the
    template's text."""
    text = _read_template(template)
    root = settings.https.acme_ca_root
    if front.on and root is not None and not root.is_file():
        raise BadInput(
            "https.acme_ca_root",
            f"{root} is not a file",
            fix="give the PEM file the ACME CA's directory is trusted by, or unset ACME_CA_ROOT",
        )
    # the model's own numbers are not known before it is fetched; the file's shape is
    provisional = stack.StackSpec(str(HF_HOME_IN_VLLM / "hub"), 1, None, gpu_count, door=front)
    first = stack.render(settings, provisional, text)
    stack.load_project(first.path, text=first.text, read_env=False)
    try:
        models.snapshot_path(settings)
    except models.ModelNotCached:
        models.check_token_endpoint(settings, token)  # the pull would carry it there
    return text


def fetch_model(settings: Settings, *, root: Path = Path("/"), token: str | None = None) -> None:
    """The configured model into the cache when it is missing, as `up` would fetch it: for
    a caller that takes the maintenance lock only after the download (it can take hours)."""
    _ensure_model(settings, token, gpu_plan(settings, engine.connect(settings.docker.host), root))


def _ensure_model(settings: Settings, token: str | None, found: gpu.GpuPlan) -> None:
    """The configured model complete in the cache: fetched as `model pull` does (access,
    fit on the GPUs vLLM gets, disk space checked first; the same progress)."""
    try:
        models.snapshot_path(settings)
        return
    except models.ModelNotCached:
        pass
    log.get("deploy").info("model.missing", model=str(settings.model.ref), action="pull")
    models.pull(settings, token=token, gpu_memory=found.fit_on)


def _read_template(template: Path | None) -> str | None:
    if template is None:
        return None
    try:
        return Path(template).read_text()
    except OSError as exc:
        raise BadInput("--template", f"{template} cannot be read: {exc.strerror}") from None


def down(settings: Settings, *, progress: Progress = quiet) -> DownResult:
    """Remove the stack's containers and network; models and chat history stay."""
    removed = stack.down(engine.connect(settings.docker.host), settings.project, progress=progress)
    kept = (settings.paths.ui_data, settings.paths.models)
    return DownResult(settings.project, tuple(removed), kept)


def logs(
    settings: Settings, service: str, *, follow: bool = False, tail: int | Literal["all"] = "all"
) -> Iterator[bytes]:
    """The service's log, redacted line by line with every secret the agent keeps."""
    SecretStore(settings.paths.secrets).read_all()
    client = engine.connect(settings.docker.host)
    return log.redact_lines(stack.logs(client, settings.project, service, follow=follow, tail=tail))


def fit(
    settings: Settings,
    ref: ModelRef,
    token: str | None,
    *,
    gpu_memory: int | None = None,
    gpus: int | None = None,
    root: Path = Path("/"),
) -> models.FitReport:
    """`model fit`: on `gpus` x `gpu_memory` bytes when given, else on this box's GPUs."""
    totals = [gpu_memory] * (gpus or 1) if gpu_memory is not None else _local_gpus(gpus, root)
    return models.fit_model(settings, ref, totals, token)


def _local_gpus(count: int | None, root: Path) -> list[int]:
    """Memory totals of this box's healthy GPUs, or a BadInput asking for --gpu-memory."""
    inventory = gpu.read_inventory(root)
    totals = inventory.healthy_memory
    if not totals:
        raise BadInput(
            "--gpu-memory",
            f"no GPU found on this box to plan for ({inventory.detail})",
            fix="pass --gpu-memory 24GB (and --gpus N) to plan for other hardware",
        )
    if count and count > len(totals):
        raise BadInput(
            "--gpus",
            f"this box has {len(totals)} usable GPU(s), not {count}",
            fix="pass --gpu-memory too (e.g. --gpu-memory 80GB) to plan for other hardware",
        )
    return totals[:count] if count else totals
