#!/usr/bin/env bash
# Installs the real browser the e2e tier drives: Debian's chromium (never `playwright install`,
# which downloads a browser build and fails without internet). Idempotent; run as root.
# The Python side is the PyPI package `playwright` (pinned in the test requirements).
set -euo pipefail

if ! dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed"; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium
fi

# Debian's /usr/bin/chromium wrapper can print a harmless shell warning on stderr; keep stdout.
version="$(/usr/bin/chromium --version 2>/dev/null)"
case "$version" in
    Chromium*) echo "setup_browser: $version" ;;
    *) echo "setup_browser: /usr/bin/chromium --version gave '$version'" >&2; exit 1 ;;
esac
