"""switch-model and update: one change-with-rollback path.

A change is refused before anything moves (bad id, a model that does not exist, is gated
without a token or does not fit; an image that cannot be pulled; a driver too old for the new
vLLM), prepared while the old stack serves (fetch, pull), then made one service at a time
through `deploy.up`, the gate included. When a new service does not come up, the settings
file from before the change is put back and `deploy.up` brings the old stack back before the
error is raised: the whole change, a service an earlier step of the same `update` had moved
included; and so does every other way out of the gate (Ctrl-C, SIGTERM). A journal under
`paths.state` (agent.maintenance) records the change from its first write to its end (`before`:
the file from before it), so a change killed at any point is repaired by the next `up`,
`switch-model` or `update`, and is shown half done until then. The maintenance lock keeps the
watchdog (and a second change) away from the save to the end of the gate: not while the new
model downloads or the new images pull, which can take hours while the old stack serves.
An update that moves Open WebUI backs its data up first (agent.backup), and copies the quiet
data folder aside before the new image may migrate its database: a rollback, or the repair of
an update killed half done, renames that copy back before the old image starts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent import backup, deploy, door, gpu, log, maintenance, models, stack
from agent.errors import AgentError, BadInput
from agent.files import atomic_write
from agent.maintenance import ChangeInProgress
from agent.refs import ModelRef
from agent.results import Progress, Result
from agent.settings import PROXY_IMAGE, VLLM_IMAGE, WEBUI_IMAGE, Settings, save

Reload = Callable[[dict[str, Any] | None], Settings]  # the CLI's loader, flags on top


class ChangeFailed(AgentError):
    """The new model or image did not come up; the old one was put back."""


@dataclass(frozen=True)
class ChangeResult(Result):
    kind: str  # switch-model | update
    changed: bool
    before: dict[str, str]
    after: dict[str, str]
    actions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


# --- the journal and the rollback ---------------------------------------------------------


def _journal(settings: Settings) -> maintenance.Journal:
    return maintenance.journal(settings.paths.state)


def _restore(config: Path, before: str | None) -> None:
    if before is None:
        config.unlink(missing_ok=True)
    else:
        atomic_write(config, before, mode=0o644)


def recover(settings: Settings, config: Path, reload: Reload, up: deploy.UpOptions) -> Settings:
    """Repair a change that was killed: settings put back as they were before it, the stack
    brought back to them. Returns the settings to go on with. Call with the lock held."""
    journal = _journal(settings)
    record = journal.read()
    if record is None:
        return settings
    if record.get("phase") in maintenance.HALF_DONE:
        up.progress(
            f"an interrupted {record.get('kind')} is repaired first: previous settings back"
        )
        # the file the change wrote (recorded absolute); an older relative record: this one
        recorded = Path(str(record.get("config") or ""))
        _restore(recorded if recorded.is_absolute() else config, record.get("before"))
        if isinstance(record.get("data"), dict):  # and the data folder from before it
            backup.put_back(settings, record["data"], up.progress)
        settings = reload(None)
        deploy.up(settings, up)
    log.get("switch").warning("change.repaired", kind=record.get("kind"), phase=record.get("phase"))
    journal.clear()
    return settings


def up(
    settings: Settings, config: Path, reload: Reload, options: deploy.UpOptions
) -> deploy.DeployResult:
    """`sandbox-agent up`: an interrupted change repaired first, under the maintenance lock.
    Bad input is refused before the lock is taken (it is a file)."""
    # bad input first, with the door as saved (no network); then the name, when auto asks
    deploy.check_inputs(
        settings, template=options.template, token=options.token, front=door.current(settings)
    )
    options = replace(options, front=deploy.resolve_door(settings, options.metadata))
    state = settings.paths.state
    if maintenance.current(state) is None and maintenance.pending(state) is None:
        # before the lock: the watchdog keeps watching while a missing model downloads
        deploy.fetch_model(settings, root=options.root, token=options.token)
    with maintenance.hold(state, "up"):
        return deploy.up(recover(settings, config, reload, options), options)


def _unchanged(planned: Settings, config: Path, reload: Reload, up: deploy.UpOptions) -> None:
    """Under the lock, before the first save: the settings are still those the change was
    prepared from (another change may have run, or been killed, while this one fetched)."""
    now = recover(planned, config, reload, up)
    if now is planned:
        now = reload(None)
    if now != planned:
        raise ChangeInProgress(
            "the settings changed while this change was prepared (another change ran "
            "meanwhile); nothing was changed",
            fix="see `sandbox-agent status`, then run the command again",
        )


@dataclass(frozen=True)
class Stage:
    """One step of a change: the settings it saves and brings up, gated before the next."""

    settings: Settings
    said: str = ""  # the progress line when it starts
    undo: str = ""  # what putting it back means, once it came up: for the rollback's message
    keeps_data: bool = False  # a new Open WebUI: its data folder copied first, for a rollback


def _said(progress: Progress) -> Progress:
    """Progress that cannot break a rollback: the terminal may be gone (SIGHUP)."""

    def say(line: str) -> None:
        with contextlib.suppress(OSError):
            progress(line)

    return say


@dataclass
class _Change:
    kind: str
    config: Path
    journal: maintenance.Journal
    before: str | None
    came_up: list[Stage] = field(default_factory=list)
    data: dict[str, Any] | None = None  # the data folder's copy (agent.backup.swap)

    def starting(self, data: dict[str, Any] | None = None) -> None:
        """The stack is being changed: a kill from here on needs the repair."""
        self.data = data or self.data
        self.journal.write(self.kind, "starting", self.config, self.before, self.data)

    def rolled_back(self) -> str:
        undone = "; ".join(s.undo for s in self.came_up if s.undo)
        back = f"rolled back the whole {self.kind}: {undone}; " if undone else "rolled back: "
        return f"{back}the previous configuration serves again"


@contextlib.contextmanager
def _rollback_unless_done(
    kind: str, old: Settings, config: Path, reload: Reload, up: deploy.UpOptions
) -> Iterator[_Change]:
    """The change's block, journalled. Every way out of it but its end (an error, Ctrl-C,
    SIGTERM raised as SystemExit in the CLI) puts the settings from before back, and
    `deploy.up` brings the stack back to them, before the exception goes on: an AgentError as
    ChangeFailed, anything else as itself. A rollback itself interrupted leaves the journal:
    the next `up` or change repairs."""
    journal = _journal(old)
    change = _Change(kind, config, journal, config.read_text() if config.exists() else None)
    journal.write(kind, "saved", config, change.before)
    try:
        yield change
    except BaseException as exc:
        say = _said(up.progress)
        failed = isinstance(exc, AgentError)
        what = "the new configuration did not come up" if failed else "interrupted"
        say(f"{what}: putting the previous one back")
        _restore(config, change.before)
        if change.data is not None:  # before the old Open WebUI starts: its own schema
            backup.put_back(old, change.data, say)
        try:
            deploy.up(reload(None), up.saying(say))
        except AgentError as again:
            journal.clear()  # the file is back: a repair would only run this `up` again
            raise ChangeFailed(
                f"{exc.message if isinstance(exc, AgentError) else what}\nand the previous "
                f"configuration did not come back either: {again.message}",
                fix=again.fix,
            ) from None
        journal.clear()
        if isinstance(exc, AgentError):
            raise ChangeFailed(f"{exc.message}\n{change.rolled_back()}", fix=exc.fix) from None
        say(change.rolled_back())
        raise
    journal.clear()
    if change.data is not None:
        backup.drop_copy(change.data)


def _apply(
    kind: str,
    old: Settings,
    stages: list[Stage],
    config: Path,
    reload: Reload,
    up: deploy.UpOptions,
) -> dict[str, str]:
    """Save each stage's settings and bring the stack to them in turn (only what changed is
    recreated, and gated). When one does not come up, the settings from before the first
    stage are put back and `deploy.up` brings the stack back to them: the whole change, the
    stages that came up included. Returns each service's action (`kept` only when no stage
    changed it). Call with the lock held."""
    actions: dict[str, str] = {}
    progress = up.progress
    with _rollback_unless_done(kind, old, config, reload, up) as change:
        for stage in stages:
            if stage.said:
                progress(stage.said)
            save(stage.settings, config, keep_backup=not change.came_up)  # .bak: from before
            change.starting()
            if stage.keeps_data:
                backup.keep_copy(stage.settings, change.starting, progress)
            result = deploy.up(stage.settings, up)
            for name, action in result.actions.items():
                if action != "kept" or name not in actions:
                    actions[name] = action
            change.came_up.append(stage)
    return actions


def switch_model(
    settings: Settings,
    config: Path,
    ref: ModelRef,
    reload: Reload,
    up: deploy.UpOptions,
    *,
    served_name: str | None = None,
    max_model_len: int | None = None,
) -> ChangeResult:
    """Serve `ref` instead of the current model, or keep the current one serving."""
    started = time.monotonic()
    root, token, progress = up.root, up.token, up.progress
    what = f"switch-model {ref}"
    with maintenance.hold(settings.paths.state, what):  # a change killed earlier: repaired
        current = recover(settings, config, reload, up)
    new = reload(
        {
            "model.id": ref.repo_id,
            "model.revision": ref.revision,
            "model.served_name": served_name or "",
            "model.max_model_len": max_model_len or "auto",
            "model.tensor_parallel_size": "auto",
        }
    )
    before = {"model": str(current.model.ref), "served_name": current.model.name}
    after = {"model": str(new.model.ref), "served_name": new.model.name}
    if new.model == current.model:
        return ChangeResult("switch-model", False, before, after)
    # fit on the GPUs vLLM will get (the `gpus` setting), not every GPU the box has
    fit_on = list(gpu.chosen(new.gpus, deploy.healthy_gpus(new, root))) or None
    progress(f"checking {ref} on the Hub")
    if fit_on:
        plan = models.fit_model(new, ref, fit_on, token).plan
        if not plan.fits:
            raise models.NoFit(plan.reason, fix=models.NO_FIT_FIX)
    else:
        models.resolve(new, ref, token)  # exists, and we may fetch it
    progress(f"fetching {ref} while {current.model.ref} keeps serving")
    models.pull(new, ref, token=token, gpu_memory=fit_on)  # no lock: the watchdog
    with maintenance.hold(settings.paths.state, what):  # keeps the old model up meanwhile
        _unchanged(current, config, reload, up)
        actions = _apply("switch-model", current, [Stage(new)], config, reload, up)
    return ChangeResult(
        "switch-model", True, before, after, actions, round(time.monotonic() - started, 1)
    )


def _check_driver(image: str, root: Path) -> None:
    """A vLLM image this box's working driver cannot run is refused (agent.gpu.cuda)."""
    if gpu.image_cuda(image) is None:
        return  # not one of vLLM's release tags: nothing to judge, no NVML to open
    inventory = gpu.read_inventory(root)
    if inventory.state != "ok":
        return  # no working driver to compare with: doctor's gpu checks say why
    fit = gpu.driver_fit(image, inventory.driver_version, inventory.cuda_driver_version)
    if fit.fits is False:
        use = "`sandbox-agent update --vllm-image {image}`"
        raise AgentError(
            f"{fit.summary} (it runs CUDA {inventory.cuda_driver_version or '?'} at most); "
            "nothing was changed",
            fix=fit.fix(f"use the CUDA 12.9 build of the same release ({use})"),
        )


def update(
    settings: Settings,
    config: Path,
    reload: Reload,
    up: deploy.UpOptions,
    *,
    vllm_image: str | None = None,
    webui_image: str | None = None,
    proxy_image: str | None = None,
) -> ChangeResult:
    """Move the stack to new images, one service at a time (vLLM, Open WebUI, the proxy), each
    gated; when one does not come up, the whole update is rolled back. With no image given,
    every service moves to the image this agent pins; with some, only those services change.
    The proxy is recreated only when its own image changes: the UI stays reachable."""
    from agent import engine

    started = time.monotonic()
    root, progress = up.root, up.progress
    pinned = vllm_image is None and webui_image is None and proxy_image is None
    proxied = stack.PROXY in stack.wanted_services(settings)
    if proxy_image and not proxied:
        raise BadInput(
            "--proxy-image",
            "no proxy runs (https.domain is off, or auto without a Linode name, or nothing "
            "faces the network); nothing was changed",
            fix="the proxy starts with images.proxy once the door is open (HTTPS_DOMAIN, and a "
            "UI_BIND that faces the network), at the next `sandbox-agent up`",
        )
    with maintenance.hold(settings.paths.state, "update"):  # a change killed earlier: repaired
        current = recover(settings, config, reload, up)
    wanted: dict[str, Any] = {}
    if vllm_image or pinned:
        wanted["images.vllm"] = vllm_image or VLLM_IMAGE
    if current.ui.enabled and (webui_image or pinned):
        wanted["images.webui"] = webui_image or WEBUI_IMAGE
    if proxied and (proxy_image or pinned):
        wanted["images.proxy"] = proxy_image or PROXY_IMAGE
    target = reload(wanted)  # validates the references
    keys = [("vllm", stack.VLLM), ("webui", stack.UI)]
    keys += [("proxy", stack.PROXY)] if proxied else []
    before = {key: getattr(current.images, key) for key, _ in keys}
    after = {key: getattr(target.images, key) for key, _ in keys}
    steps = [
        (service, key, after[key])
        for key, service in keys
        if f"images.{key}" in wanted and after[key] != before[key]
    ]
    if not steps:
        return ChangeResult("update", False, before, after)
    if any(key == "vllm" for _, key, _ in steps):
        _check_driver(after["vllm"], root)
    client = engine.connect(current.docker.host)
    for _, _, ref in steps:  # every new image is here before any container changes; no lock:
        stack.ensure_image(client, ref, progress)  # the watchdog keeps the old ones up meanwhile
    if any(key == "webui" for _, key, _ in steps) and current.paths.ui_data.is_dir():
        # a new Open WebUI migrates its database on its first start
        backup.check_swappable(current)
        backup.check_room_for_copy(current)
        progress("backing up Open WebUI's data before it moves")
        made = backup.backup(current, reason="before update", progress=progress)
        progress(f"  backup: {made.path}")
    stages: list[Stage] = []
    done: dict[str, Any] = {}
    for service, key, ref in steps:
        done[f"images.{key}"] = ref
        stages.append(
            Stage(
                reload(dict(done)),
                said=f"moving {service} to {ref}",
                undo=f"{service} is back on {before[key]} too (it had come up on {ref})",
                keeps_data=key == "webui" and current.paths.ui_data.is_dir(),
            )
        )
    with maintenance.hold(settings.paths.state, "update"):
        _unchanged(current, config, reload, up)
        actions = _apply("update", current, stages, config, reload, up)
    return ChangeResult(
        "update", True, before, after, actions, round(time.monotonic() - started, 1)
    )
