"""The REAL vLLM's argument parser, installed from PyPI once into a cached venv on this host.

Our vLLM stand-in accepts any flag; this is how a test learns whether the real ``vllm serve``
takes a command line the agent renders. The suite's own venv never imports vLLM: the parse
runs in a venv of its own, as a subprocess (``tests/fakes/vllm_parse.py``), one process for
many command lines (JSON on stdin, one result per line on stdout).

- ``VLLM_VERSION`` is the pin the contract is checked against. The wheel pins
  ``torch==2.13.0``: the CPU build that lies on this machine (pip's find-links), never a CUDA
  download. ``torchvision``, ``torchaudio`` and ``torchcodec`` do not load beside it without
  CUDA and the parser needs none of them: they are uninstalled after the install.
- A venv, not ``pip install --target`` as for Open WebUI: pip can uninstall from it, and
  nothing of the suite's venv leaks in. Kept in ``CACHE_ROOT/vllm-<version>-<key>/venv``
  (cold: about 5 min on 2 cores with the downloads, 5.6 GB; warm: nothing to do). Built as
  ``venv.partial``, checked (it must parse a command line), then renamed; ``complete.json``
  is written last. Builds take an exclusive ``fcntl`` lock.

As a script: ``python tests/fakes/vllm_parser.py`` builds the venv (if needed) and prints its
Python; CI runs it before pytest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `tests.fakes` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fakes import images  # noqa: E402

VLLM_VERSION = "0.30.0"
TORCH_VERSION = "2.13.0"  # what vllm 0.30.0 pins; the CPU wheel on this machine has it
REQUIREMENTS = (f"torch=={TORCH_VERSION}", f"vllm=={VLLM_VERSION}")
# They do not load with the CPU torch here (`torchvision::nms does not exist`, libnvrtc).
REMOVE = ("torchvision", "torchaudio", "torchcodec")
# Bump when the recipe changes in a way the inputs below do not show.
RECIPE_VERSION = "1"

CACHE_ROOT = Path(os.environ.get("SANDBOX_TEST_CACHE", "/var/cache/sandbox-agent-test"))
LOCK_PATH = CACHE_ROOT / "vllm-parser.lock"
PYTHON = os.environ.get("SANDBOX_TEST_PIP_PYTHON", sys.executable)
SCRIPT = Path(__file__).resolve().with_name("vllm_parse.py")
PARSE_TIMEOUT = 900  # seconds for one batch: the import alone takes 15 s on a busy 2-core box
# A command line every vLLM parses: the check that the venv works before it is kept.
SMOKE = ("/models/smoke", "--served-model-name=smoke")


class VllmParserError(images.ImageBuildError):
    """The vLLM parser venv could not be built or run; the message says what to do next."""


@dataclass(frozen=True)
class Parsed:
    """What vLLM's parser made of one command line."""

    argv: tuple[str, ...]
    ok: bool
    namespace: dict[str, Any] = field(default_factory=dict)  # the values the agent sets
    values: dict[str, Any] = field(default_factory=dict)  # every parsed attribute
    auth: dict[str, Any] = field(default_factory=dict)  # what the server's key check does
    exit_code: int | None = None  # argparse's 2; None for a ValueError and the like
    error: str = ""


@dataclass(frozen=True)
class Answer:
    vllm: str
    python: str
    results: tuple[Parsed, ...]
    options: dict[str, list[str]]  # dest -> the option strings vLLM reads for it


def env_key() -> str:
    """What the venv depends on: the pins, the removals, the base Python and the recipe."""
    recipe = {
        "requirements": list(REQUIREMENTS),
        "remove": list(REMOVE),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "base": getattr(sys, "_base_executable", sys.executable),
        "recipe": RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def env_dir() -> Path:
    return CACHE_ROOT / f"vllm-{VLLM_VERSION}-{env_key()}"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_vllm_env() -> Path:
    """The Python of the cached vLLM venv, built when missing (cold: about 5 minutes)."""
    folder = env_dir()
    python = venv_python(folder / "venv")

    def ready() -> bool:
        return (folder / "complete.json").is_file() and python.exists()

    if not ready():
        with images.file_lock(LOCK_PATH, _log):
            if not ready():  # another process may have built it meanwhile
                _build(folder)
    return python


def parse(
    cases: Sequence[tuple[Sequence[str], Mapping[str, str]]], options: Sequence[str] = ()
) -> Answer:
    """Each (command, environment) through vLLM's own `vllm serve` parser, in one process.

    `command` is the compose `command` (what the image's `vllm serve` entrypoint is given),
    `environment` the container's. `options`: dests whose option strings to report."""
    request = {
        "cases": [{"argv": list(argv), "env": dict(env)} for argv, env in cases],
        "options": list(options),
    }
    answer = _invoke(ensure_vllm_env(), request)
    results = []
    for (argv, _), raw in zip(cases, answer["results"], strict=True):
        if raw.get("ok") is None:  # the harness broke, not vLLM's parser refusing
            raise VllmParserError(f"{SCRIPT.name} broke on {list(argv)}:\n{raw.get('error')}")
        results.append(
            Parsed(
                tuple(argv),
                bool(raw["ok"]),
                raw.get("namespace") or {},
                raw.get("all") or {},
                raw.get("auth") or {},
                raw.get("exit_code"),
                raw.get("error") or "",
            )
        )
    return Answer(answer["vllm"], answer["python"], tuple(results), answer.get("options") or {})


# --- building -------------------------------------------------------------------------------


def _build(folder: Path) -> None:
    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    partial, final = folder / "venv.partial", folder / "venv"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    _run([PYTHON, "-m", "venv", str(partial)], "python -m venv")
    python = str(venv_python(partial))
    pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _log(f"pip install {' '.join(REQUIREMENTS)} (about 5 min cold, 5.6 GB)")
    _run([*pip, "install", *REQUIREMENTS], "pip install (is PyPI reachable?)")
    _run([*pip, "uninstall", "-y", *REMOVE], "pip uninstall")
    torch = _run(
        [python, "-c", "import importlib.metadata as m; print(m.version('torch'))"], "torch"
    ).strip()
    if not torch.endswith("+cpu"):
        raise VllmParserError(
            f"pip installed torch {torch}, not the {TORCH_VERSION} CPU build; is /opt/wheels "
            "on pip's find-links?"
        )
    # A venv runs from wherever its folder lies when started as bin/python (its scripts'
    # shebangs keep the old path: none is used).
    partial.rename(final)
    smoke = _smoke(final)
    if smoke:
        shutil.rmtree(final, ignore_errors=True)
        raise VllmParserError(f"the new venv does not parse {list(SMOKE)}:\n{smoke}")
    seconds = round(time.monotonic() - started)
    record = {"requirements": list(REQUIREMENTS), "removed": list(REMOVE), "torch": torch}
    (folder / "complete.json").write_text(json.dumps({**record, "seconds": seconds}))
    _log(f"vLLM {VLLM_VERSION} venv ready in {seconds}s: {final}")


def _invoke(python: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Run the parse script in the vLLM venv; its JSON answer."""
    with tempfile.TemporaryDirectory(prefix="vllm-parse-") as home:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,  # whatever vLLM or Hugging Face write at import stays in here
            "LANG": "C.UTF-8",
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_LOGGING_LEVEL": "WARNING",
        }
        try:
            proc = subprocess.run(
                # -I: no PYTHON* variables, and not the script's folder (tests/fakes) on
                # sys.path, where our own modules could shadow vLLM's imports
                [str(python), "-I", str(SCRIPT)],
                input=json.dumps(request),
                capture_output=True,
                text=True,
                env=env,
                cwd=home,
                timeout=PARSE_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise VllmParserError(f"vLLM's parser took over {PARSE_TIMEOUT}s") from None
    try:
        answer = json.loads(proc.stdout) if proc.returncode == 0 else None
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        tail = "\n".join(proc.stderr.splitlines()[-30:])
        raise VllmParserError(f"{SCRIPT.name} failed (exit {proc.returncode}):\n{tail}")
    return answer


def _smoke(venv: Path) -> str:
    """'' when the venv's vLLM parses SMOKE, else what went wrong."""
    try:
        result = _invoke(venv_python(venv), {"cases": [{"argv": list(SMOKE), "env": {}}]})
    except VllmParserError as exc:
        return str(exc)
    first = result["results"][0]
    return "" if first.get("ok") is True else str(first.get("error"))


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise VllmParserError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


def _log(message: str) -> None:
    print(f"[vllm-parser] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    try:
        print(ensure_vllm_env())
    except VllmParserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
