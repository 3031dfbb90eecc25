#!/bin/bash
# sandbox-agent: a private vLLM (port 8000) + Open WebUI (port 3000) on a Linode GPU box.
#
# <UDF name="MODEL_ID" label="Hugging Face model (org/name)" default="mistralai/Mistral-7B-Instruct-v0.3" example="Qwen/Qwen2.5-7B-Instruct" />
# <UDF name="HF_TOKEN_PASSWORD" label="Hugging Face token (only for gated models; kept in a 0600 file)" default="" example="hf_..." />
# <UDF name="API_BIND" label="Who can reach the API: 127.0.0.1 = this box only (ssh -L); 0.0.0.0 = the internet, over HTTPS on port 8443 with the key" oneOf="127.0.0.1,0.0.0.0" default="127.0.0.1" />
# <UDF name="DOMAIN" label="Domain name for HTTPS (empty: this box's own Linode name, A-B-C-D.ip.linodeusercontent.com)" default="" example="chat.example.com" />
# <UDF name="ADMIN_EMAIL" label="Open WebUI admin email (the password is generated; see the login message)" default="admin@example.com" example="you@example.com" />
# <UDF name="MAX_MODEL_LEN" label="Maximum context length in tokens (auto: what fits the GPU)" default="auto" example="16384" />
#
# Every form value reaches the agent only through its environment variable: nothing below puts
# a value into a command line that a shell reads again (no eval, no sed, no expanding heredoc).
# The agent validates all of them before it changes anything. The other settings the agent
# documents (VLLM_IMAGE, GPUS, PROJECT, API_PORT, UI_PORT, UI_BIND, MODELS_DIR, UI_DATA_DIR,
# HF_ENDPOINT, ...) work the same way when set in the environment.
#
# This file is the template of a release: `python packaging/build.py release OUT --base-url URL`
# writes OUT/stackscript.sh with the four values below stamped in, and the StackScript to deploy
# is that one. It downloads the agent's wheel and requirements.txt from URL, checks both against
# the sha256 stamped here before anything is installed, and pip installs with --require-hashes:
# every dependency's wheel is pinned by its sha256 too, so it may come from whatever index pip is
# configured with (PIP_INDEX_URL, PIP_FIND_LINKS, pip.conf) and still be exactly the release's.
#
# Offline: set SANDBOX_AGENT_SOURCE to a bundle folder (python packaging/build.py bundle DIR):
# a wheelhouse with its hash-locked requirements.txt, and images/ (the image tarballs), which are
# loaded instead of pulled. SANDBOX_AGENT_SOURCE naming a wheel or a checkout installs that as is.
set -euo pipefail
umask 022

# The release (stamped by packaging/build.py release; empty in the template).
RELEASE_URL=''
AGENT_WHEEL=''
AGENT_SHA256=''
REQUIREMENTS_SHA256=''

LOG=/var/log/stackscript.log
if [ -w /dev/ttyS0 ] && { : >/dev/ttyS0; } 2>/dev/null; then
  exec > >(tee -a "$LOG" /dev/ttyS0) 2>&1
else
  exec > >(tee -a "$LOG") 2>&1
fi
echo "sandbox-agent StackScript starting $(date -u +%FT%TZ)"

SOURCE="${SANDBOX_AGENT_SOURCE:-}"
if [ -z "$SOURCE" ] && [ -z "$RELEASE_URL" ]; then
  echo "error: this stackscript.sh is the unstamped template: it names no release to install." >&2
  echo "  Stamp it: python packaging/build.py release OUT --base-url URL, publish OUT/ at URL" >&2
  echo "  and deploy OUT/stackscript.sh; or set SANDBOX_AGENT_SOURCE to a bundle folder" >&2
  echo "  (python packaging/build.py bundle DIR)." >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: the StackScript must run as root" >&2
  exit 1
fi

# The HTTPS proxy's name: the form's DOMAIN, unless HTTPS_DOMAIN is set already.
if [ -n "${DOMAIN:-}" ] && [ -z "${HTTPS_DOMAIN:-}" ]; then
  export HTTPS_DOMAIN="$DOMAIN"
fi

PREFIX=/opt/sandbox-agent
VENV="$PREFIX/venv"

# Downloads URL to FILE only when its sha256 is the one given (python3 is on every supported OS,
# curl is not); the values are arguments, never code.
FETCH='
import hashlib, http.client, re, sys, time, urllib.error, urllib.request
url, dest, want = sys.argv[1:]
name = url.rsplit("/", 1)[-1]
if not re.fullmatch("[0-9a-f]{64}", want):
    sys.exit(f"error: the sha256 stamped for {name} is not one; stamp the script again")
for attempt in range(1, 6):
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
        break
    except (OSError, ValueError, http.client.HTTPException) as exc:
        final = isinstance(exc, ValueError) or (
            isinstance(exc, urllib.error.HTTPError) and exc.code < 500
        )
        if final or attempt == 5:
            sys.exit(f"error: cannot download {url}: {exc}")
        time.sleep(3 * attempt)
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit(
        f"error: {name} is not the file of this release: sha256 expected {want}, got {got};"
        " nothing was installed"
    )
with open(dest, "wb") as out:
    out.write(data)
print(f"{name}: sha256 {got} as stamped")
'
RELEASE=""
if [ -z "$SOURCE" ]; then
  # Both files checked before python3-venv, the venv or pip is touched.
  RELEASE="$(mktemp -d /tmp/sandbox-agent-release.XXXXXX)"
  python3 -c "$FETCH" "$RELEASE_URL/requirements.txt" "$RELEASE/requirements.txt" "$REQUIREMENTS_SHA256"
  python3 -c "$FETCH" "$RELEASE_URL/$AGENT_WHEEL" "$RELEASE/$AGENT_WHEEL" "$AGENT_SHA256"
elif [ -d "$SOURCE" ] && [ ! -f "$SOURCE/requirements.txt" ]; then
  echo "error: SANDBOX_AGENT_SOURCE=$SOURCE has no requirements.txt (the wheels' sha256):" \
    "build the bundle again with python packaging/build.py bundle DIR" >&2
  exit 2
fi

if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  command -v cloud-init >/dev/null && cloud-init status --wait >/dev/null || true
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=900 update -q
  apt-get -o DPkg::Lock::Timeout=900 -o Dpkg::Options::=--force-confold install -y -q python3-venv
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# Every wheel, the agent's own among them, by its sha256 in requirements.txt (pip checks them all
# before it installs any); requirements.txt names the agent's wheel relative to its folder.
LOCKED=(--require-hashes --only-binary=:all: -r requirements.txt)

if [ -n "$RELEASE" ]; then
  if ! (cd "$RELEASE" && "${PIP[@]}" "${LOCKED[@]}"); then
    echo "error: pip refused the release's install (see above); the agent was not installed" >&2
    exit 1
  fi
  rm -rf "$RELEASE"
elif [ -d "$SOURCE" ]; then
  # a bundle: the agent and every dependency from the folder, no index at all
  if ! (cd "$SOURCE" && "${PIP[@]}" --no-index --find-links . "${LOCKED[@]}"); then
    echo "error: pip refused the bundle's install (see above); the agent was not installed" >&2
    exit 1
  fi
  [ -f "$SOURCE/images/manifest.json" ] && export SANDBOX_AGENT_BUNDLE="$SOURCE"
else
  "${PIP[@]}" -- "$SOURCE"
fi

ln -sf "$VENV/bin/sandbox-agent" /usr/local/bin/sandbox-agent
exec "$VENV/bin/sandbox-agent" bootstrap
