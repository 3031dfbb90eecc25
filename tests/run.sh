#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine (root): installs what the tests need,
# starts the Docker engine, checks lint, format and types, builds the test images (cached by
# content), runs pytest.
# Extra arguments go to pytest, e.g. `tests/run.sh tests/unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\n== %s\n' "$*"; }

need_apt=()
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v ip >/dev/null || need_apt+=(iproute2)  # the private dockerd's bridge
# The proxy's tests: Debian's caddy 2.6.2 and busybox wget go into the caddy stand-in image,
# pebble is a real ACME CA on loopback, openssl makes its listener certificate.
command -v caddy >/dev/null || need_apt+=(caddy)
[ -x /bin/busybox ] || need_apt+=(busybox-static)
command -v pebble >/dev/null || need_apt+=(pebble)
command -v openssl >/dev/null || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! /usr/bin/docker info >/dev/null 2>&1; then
  log "starting dockerd"
  mkdir -p /var/log
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 60); do /usr/bin/docker info >/dev/null 2>&1 && break; sleep 0.5; done
  /usr/bin/docker info >/dev/null || { tail -20 /var/log/dockerd.log; echo "dockerd did not start"; exit 1; }
fi

log "browser (Debian chromium)"
tests/e2e/setup_browser.sh

log "python environment (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

log "lint and types: ruff check, ruff format --check, mypy agent"
.venv/bin/ruff check .
.venv/bin/ruff format --check agent tests benchmarks
.venv/bin/mypy

log "test images (cached by content hash)"
.venv/bin/python tests/fakes/images.py build
# The real Open WebUI from PyPI: ~4.5 minutes the first time on 2 cores, then cached.
.venv/bin/python tests/fakes/webui_real.py
# The real vLLM's argument parser, in a venv of its own: ~5 minutes the first time, then cached.
.venv/bin/python tests/fakes/vllm_parser.py

log "pytest"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
