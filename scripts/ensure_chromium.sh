#!/usr/bin/env bash
# The browser test needs Debian's chromium and chromium-driver (a browser download by a test tool would
# fail: only the Debian, PyPI and npm registries are reachable). Installs them when missing and this user
# may (root, apt-get present); otherwise says what to install. Idempotent; called by `make test`.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: chromium and chromedriver are missing; install Debian's chromium and chromium-driver" \
         "(the browser test fails without them)" >&2
    exit 0
fi
echo "ensure_chromium: installing chromium and chromium-driver with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq chromium chromium-driver >/dev/null
command -v chromium && command -v chromedriver
