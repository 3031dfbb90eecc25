#!/bin/bash
# sandbox-agent: a private vLLM (port 8000) + Open WebUI (port 3000) on a Linode GPU box.
#
# <UDF name="MODEL_ID" label="Hugging Face model (org/name)" default="mistralai/Mistral-7B-Instruct-v0.3" example="Qwen/Qwen2.5-7B-Instruct" />
# <UDF name="HF_TOKEN_PASSWORD" label="Hugging Face token (only for gated models; kept in a 0600 file)" default="" example="hf_..." />
# <UDF name="API_BIND" label="Who can reach the API on port 8000: 127.0.0.1 = this box only (ssh -L), 0.0.0.0 = the internet (key required)" oneOf="127.0.0.1,0.0.0.0" default="127.0.0.1" />
# <UDF name="ADMIN_EMAIL" label="Open WebUI admin email (the password is generated; see the login message)" default="admin@example.com" example="you@example.com" />
# <UDF name="MAX_MODEL_LEN" label="Maximum context length in tokens (auto: what fits the GPU)" default="auto" example="16384" />
# <UDF name="AGENT_VERSION" label="sandbox-agent version" default="0.1.0" />
#
# Every form value reaches the agent only through its environment variable: nothing below puts
# a value into a command line that a shell reads again (no eval, no sed, no expanding heredoc).
# The agent validates all of them before it changes anything. The other settings the agent
# documents (VLLM_IMAGE, GPUS, PROJECT, API_PORT, UI_PORT, UI_BIND, MODELS_DIR, UI_DATA_DIR,
# HF_ENDPOINT, ...) work the same way when set in the environment.
#
# Offline: set SANDBOX_AGENT_SOURCE to a bundle folder (python packaging/build.py bundle DIR):
# a wheelhouse, and images/ (the image tarballs), which are loaded instead of pulled.
set -euo pipefail
umask 022

LOG=/var/log/stackscript.log
if [ -w /dev/ttyS0 ] && { : >/dev/ttyS0; } 2>/dev/null; then
  exec > >(tee -a "$LOG" /dev/ttyS0) 2>&1
else
  exec > >(tee -a "$LOG") 2>&1
fi
echo "sandbox-agent StackScript starting $(date -u +%FT%TZ)"

if [ "$(id -u)" -ne 0 ]; then
  echo "error: the StackScript must run as root" >&2
  exit 1
fi

PREFIX=/opt/sandbox-agent
VENV="$PREFIX/venv"
RELEASES="https://github.com/sandbox-agent/sandbox-agent/releases/download"

if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  command -v cloud-init >/dev/null && cloud-init status --wait >/dev/null || true
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=900 update -q
  apt-get -o DPkg::Lock::Timeout=900 -o Dpkg::Options::=--force-confold install -y -q python3-venv
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

SOURCE="${SANDBOX_AGENT_SOURCE:-}"
if [ -n "$SOURCE" ] && [ -d "$SOURCE" ]; then
  # a wheelhouse: the agent and every dependency, pinned by its constraints; no index at all
  CONSTRAINTS=()
  [ -f "$SOURCE/constraints.txt" ] && CONSTRAINTS=(-c "$SOURCE/constraints.txt")
  "${PIP[@]}" --no-index --find-links "$SOURCE" "${CONSTRAINTS[@]}" sandbox-agent
  [ -f "$SOURCE/images/manifest.json" ] && export SANDBOX_AGENT_BUNDLE="$SOURCE"
elif [ -n "$SOURCE" ]; then
  "${PIP[@]}" -- "$SOURCE"
else
  VERSION="${AGENT_VERSION:-0.1.0}"
  case "$VERSION" in
    '' | *[!0-9.]* | .* | *. | *..*)
      echo "error: AGENT_VERSION must be a version like 0.1.0, not the value given" >&2
      exit 2
      ;;
  esac
  "${PIP[@]}" -c "$RELEASES/v$VERSION/constraints.txt" "sandbox-agent==$VERSION"
fi

ln -sf "$VENV/bin/sandbox-agent" /usr/local/bin/sandbox-agent
exec "$VENV/bin/sandbox-agent" bootstrap
