#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine (root): installs what the tests need,
# starts the Docker engine, checks lint, format and types, builds the test images (cached by
# content), runs pytest.
# Extra arguments go to pytest, e.g. `tests/run.sh tests/unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\n== %s (at %ss)\n' "$*" "$SECONDS"; }

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
# installed again only when what it is installed from changed (a warm run saves the resolve)
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi

log "lint and types: ruff check, ruff format --check, mypy agent"
.venv/bin/ruff check .
.venv/bin/ruff format --check agent tests benchmarks
.venv/bin/mypy

log "test images (cached by content hash)"
# The real Open WebUI from PyPI (~10 minutes the first time on 2 cores, beside the rest) and
# the real vLLM's argument parser in a venv of its own (~5 minutes) build in the background:
# only the browser tier needs the first (it runs after the slices) and only the parser's test
# the second (its fixture waits on the build's lock). The stand-ins build now. Each is cached
# by content, so a warm run passes all three in seconds.
# At the lowest CPU and I/O priority: the slices' timing tests (a restart within a second of
# Docker's `unhealthy`) must not wait behind pip unpacking torch.
builds=$(mktemp -d)
low=(nice -n 19 ionice -c 3)
"${low[@]}" .venv/bin/python tests/fakes/webui_real.py >"$builds/webui.log" 2>&1 & webui=$!
"${low[@]}" .venv/bin/python tests/fakes/vllm_parser.py >"$builds/vllm.log" 2>&1 & vllm=$!
.venv/bin/python tests/fakes/images.py build
# the background builds, waited for: before pytest when tests are named, else before the
# browser tier
wait_builds() {
  local job
  for job in webui vllm; do
    if ! wait "${!job}"; then
      tail -30 "$builds/$job.log"
      echo "the $job build failed (log above)" >&2
      exit 1
    fi
    tail -1 "$builds/$job.log"
  done
}

log "pytest"
# With no tests named, the suite runs as SLICES pytest processes at once (tests/conftest.py
# --slice: whole modules per slice); most of it waits on containers, not on the CPU. The
# browser tier (tests/e2e) runs after them, alone: Chromium drops a page's requests whenever
# an interface comes or goes (net::ERR_NETWORK_CHANGED), and the other slices' stacks add and
# remove Docker bridges all the time.
paths=()
for arg in "$@"; do [[ "$arg" == -* ]] || paths+=("$arg"); done
# Four slices on a warm machine; three beside the background builds of a fresh one (two
# cores cannot carry four slices and pip unpacking torch without starving the timing tests).
busy() { kill -0 "$webui" 2>/dev/null || kill -0 "$vllm" 2>/dev/null; }
for _ in $(seq 40); do busy || break; sleep 0.5; done  # a cached build is done in seconds
default_slices=4
if busy; then default_slices=3; fi
slices=${SANDBOX_TEST_SLICES:-$default_slices}
echo "pytest in $slices slices$(busy && echo ', beside the background builds')"
if [ ${#paths[@]} -gt 0 ] || [ "$slices" -le 1 ]; then
  wait_builds
  set +e
  .venv/bin/python -m pytest "$@"
  rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure, not a pass" >&2
    exit 1
  fi
  exit "$rc"
fi
out=$(mktemp -d)
pids=()
for k in $(seq "$slices"); do
  .venv/bin/python -m pytest "$@" -p no:cacheprovider --ignore=tests/e2e --slice "$k/$slices" \
    >"$out/$k.log" 2>&1 &
  pids+=($!)
done
rc=0
# how many tests a closing line counts as WORD (passed, failed, error, skipped): never fails
count() { awk -v w="$1" '{for (i = 1; i < NF; i++) if ($(i + 1) ~ "^" w) s += $i} END {print s + 0}' <<<"$2"; }
for k in $(seq "$slices"); do
  set +e
  wait "${pids[$((k - 1))]}"
  code=$?
  set -e
  printf '\n== pytest slice %s/%s (exit %s)\n' "$k" "$slices" "$code"
  cat "$out/$k.log"
  [ "$code" -eq 0 ] || [ "$code" -eq 5 ] || rc=1
done
wait_builds
set +e
.venv/bin/python -m pytest "$@" -p no:cacheprovider tests/e2e >"$out/e2e.log" 2>&1
code=$?
set -e
printf '\n== pytest tests/e2e, alone (exit %s)\n' "$code"
cat "$out/e2e.log"
[ "$code" -eq 0 ] || [ "$code" -eq 5 ] || rc=1
passed=0 failed=0 skipped=0
for k in $(seq "$slices") e2e; do
  last=$(grep -E "[0-9]+ (passed|failed|skipped|error)" "$out/$k.log" | tail -n 1 || true)
  passed=$((passed + $(count passed "$last")))
  failed=$((failed + $(count failed "$last") + $(count error "$last")))
  skipped=$((skipped + $(count skipped "$last")))
done
if [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
[ "$failed" -eq 0 ] || rc=1
printf '\n%s passed, %s failed, %s skipped\n' "$passed" "$failed" "$skipped"
echo "tests/run.sh took ${SECONDS}s"
exit "$rc"
