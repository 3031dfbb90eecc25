"""A stand-in for `vllm serve` (the ENTRYPOINT of vllm/vllm-openai), stdlib only.

It takes vLLM's command line, checks the model the way vLLM does offline, and answers the
OpenAI-compatible API with deterministic text. Tests steer it with the same knobs three ways:

- environment: STANDIN_LOAD_SECONDS, STANDIN_HEALTH=fail, STANDIN_CRASH_AFTER=<s>,
  STANDIN_HANG=1|engine
- a file standin.json in the model directory: {"load_seconds", "health", "crash_after", "hang",
  "no_auth", "print_key"}
  (it wins over the environment, so a test can make one model "slow" or "broken")
- at runtime: POST /_standin/mode {"health": "ok"|"fail", "hang": false|true|"engine",
  "crash": true|<exit code>, "token_seconds": <s>, "allocate_mb": <n>}; GET shows the state.

token_seconds (also STANDIN_TOKEN_SECONDS / the file) makes every generated token take that
long: slow completions while tokens flow, a busy engine. allocate_mb holds that much memory
(a container with a small memory limit is OOM-killed). /metrics reports the requests in the
engine (vllm:num_requests_running, hung ones included) and vllm:generation_tokens_total.

hang=1 stops answering /health and /v1/*; hang=engine stops only the completions while /health
and /v1/models stay 200 (a hung engine behind a live API server, vLLM #39863). /version, /metrics and /_standin answer.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("STANDIN_VERSION", "0.14.0+standin")
START = time.monotonic()


def log(level: str, where: str, message: str) -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"{level} {stamp} [{where}] {message}", flush=True)


def fatal(message: str, code: int = 1) -> None:
    log("ERROR", "api_server.py", message)
    sys.stdout.flush()
    os._exit(code)


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="vllm serve", add_help=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--trust-remote-code", action="store_true")
    # vLLM's model is the first positional (`vllm serve MODEL --flags`). Taking it before
    # argparse sees the rest keeps the value of an unknown `--flag value` from being read as it.
    positional = None
    if argv and not argv[0].startswith("-"):
        positional, argv = argv[0], argv[1:]
    args, unknown = parser.parse_known_args(argv)
    args.model = positional or args.model or "facebook/opt-125m"
    if args.api_key is None:
        args.api_key = os.environ.get("VLLM_API_KEY") or None
    args.served = args.served_model_name or [args.model]
    return args, unknown


# --- model resolution (offline, like vLLM with HF_HUB_OFFLINE=1 or a local path) -------------


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or os.path.isdir(model)


def _hf_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "huggingface"
    )
    return os.path.join(home, "hub")


def invalid_model(model: str) -> None:
    fatal(
        f"ValueError: Invalid repository ID or local directory specified: '{model}'.\n"
        "Please verify the following requirements:\n"
        "1. Provide a valid Hugging Face repository ID.\n"
        "2. Specify a local directory that contains a recognized configuration file.\n"
        "   - For Hugging Face models: ensure the presence of a 'config.json'."
    )


def resolve_model_dir(model: str) -> str | None:
    """The directory holding the model's files, or None when it cannot be checked here."""
    if _looks_like_path(model):
        path = os.path.expanduser(model)
        # isfile follows symlinks: a snapshot mounted without its blobs/ fails here, as in vLLM.
        if not os.path.isfile(os.path.join(path, "config.json")):
            invalid_model(model)
        return path
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    repo = os.path.join(_hf_cache_dir(), "models--" + model.replace("/", "--"))
    ref = os.path.join(repo, "refs", "main")
    if os.path.isfile(ref):
        with open(ref) as handle:
            snapshot = os.path.join(repo, "snapshots", handle.read().strip())
        if os.path.isfile(os.path.join(snapshot, "config.json")):
            return snapshot
    if offline:
        log("WARNING", "hub.py", f"HF_HUB_OFFLINE=1 and {model} is not in {_hf_cache_dir()}")
        invalid_model(model)
    log("WARNING", "hub.py", f"{model} is not cached; the stand-in cannot download, serving anyway")
    return None


# --- behaviour knobs ------------------------------------------------------------------------


UNGUARDED = ("/invocations", "/tokenize", "/detokenize", "/pause", "/resume", "/collective_rpc")


class Mode:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.health = "ok"
        self.hang: str | bool = False
        self.requests = 0
        self.running = 0
        self.tokens = 0
        self.token_seconds = 0.0
        self.ballast: list[bytearray] = []

    def snapshot(self) -> dict:
        with self.cond:
            return {
                "health": self.health,
                "hang": self.hang,
                "requests": self.requests,
                "running": self.running,
                "tokens": self.tokens,
                "token_seconds": self.token_seconds,
            }

    def update(self, body: dict) -> None:
        with self.cond:
            if "health" in body:
                self.health = (
                    "fail" if str(body["health"]).lower() in {"fail", "false", "0"} else "ok"
                )
            if "hang" in body:
                self.hang = _hang_value(body["hang"])
            if "token_seconds" in body:
                self.token_seconds = float(body["token_seconds"] or 0)
            if body.get("allocate_mb"):
                block = bytearray(int(body["allocate_mb"]) * 1024 * 1024)
                for i in range(0, len(block), 4096):  # touch every page: real memory
                    block[i] = 1
                self.ballast.append(block)
            self.cond.notify_all()

    def wait_while_hung(self, path: str) -> None:
        """Block the request for as long as the hang covers this path (forever, unless flipped)."""
        with self.cond:
            while self._hung(path):
                self.cond.wait(1.0)

    def _hung(self, path: str) -> bool:
        if self.hang == "engine":  # the API server answers /v1/models without the engine
            return path.startswith("/v1/") and path != "/v1/models"
        return bool(self.hang)


def _hang_value(value: object) -> str | bool:
    text = str(value).strip().lower()
    if text == "engine":
        return "engine"
    return text in {"1", "true", "yes", "on", "all"}


def load_knobs(model_dir: str | None) -> dict:
    knobs = {
        "load_seconds": os.environ.get("STANDIN_LOAD_SECONDS", "0"),
        "health": os.environ.get("STANDIN_HEALTH", "ok"),
        "crash_after": os.environ.get("STANDIN_CRASH_AFTER", ""),
        "hang": os.environ.get("STANDIN_HANG", ""),
        # a vLLM whose auth was switched off (`--api-key=`), and one that logs its key
        "no_auth": os.environ.get("STANDIN_NO_AUTH", ""),
        "print_key": os.environ.get("STANDIN_PRINT_KEY", ""),
        "token_seconds": os.environ.get("STANDIN_TOKEN_SECONDS", "0"),
    }
    if model_dir:
        path = os.path.join(model_dir, "standin.json")
        if os.path.isfile(path):
            with open(path) as handle:
                from_file = json.load(handle)
            knobs.update({k: v for k, v in from_file.items() if k in knobs})
            log("INFO", "standin", f"behaviour from {path}: {from_file}")
    return knobs


# --- HTTP -----------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


def _last_user_text(messages: list) -> str:
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content or "")
    return ""


def reply_text(served: str, prompt: str, kind: str = "reply") -> str:
    echo = " ".join(prompt.split())
    if len(echo) > 200:
        echo = echo[:200] + "..."
    return f"stand-in {kind} from {served}: {echo}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"

    def version_string(self) -> str:
        return "uvicorn"

    args: argparse.Namespace
    mode: Mode

    # uvicorn's access log shape
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        try:
            phrase = HTTPStatus(int(code)).phrase
        except ValueError:
            phrase = ""
        host, port = self.client_address[:2]
        line = f"{self.command} {self.path} {self.request_version}"
        print(f'INFO:     {host}:{port} - "{line}" {code} {phrase}', flush=True)

    # -- plumbing

    def _send_json(self, status: int, body: object, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_text(self, status: int, text: str, content_type: str = "text/plain") -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str) -> None:
        self._send_json(
            status,
            {"error": {"message": message, "type": kind, "param": None, "code": status}},
        )

    def _read_json(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            self._error(400, f"invalid JSON body: {exc}", "BadRequestError")
            return None
        if not isinstance(body, dict):
            self._error(400, "the body must be a JSON object", "BadRequestError")
            return None
        return body

    def _authorized(self) -> bool:
        key = self.args.api_key
        if not key:
            return True
        if self.headers.get("Authorization", "") == f"Bearer {key}":
            return True
        # vLLM's AuthenticationMiddleware answers exactly this
        self._send_json(401, {"error": "Unauthorized"})
        return False

    def _model_or_404(self, body: dict) -> str | None:
        requested = body.get("model")
        if requested is None:
            return self.args.served[0]
        if requested in self.args.served:
            return requested
        self._error(404, f"The model `{requested}` does not exist.", "NotFoundError")
        return None

    # -- routes

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/ping"):
            self.mode.wait_while_hung(path)
            if self.mode.snapshot()["health"] == "fail":
                self._send_json(503, {"error": "engine is not healthy (stand-in)"})
            else:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
            return
        if path == "/version":
            self._send_json(200, {"version": VERSION})
            return
        if path == "/metrics":
            self._send_text(200, self._metrics(), "text/plain; version=0.0.4; charset=utf-8")
            return
        if path == "/_standin/mode":
            self._send_json(200, self.mode.snapshot())
            return
        if path.startswith("/v1/"):
            if not self._authorized():
                return
            self.mode.wait_while_hung(path)
            if path == "/v1/models":
                self._send_json(200, self._models())
                return
        self._send_json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path == "/_standin/mode":
            body = self._read_json()
            if body is None:
                return
            self.mode.update(body)
            self._send_json(200, self.mode.snapshot())
            if body.get("crash") not in (None, False, 0, "0", "false"):
                code = (
                    body["crash"]
                    if isinstance(body["crash"], int) and body["crash"] is not True
                    else 1
                )
                threading.Timer(
                    0.2, fatal, args=("EngineCore died unexpectedly (stand-in crash)", code)
                ).start()
            return
        if path in UNGUARDED:
            # As the real vLLM: its --api-key guards only /v1 (and /v2, /inference), so these
            # answer anyone (vllm#58144); /invocations even runs a completion.
            body = self._read_json()
            if body is None:
                return
            if path == "/invocations":
                self._complete(body, chat=True)
            else:
                self._send_json(200, {"path": path, "guarded": False})
            return
        if path.startswith("/v1/"):
            if not self._authorized():
                return
            body = self._read_json()
            if body is None:
                return
            with self.mode.cond:
                self.mode.running += 1
            try:
                self.mode.wait_while_hung(path)
                if path == "/v1/chat/completions":
                    self._complete(body, chat=True)
                    return
                if path == "/v1/completions":
                    self._complete(body, chat=False)
                    return
            finally:
                with self.mode.cond:
                    self.mode.running -= 1
        self._send_json(404, {"detail": "Not Found"})

    # -- API bodies

    def _models(self) -> dict:
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "vllm",
                    "root": self.args.model,
                    "parent": None,
                    "max_model_len": self.args.max_model_len or 4096,
                    "permission": [],
                }
                for name in self.args.served
            ],
        }

    def _metrics(self) -> str:
        name = self.args.served[0]
        snap = self.mode.snapshot()
        served, running, tokens = snap["requests"], snap["running"], snap["tokens"]
        return (
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="{name}"}} {float(running)}\n'
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{model_name="{name}"}} 0.0\n'
            "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.\n"
            "# TYPE vllm:gpu_cache_usage_perc gauge\n"
            f'vllm:gpu_cache_usage_perc{{model_name="{name}"}} 0.0\n'
            "# HELP vllm:request_success_total Count of successfully processed requests.\n"
            "# TYPE vllm:request_success_total counter\n"
            f'vllm:request_success_total{{finished_reason="stop",model_name="{name}"}} '
            f"{float(served)}\n"
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
            "# TYPE vllm:generation_tokens_total counter\n"
            f'vllm:generation_tokens_total{{model_name="{name}"}} {float(tokens)}\n'
        )

    def _complete(self, body: dict, chat: bool) -> None:
        model = self._model_or_404(body)
        if model is None:
            return
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                self._error(400, "messages must be a non-empty list", "BadRequestError")
                return
            prompt = _last_user_text(messages)
            text = reply_text(model, prompt, "reply")
        else:
            prompt = body.get("prompt", "")
            if isinstance(prompt, list):
                prompt = " ".join(str(p) for p in prompt)
            text = reply_text(model, str(prompt), "completion")
        # One "token" per word, so max_tokens truncates deterministically.
        words = _words(text)
        finish = "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int) and 0 < max_tokens < len(words):
            words, finish = words[:max_tokens], "length"
        if not body.get("stream"):  # a stream makes its tokens as it sends them
            self._generate(len(words))
        usage = {
            "prompt_tokens": len(_words(prompt)),
            "completion_tokens": len(words),
            "total_tokens": len(_words(prompt)) + len(words),
        }
        with self.mode.cond:
            self.mode.requests += 1
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        if body.get("stream"):
            self._stream(ident, created, model, words, finish, usage, chat, body)
            return
        content = " ".join(words)
        if chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": content, "tool_calls": []},
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
            }
            obj = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": content,
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
            }
            obj = "text_completion"
        self._send_json(
            200,
            {
                "id": ident,
                "object": obj,
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": usage,
            },
        )

    def _generate(self, count: int) -> None:
        """Count the tokens as the engine makes them, token_seconds apart."""
        for _ in range(count):
            delay = self.mode.snapshot()["token_seconds"]
            if delay:
                time.sleep(delay)
            with self.mode.cond:
                self.mode.tokens += 1

    def _stream(self, ident, created, model, words, finish, usage, chat, body) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choice: dict | None, extra: dict | None = None) -> None:
            event = {
                "id": ident,
                "object": obj,
                "created": created,
                "model": model,
                "choices": [choice] if choice else [],
            }
            event.update(extra or {})
            self._write_chunk(f"data: {json.dumps(event)}\n\n")

        if chat:
            chunk(
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            )
        for i, word in enumerate(words):
            self._generate(1)
            piece = word if i == 0 else " " + word
            if chat:
                chunk(
                    {
                        "index": 0,
                        "delta": {"content": piece},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                )
            else:
                chunk({"index": 0, "text": piece, "logprobs": None, "finish_reason": None})
        if chat:
            chunk({"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish})
        else:
            chunk({"index": 0, "text": "", "logprobs": None, "finish_reason": finish})
        options = body.get("stream_options") or {}
        if isinstance(options, dict) and options.get("include_usage"):
            chunk(None, {"usage": usage})
        self._write_chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _write_chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv: list[str]) -> None:
    # PID 1 in a container ignores SIGTERM without a handler; `docker stop` must be quick.
    def stop(signum: int, _frame: object) -> None:
        log("INFO", "launcher.py", f"Shutting down on signal {signum}")
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    args, unknown = parse_args(argv)
    # a new id on every start: a test marks *this* run unhealthy by copying it (a restart
    # keeps the container's files, so a plain marker would outlive the restart)
    with open("/tmp/standin-boot", "w") as handle:
        handle.write(uuid.uuid4().hex)
    log("INFO", "api_server.py", f"vLLM API server version {VERSION}")
    log(
        "INFO",
        "api_server.py",
        f"args: model={args.model!r} served_model_name={args.served} "
        f"port={args.port} max_model_len={args.max_model_len} "
        f"tensor_parallel_size={args.tensor_parallel_size} "
        f"gpu_memory_utilization={args.gpu_memory_utilization} dtype={args.dtype} "
        f"api_key={'set' if args.api_key else 'unset'}",
    )
    if unknown:
        log("INFO", "standin", f"ignoring arguments the stand-in does not model: {unknown}")

    model_dir = resolve_model_dir(args.model)
    knobs = load_knobs(model_dir)
    if _hang_value(knobs["print_key"]) is True and args.api_key:
        # in two writes, so the key reaches the log reader split across chunks
        print(f"INFO [api_server.py] api key {args.api_key[:9]}", end="", flush=True)
        time.sleep(0.3)
        print(f"{args.api_key[9:]} loaded", flush=True)
    if _hang_value(knobs["no_auth"]) is True:
        args.api_key = None

    mode = Mode()
    mode.update(
        {"health": knobs["health"], "hang": knobs["hang"], "token_seconds": knobs["token_seconds"]}
    )

    crash_after = str(knobs["crash_after"]).strip()
    if crash_after:
        delay = max(0.0, float(crash_after) - (time.monotonic() - START))
        timer = threading.Timer(
            delay, fatal, args=("EngineCore died unexpectedly (stand-in crash_after)",)
        )
        timer.daemon = True
        timer.start()

    load_seconds = float(knobs["load_seconds"] or 0)
    log("INFO", "gpu_model_runner.py", f"Starting to load model {args.model}...")
    if load_seconds > 0:
        # Real vLLM does not listen before the weights are loaded.
        time.sleep(load_seconds)
    log("INFO", "gpu_model_runner.py", f"Model loading took {load_seconds:.2f} seconds (stand-in)")

    Handler.args = args
    Handler.mode = mode
    host = args.host or "0.0.0.0"
    server = Server((host, args.port), Handler)
    log("INFO", "api_server.py", f"Starting vLLM API server 0 on http://{host}:{args.port}")
    print(f"INFO:     Started server process [{os.getpid()}]", flush=True)
    print("INFO:     Waiting for application startup.", flush=True)
    print("INFO:     Application startup complete.", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
