"""Runs INSIDE the cached vLLM environment (see ``tests/fakes/vllm_parser.py``), never in the
suite's own venv: the standard library and vLLM only.

Reads one JSON request on stdin::

    {"cases": [{"argv": ["/snapshot", "--served-model-name=x", ...], "env": {...}}, ...],
     "options": ["api_key", "host", ...]}

and writes one JSON answer on stdout (everything vLLM prints goes to stderr)::

    {"vllm": "0.30.0", "python": "3.11.7",
     "results": [{"ok": true, "namespace": {...}, "auth": {...}} |
                 {"ok": false, "exit_code": 2, "error": "...unrecognized arguments: ..."}],
     "options": {"api_key": ["--api-key"], ...}}

Each ``argv`` is what the image's ``ENTRYPOINT ["vllm", "serve"]`` is given (the compose
``command``). The parser is built as ``vllm.entrypoints.cli.main`` builds it, on the CPU
platform (without a GPU ``DeviceConfig`` cannot infer a device type while the parser is built),
then ``parse_args(["serve", *argv])`` and ``ServeSubcommand().validate(args)``.

``auth``: the API key as the server takes it. vLLM 0.30.0 reads ``VLLM_API_KEY`` at startup,
not as the flag's default: ``init_entrypoints_middleware`` installs its
``AuthenticationMiddleware`` with ``args.api_key or [envs.VLLM_API_KEY]``. That function is run
here on a bare FastAPI app with one ``/v1/models`` route, under the case's environment, and
three requests tell what it guards.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
from typing import Any

# vLLM logs to stdout: the answer gets its own copy of fd 1, and fd 1 becomes stderr.
ANSWER = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr

NAMESPACE_KEYS = (
    "model_tag",
    "model",
    "served_model_name",
    "max_model_len",
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "api_key",
    "host",
    "port",
    "uds",
)


def build_parser() -> tuple[Any, Any]:
    import vllm.platforms
    from vllm.platforms.cpu import CpuPlatform

    vllm.platforms.current_platform = CpuPlatform()
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm", description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    serve = ServeSubcommand()
    serve.subparser_init(subparsers).set_defaults(dispatch_function=serve.cmd)
    return parser, serve


def plain(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def auth(args: Any, key: str | None) -> dict[str, Any]:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from vllm.entrypoints.serve.middleware.register import init_entrypoints_middleware

    app = FastAPI()
    app.get("/v1/models")(lambda: {"data": []})
    init_entrypoints_middleware(args, app, ())
    guarded = any(m.cls.__name__ == "AuthenticationMiddleware" for m in app.user_middleware)
    with TestClient(app) as client:
        codes = {
            "no_key": client.get("/v1/models").status_code,
            "wrong_key": client.get(
                "/v1/models", headers={"Authorization": "Bearer not-the-key"}
            ).status_code,
        }
        if key:
            codes["env_key"] = client.get(
                "/v1/models", headers={"Authorization": f"Bearer {key}"}
            ).status_code
    return {"guarded": guarded, **codes}


def run_case(case: dict[str, Any], base_env: dict[str, str]) -> dict[str, Any]:
    import vllm.envs as envs

    os.environ.clear()
    os.environ.update(base_env)
    os.environ.update(case.get("env") or {})
    envs.disable_envs_cache()  # the server caches env vars only after it has started
    parser, serve = build_parser()
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            args = parser.parse_args(["serve", *case["argv"]])
            serve.validate(args)
    except SystemExit as exc:  # argparse: usage and message on stderr, exit 2
        return {"ok": False, "exit_code": exc.code, "error": captured.getvalue().strip()}
    except Exception as exc:  # FlexibleArgumentParser and validate raise ValueError, TypeError
        return {"ok": False, "exit_code": None, "error": f"{type(exc).__name__}: {exc}"}
    # ServeSubcommand.cmd: "If model is specified in CLI (as positional arg), it takes precedence"
    model = args.model_tag if getattr(args, "model_tag", None) is not None else args.model
    namespace = {k: plain(getattr(args, k, None)) for k in NAMESPACE_KEYS}
    namespace["model"] = model
    return {
        "ok": True,
        "namespace": namespace,
        "all": {k: plain(v) for k, v in sorted(vars(args).items())},
        "auth": auth(args, os.environ.get("VLLM_API_KEY")),
    }


def main() -> int:
    request = json.load(sys.stdin)
    base_env = dict(os.environ)
    import vllm

    results = []
    for case in request.get("cases", []):
        try:
            results.append(run_case(case, base_env))
        except Exception:  # the harness itself broke: say so, never pass as a refusal
            results.append({"ok": None, "error": traceback.format_exc()})
    options: dict[str, list[str]] = {}
    wanted = request.get("options") or []
    if wanted:
        parser, _ = build_parser()
        serve_parser = parser._subparsers._group_actions[0].choices["serve"]
        for action in serve_parser._actions:
            if action.dest in wanted:
                options.setdefault(action.dest, []).extend(action.option_strings)
    answer = {
        "vllm": vllm.__version__,
        "python": ".".join(map(str, sys.version_info[:3])),
        "results": results,
        "options": options,
    }
    json.dump(answer, ANSWER)
    ANSWER.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
