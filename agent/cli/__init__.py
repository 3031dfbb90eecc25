"""sandbox-agent's commands: each verb parses, calls one function, renders what it returns.

Exit codes: 0 ok, 1 a failed check or action, 2 bad input (nothing was changed).
"""

from __future__ import annotations

import click

from agent import __version__, log
from agent.cli.backup import COMMANDS as BACKUP_COMMANDS
from agent.cli.bootstrap import bootstrap
from agent.cli.doctor import doctor
from agent.cli.environment import Environment
from agent.cli.model import model
from agent.cli.stack import COMMANDS as STACK_COMMANDS
from agent.cli.switch import COMMANDS as CHANGE_COMMANDS
from agent.cli.watch import watch


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sandbox-agent")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Turn a GPU box into a private vLLM + Open WebUI stack, and keep it healthy."""
    ctx.ensure_object(Environment)  # the process's own, unless the caller passed obj=
    if verbose:
        log.configure(verbose=True)


for _command in (
    bootstrap,
    doctor,
    model,
    *STACK_COMMANDS,
    *CHANGE_COMMANDS,
    *BACKUP_COMMANDS,
    watch,
):
    main.add_command(_command)
