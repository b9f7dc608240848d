#!/usr/bin/env bash
# Makes sure the headless browser the run viewer's test (tests/e2e/ui.test.mjs) drives is
# present: Debian's `chromium` package. Its driver, playwright-core, comes with npm ci (it
# downloads no browser of its own). Installs only when chromium is missing, so a warm machine
# passes through at once; prints what it did either way.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "[chromium] present: $(chromium --version 2>/dev/null || echo "$(command -v chromium)")"
    exit 0
fi

sudo_cmd=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo)
    else
        echo "[chromium] chromium is missing and installing it needs root (or sudo)" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "[chromium] chromium is missing and there is no apt-get to install it with" >&2
    exit 1
fi

echo "[chromium] chromium missing: running apt-get update && apt-get install -y chromium"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq chromium >/dev/null
echo "[chromium] installed: $(chromium --version)"
