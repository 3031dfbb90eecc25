"""A stand-in for ghcr.io/open-webui/open-webui, stdlib only.

What it models of the real Open WebUI (checked against its auths router):

- listens on $PORT (8080); data in $DATA_DIR (/app/backend/data): users in standin-users.json,
  persistent config in standin-config.json, both written atomically.
- GET /health -> {"status": true}; GET /api/config (public: features.enable_signup, onboarding);
  GET /api/version.
- WEBUI_ADMIN_EMAIL + WEBUI_ADMIN_PASSWORD (+ WEBUI_ADMIN_NAME): when no user exists at start,
  that admin is created and signup is disabled.
- POST /api/v1/auths/signup: the first user becomes admin and signup is then disabled (as the
  real one does); with signup disabled and a user present: 403. Later users get
  DEFAULT_USER_ROLE (pending). POST /api/v1/auths/signin -> token; GET /api/v1/auths/ (Bearer).
- Tokens are signed with WEBUI_SECRET_KEY (random per start when unset: a recreate then logs
  everyone out, like the real one without a kept key).
- ENABLE_SIGNUP, OPENAI_API_BASE_URL(S), OPENAI_API_KEY(S) are persistent config: read from the
  environment at first start only, then from the data dir, unless ENABLE_PERSISTENT_CONFIG=false.
- GET /api/models and POST /api/chat/completions (signed-in user) go to the OpenAI-compatible
  backend with `Authorization: Bearer <key>`. Unlike the real UI (which hides a dead connection
  behind an empty list), a failing backend gives 502 with the backend's error, so tests see it.

Test knobs, same names as the vLLM stand-in: STANDIN_LOAD_SECONDS (do not listen until then),
STANDIN_HEALTH=fail (/health 503), STANDIN_HANG=1 (/health and /api never answer),
STANDIN_CRASH_AFTER=<s>; at runtime POST /_standin/mode {"health", "hang", "crash"}.
A file standin.json in $DATA_DIR ({"load_seconds", "health"}) sets the same knobs from the
data (a restored folder the UI is slow or fails to come up on).
STANDIN_MIGRATE=<revision>: at start, "migrate" $DATA_DIR/webui.db as a new Open WebUI does on
its first start (WAL mode; alembic_version set to <revision>, a table of that revision added),
before anything else: with STANDIN_HEALTH=fail, the image of a new version that migrates and
then fails its gate.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import sqlite3
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("STANDIN_VERSION", "0.6.0+standin")
START = time.monotonic()
DATA_DIR = os.environ.get("DATA_DIR", "/app/backend/data")
USERS_FILE = os.path.join(DATA_DIR, "standin-users.json")
CONFIG_FILE = os.path.join(DATA_DIR, "standin-config.json")

ACCESS_PROHIBITED = (
    "You do not have permission to access this resource. "
    "Please contact your administrator for assistance."
)
EMAIL_TAKEN = (
    "Uh-oh! This email is already registered. "
    "Sign in with your existing account or choose another email to start again."
)
INVALID_CRED = (
    "The email or password provided is incorrect. Please check for typos and try logging in again."
)
INVALID_TOKEN = "Your session has expired or the token is invalid. Please sign in again."
INVALID_EMAIL = (
    "The email format you entered is invalid. Please double-check and make sure you're using"
    " a valid email address (e.g., yourname@domain.com)."
)
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def log(level: str, message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} | {level:<8} | standin - {message}", flush=True)


def fatal(message: str, code: int = 1) -> None:
    log("ERROR", message)
    os._exit(code)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def write_json_atomic(path: str, data: object) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str, default: object) -> object:
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return default


# --- state ----------------------------------------------------------------------------------


def _split_urls(value: str) -> list[str]:
    return [v.strip().rstrip("/") for v in value.split(";") if v.strip()]


class Store:
    """Users and persistent config, in the data dir."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        os.makedirs(DATA_DIR, exist_ok=True)
        self.users: list[dict] = list(read_json(USERS_FILE, {"users": []})["users"])  # type: ignore[index]
        self.config = self._load_config()
        self.secret = os.environ.get("WEBUI_SECRET_KEY") or secrets.token_hex(32)

    def _load_config(self) -> dict:
        from_env = {
            "enable_signup": env_bool("ENABLE_SIGNUP", True),
            "openai_api_base_urls": _split_urls(
                os.environ.get("OPENAI_API_BASE_URLS")
                or os.environ.get("OPENAI_API_BASE_URL")
                or "https://api.openai.com/v1"
            ),
            "openai_api_keys": [
                k.strip()
                for k in (
                    os.environ.get("OPENAI_API_KEYS") or os.environ.get("OPENAI_API_KEY") or ""
                ).split(";")
            ],
            "default_user_role": os.environ.get("DEFAULT_USER_ROLE", "pending"),
        }
        stored = read_json(CONFIG_FILE, None)
        if stored is not None and env_bool("ENABLE_PERSISTENT_CONFIG", True):
            config = dict(from_env)
            config.update(stored)  # type: ignore[arg-type]
            log("INFO", f"persistent config from {CONFIG_FILE} (environment ignored)")
        else:
            config = from_env
        write_json_atomic(CONFIG_FILE, config)
        return config

    def save(self) -> None:
        with self.lock:
            write_json_atomic(USERS_FILE, {"users": self.users})
            write_json_atomic(CONFIG_FILE, self.config)

    def by_email(self, email: str) -> dict | None:
        return next((u for u in self.users if u["email"] == email.lower()), None)

    def by_id(self, ident: str) -> dict | None:
        return next((u for u in self.users if u["id"] == ident), None)

    def add_user(self, name: str, email: str, password: str, role: str) -> dict:
        salt = secrets.token_hex(8)
        user = {
            "id": str(uuid.uuid4()),
            "name": name,
            "email": email.lower(),
            "role": role,
            "password": f"pbkdf2${salt}${_hash(password, salt)}",
            "created_at": int(time.time()),
        }
        self.users.append(user)
        return user

    def token(self, user: dict) -> str:
        payload = (
            base64.urlsafe_b64encode(json.dumps({"id": user["id"]}).encode()).decode().rstrip("=")
        )
        sig = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        return f"{payload}.{sig}"

    def user_for_token(self, token: str) -> dict | None:
        payload, _, sig = token.partition(".")
        good = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not sig or not hmac.compare_digest(sig, good):
            return None
        try:
            ident = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["id"]
        except (ValueError, KeyError):
            return None
        with self.lock:
            return self.by_id(ident)


def _hash(password: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 10_000).hex()


def password_ok(user: dict, password: str) -> bool:
    _, salt, digest = user["password"].split("$")
    return hmac.compare_digest(_hash(password, salt), digest)


def public_user(user: dict, token: str | None = None) -> dict:
    body = {
        "id": user["id"],
        "email": user["email"],
        "name": user["name"],
        "role": user["role"],
        "profile_image_url": "/user.png",
    }
    if token:
        body = {"token": token, "token_type": "Bearer", "expires_at": None, **body}
    return body


class Mode:
    def __init__(self, health: str, hang: str) -> None:
        self.cond = threading.Condition()
        self.health = "fail" if health.lower() == "fail" else "ok"
        self.hang = hang.lower() in {"1", "true", "yes", "on"}

    def snapshot(self) -> dict:
        with self.cond:
            return {"health": self.health, "hang": self.hang}

    def update(self, body: dict) -> None:
        with self.cond:
            if "health" in body:
                self.health = (
                    "fail" if str(body["health"]).lower() in {"fail", "false", "0"} else "ok"
                )
            if "hang" in body:
                self.hang = str(body["hang"]).lower() in {"1", "true", "yes", "on"}
            self.cond.notify_all()

    def wait_while_hung(self) -> None:
        with self.cond:
            while self.hang:
                self.cond.wait(1.0)


# --- HTTP -----------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"

    def version_string(self) -> str:
        return "uvicorn"

    store: Store
    mode: Mode

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

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _detail(self, status: int, detail: str) -> None:
        self._send(status, {"detail": detail})

    def _body(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) if length else b"{}")
        except ValueError:
            self._detail(400, "invalid JSON body")
            return None
        if not isinstance(body, dict):
            self._detail(400, "the body must be a JSON object")
            return None
        return body

    def _user(self) -> dict | None:
        header = self.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        if not token:
            cookie = self.headers.get("Cookie", "")
            match = re.search(r"(?:^|;\s*)token=([^;]+)", cookie)
            token = match.group(1) if match else ""
        if not token:
            self._detail(401, "Not authenticated")
            return None
        user = self.store.user_for_token(token)
        if user is None:
            self._detail(401, INVALID_TOKEN)
            return None
        if user["role"] == "pending":
            self._detail(401, ACCESS_PROHIBITED)
            return None
        return user

    # -- routes

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path == "/_standin/mode":
            self._send(200, self.mode.snapshot())
            return
        if path in ("/health", "/api/health") or path.startswith("/api/"):
            self.mode.wait_while_hung()
        if path in ("/health", "/api/health"):
            if self.mode.snapshot()["health"] == "fail":
                self._send(503, {"status": False})
            else:
                self._send(200, {"status": True})
            return
        if path == "/api/version":
            self._send(200, {"version": VERSION})
            return
        if path == "/api/config":
            with self.store.lock:
                onboarding = not self.store.users
                signup = bool(self.store.config["enable_signup"])
            self._send(
                200,
                {
                    "status": True,
                    "name": "Open WebUI",
                    "version": VERSION,
                    "default_locale": "",
                    "onboarding": onboarding,
                    "features": {"auth": True, "enable_signup": signup, "enable_login_form": True},
                },
            )
            return
        if path.rstrip("/") == "/api/v1/auths":
            user = self._user()
            if user:
                self._send(200, public_user(user))
            return
        if path in ("/api/models", "/api/v1/models"):
            if self._user():
                self._models()
            return
        if path == "/":
            data = b"<!doctype html><title>Open WebUI (stand-in)</title><p>Open WebUI stand-in</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        self._detail(404, "Not Found")

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path == "/_standin/mode":
            body = self._body()
            if body is None:
                return
            self.mode.update(body)
            self._send(200, self.mode.snapshot())
            if body.get("crash") not in (None, False, 0, "0", "false"):
                threading.Timer(0.2, fatal, args=("stand-in crash requested",)).start()
            return
        if path.startswith("/api/"):
            self.mode.wait_while_hung()
        if path == "/api/v1/auths/signup":
            self._signup()
            return
        if path == "/api/v1/auths/signin":
            self._signin()
            return
        if path in ("/api/chat/completions", "/api/v1/chat/completions"):
            if self._user():
                self._chat()
            return
        self._detail(404, "Not Found")

    # -- auth

    def _signup(self) -> None:
        body = self._body()
        if body is None:
            return
        name, email, password = (str(body.get(k) or "") for k in ("name", "email", "password"))
        store = self.store
        with store.lock:
            has_users = bool(store.users)
            if not store.config["enable_signup"] and has_users:
                self._detail(403, ACCESS_PROHIBITED)
                return
            if not EMAIL_RE.match(email.lower()):
                self._detail(400, INVALID_EMAIL)
                return
            if store.by_email(email):
                self._detail(400, EMAIL_TAKEN)
                return
            role = "admin" if not has_users else store.config["default_user_role"]
            user = store.add_user(name or email.split("@")[0], email, password, role)
            if not has_users:
                # Open WebUI disables signup once its first user exists.
                store.config["enable_signup"] = False
            store.save()
        log("INFO", f"signup: {user['email']} as {role}")
        self._send(200, public_user(user, store.token(user)))

    def _signin(self) -> None:
        body = self._body()
        if body is None:
            return
        email, password = str(body.get("email") or ""), str(body.get("password") or "")
        with self.store.lock:
            user = self.store.by_email(email)
        if user is None or not password_ok(user, password):
            self._detail(400, INVALID_CRED)
            return
        self._send(200, public_user(user, self.store.token(user)))

    # -- the OpenAI-compatible backend

    def _backend(self) -> tuple[str, str]:
        config = self.store.config
        url = config["openai_api_base_urls"][0] if config["openai_api_base_urls"] else ""
        keys = config["openai_api_keys"] or [""]
        return url, keys[0]

    def _call_backend(self, method: str, path: str, body: bytes | None = None):
        url, key = self._backend()
        request = urllib.request.Request(url + path, data=body, method=method)
        request.add_header("Content-Type", "application/json")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        return urllib.request.urlopen(
            request, timeout=float(os.environ.get("AIOHTTP_CLIENT_TIMEOUT", "30"))
        )

    def _backend_error(self, exc: Exception) -> None:
        url, _ = self._backend()
        if isinstance(exc, urllib.error.HTTPError):
            text = exc.read().decode(errors="replace")[:500]
            detail = f"backend {url} answered {exc.code}: {text}"
        else:
            detail = f"backend {url} unreachable: {exc}"
        log("ERROR", detail)
        self._send(502, {"detail": detail})

    def _models(self) -> None:
        try:
            with self._call_backend("GET", "/models") as response:
                listing = json.load(response)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self._backend_error(exc)
            return
        url, _ = self._backend()
        data = [
            {
                "id": m.get("id"),
                "name": m.get("id"),
                "object": "model",
                "owned_by": "openai",
                "openai": m,
                "urlIdx": 0,
                "connection_type": "external",
                "source": url,
            }
            for m in listing.get("data", [])
        ]
        self._send(200, {"data": data})

    def _chat(self) -> None:
        body = self._body()
        if body is None:
            return
        for key in (
            "chat_id",
            "id",
            "session_id",
            "features",
            "variables",
            "model_item",
            "background_tasks",
            "params",
            "tool_ids",
            "files",
        ):
            body.pop(key, None)
        try:
            response = self._call_backend("POST", "/chat/completions", json.dumps(body).encode())
        except (urllib.error.URLError, OSError) as exc:
            self._backend_error(exc)
            return
        with response:
            if not body.get("stream"):
                data = response.read()
                self.send_response(response.status)
                self.send_header(
                    "Content-Type", response.headers.get("Content-Type", "application/json")
                )
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_response(response.status)
            self.send_header(
                "Content-Type", response.headers.get("Content-Type", "text/event-stream")
            )
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while True:
                line = response.readline()
                if not line:
                    break
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def migrate(revision: str) -> None:
    os.makedirs(DATA_DIR, exist_ok=True)
    db = sqlite3.connect(os.path.join(DATA_DIR, "webui.db"))
    try:
        db.execute("PRAGMA journal_mode=wal")
        db.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL)")
        db.execute("DELETE FROM alembic_version")
        db.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
        table = "standin_" + re.sub(r"[^A-Za-z0-9_]", "_", revision)
        db.execute(f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, note TEXT)")
        db.execute(f"INSERT INTO {table} (note) VALUES ('migrated')")
        db.commit()
    finally:
        db.close()
    log("INFO", f"migrated {DATA_DIR}/webui.db to {revision}")


def main() -> None:
    def stop(signum: int, _frame: object) -> None:
        log("INFO", f"shutting down on signal {signum}")
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    crash_after = os.environ.get("STANDIN_CRASH_AFTER", "").strip()
    if crash_after:
        timer = threading.Timer(float(crash_after), fatal, args=("stand-in crash_after",))
        timer.daemon = True
        timer.start()
    if os.environ.get("STANDIN_MIGRATE"):
        migrate(os.environ["STANDIN_MIGRATE"])
    knobs = read_json(os.path.join(DATA_DIR, "standin.json"), {})  # the data's own knobs
    knobs = knobs if isinstance(knobs, dict) else {}
    load_seconds = float(knobs.get("load_seconds") or os.environ.get("STANDIN_LOAD_SECONDS") or 0)
    log("INFO", f"Open WebUI stand-in {VERSION}, data in {DATA_DIR}")
    if load_seconds > 0:
        time.sleep(load_seconds)

    store = Store()
    admin_email = os.environ.get("WEBUI_ADMIN_EMAIL", "")
    admin_password = os.environ.get("WEBUI_ADMIN_PASSWORD", "")
    with store.lock:
        if admin_email and admin_password and not store.users:
            store.add_user(
                os.environ.get("WEBUI_ADMIN_NAME") or "Admin", admin_email, admin_password, "admin"
            )
            store.config["enable_signup"] = False
            store.save()
            log(
                "INFO",
                f"admin {admin_email.lower()} created from WEBUI_ADMIN_EMAIL; signup disabled",
            )
        elif admin_email and store.users:
            log("INFO", "users exist: WEBUI_ADMIN_EMAIL ignored")
        store.save()

    Handler.store = store
    health = str(knobs.get("health") or os.environ.get("STANDIN_HEALTH", "ok"))
    Handler.mode = Mode(health, os.environ.get("STANDIN_HANG", ""))
    port = int(os.environ.get("PORT", "8080"))
    host = os.environ.get("HOST", "0.0.0.0")
    server = Server((host, port), Handler)
    print(f"INFO:     Uvicorn running on http://{host}:{port} (Press CTRL+C to quit)", flush=True)
    print("INFO:     Application startup complete.", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
