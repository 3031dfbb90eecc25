"""Where the agent may keep data: the folders a setting may name for models, chat history,
the stack, state and secrets. Never a system folder, never inside one the OS owns, only under
the bases data belongs in, in folders of root's own that no one else may write to, and no two
of them overlapping.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from agent.errors import BadInput

# The system's own folders: no data path may be one of them, and models, chat history and the
# stack may not live inside the ones the OS owns (the UI bind-mounts its folder read-write).
SYSTEM_DIRS = frozenset(
    [
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/snap",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/var",
        "/var/cache",
        "/var/lib",
        "/var/lib/docker",
        "/var/log",
        "/var/run",
        "/var/tmp",
    ]
)
OS_OWNED = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib/docker",
    "/var/run",
)
AGENT_HOME = "/opt/sandbox-agent"  # the StackScript's venv: code that runs as root
# Where data may live at all: an allow-list, since the deny-list of folders that belong to
# people or to the system (/root/.ssh, /home, /var/spool/cron, /var/lib/dpkg, /var/log/...)
# never ends, and a data folder is mounted read-write into a root container. /opt (add-on
# software and its data: our defaults), /srv (data this box serves), /mnt and /data (mounted
# volumes: Linode's Block Storage guides mount under /mnt), and the system's temporary
# folders /tmp and /var/tmp (tests, scratch boxes; /tmp is emptied at boot). The temporary
# folders are everyone's, which the ownership rule below answers: a folder there that someone
# else made, or may write into, is refused.
DATA_BASES = ("/opt", "/srv", "/mnt", "/data", "/tmp", "/var/tmp")
OWN_BASES = ("/var/lib/sandbox-agent", "/etc/sandbox-agent")  # also for state and secrets


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _path_problem(key: str, path: str, own: tuple[str, ...]) -> str | None:
    if path.rstrip("/") in SYSTEM_DIRS or path == "/":
        return f"{path} is a folder of the system itself"
    for folder in OS_OWNED:
        if _inside(path, folder) and not (folder == "/etc" and key in own):
            return f"{path} is inside {folder}, which the operating system owns"
    if _inside(path, AGENT_HOME):
        return f"{path} is inside {AGENT_HOME}, the agent's own installation"
    bases = DATA_BASES + (OWN_BASES if key in own else ())
    if not any(_inside(path, base) for base in bases):
        return f"{path} is not inside a folder data may live in ({', '.join(bases)})"
    return None


def _owner_problem(path: str) -> str | None:
    """Every folder of `path` that exists, from its base down, belongs to root (or the user
    running the agent) and is closed to others, as the secrets folder must be; only a sticky
    base (/tmp) may be open to all."""
    base = max((b for b in DATA_BASES + OWN_BASES if _inside(path, b)), key=len)
    folder, mine = Path(base), {0, os.geteuid()}
    for part in ("", *Path(path).relative_to(base).parts):
        folder = folder / part
        try:
            info = folder.lstat()
        except OSError:
            return None  # not there yet: the agent makes it, as root
        if info.st_uid not in mine:
            return f"{folder} belongs to another user (uid {info.st_uid})"
        if info.st_mode & 0o022 and not (part == "" and info.st_mode & stat.S_ISVTX):
            return f"{folder} is writable by others (mode {info.st_mode & 0o7777:o})"
    return None


def _nested(inner: str, inner_path: str, outer: str, outer_path: str, nest: dict[str, str]) -> bool:
    """`inner` lies inside (not at) `outer`, and may."""
    return nest.get(inner) == outer and inner_path != outer_path and _inside(inner_path, outer_path)


def separate_data_paths(
    values: dict[str, Any],
    where: dict[str, str],
    own: tuple[str, ...] = (),
    may_nest: dict[str, str] | None = None,
) -> None:
    """Data paths (key -> path) inside the folders data may live in and outside the system's,
    also through a symlink, and none inside another (a key of `may_nest` may lie inside, never
    at, the folder of the key it names: backups in the state folder); all but the `own` keys
    (secrets, state, backups: rules of their own) in folders of root's own; `own` keys may also
    live in the agent's own folders under /etc and /var/lib."""
    nest = may_nest or {}
    keys = tuple(values)
    for key in keys:
        given = str(values[key]).rstrip("/") or "/"
        problem = _path_problem(key, given, own)
        if problem is None:
            real = os.path.realpath(given)  # a symlink at /opt/models may point at /
            if real != given:
                problem = _path_problem(key, real, own)
                problem = f"{given} leads to {problem}" if problem else None
            if key not in own:  # the secrets folder has its own rule, which doctor reports
                problem = problem or _owner_problem(real)
        if problem:
            raise BadInput(
                where[key], problem, fix="use a folder of its own, e.g. the default under /opt"
            )
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            pa, pb = str(values[a]).rstrip("/"), str(values[b]).rstrip("/")
            if _nested(a, pa, b, pb, nest) or _nested(b, pb, a, pa, nest):
                continue
            if _inside(pa, pb) or _inside(pb, pa):
                raise BadInput(
                    where[a],
                    f"{pa} and {b} ({pb}) overlap: each path needs a folder of its own",
                    fix="the UI and vLLM mount their folders, so secrets or another folder "
                    "inside them would be handed to a container",
                )
