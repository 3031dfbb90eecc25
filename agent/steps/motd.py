"""motd: the UI and API addresses (the proxy's https URLs when the door is open, else with
this box's public IP), where the credentials are, the model, and `sandbox-agent doctor`.
(On failure the runner writes the failed step instead; while the certificate is pending,
the watchdog's notice says so.)"""

from __future__ import annotations

from agent import door, linode, motd
from agent.secrets import API_KEY, WEBUI_ADMIN, SecretStore
from agent.steps.base import Done, Outcome, StepContext, StepMeta, Todo

META = StepMeta("motd", needs=("stack", "watchdog-unit"), title="login message")


def facts(ctx: StepContext) -> motd.Ready:
    s = ctx.settings

    def where(bind: str) -> str:
        if bind in ("0.0.0.0", "::"):  # only then is the public address asked for
            found = ctx.once("public_ip", lambda: linode.public_ipv4(ctx.metadata))
            return found or "THIS-BOX-IP"
        return f"[{bind}]" if ":" in bind else bind

    store = SecretStore(s.paths.secrets)
    front = door.current(s)  # the name the stack step's `up` saved
    api = door.api_url(s, front) or f"http://{where(s.api.bind)}:{s.api.port}"
    ui = door.ui_url(s, front) or f"http://{where(s.ui.bind)}:{s.ui.port}"
    return motd.Ready(
        model=s.model.name,
        api_url=api + "/v1",
        ui_url=ui if s.ui.enabled else None,
        key_file=store.path(API_KEY),
        admin_file=store.path(WEBUI_ADMIN) if s.ui.enabled else None,
        api_local_only=s.api.bind.startswith("127.") or s.api.bind == "::1",
    )


def check(ctx: StepContext) -> Outcome:
    path = ctx.path("/" + motd.MOTD)
    try:
        current = path.read_text()
    except OSError:
        return Todo(f"write {'/' + motd.MOTD}")
    if current == motd.text(facts(ctx)):
        return Done(f"{'/' + motd.MOTD} is up to date")
    return Todo(f"rewrite {'/' + motd.MOTD}")


def apply(ctx: StepContext) -> str | None:
    motd.write(ctx.root, facts(ctx))
    return None
